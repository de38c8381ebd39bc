"""The `meterwatch` command line: outputs, and one clear line with exit code 2 for user errors."""

import csv

import pytest

from stream_app.cli import main
from stream_app.core.errors import InputError


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_simulate_then_score_writes_one_row_per_reading(tmp_path, capsys, tiny_bundle):
    sim = tmp_path / "sim.csv"
    code, out, _ = run(capsys, "simulate", "--profile", "food", "--meters", "4", "--days", "8",
                       "--out", str(sim))
    assert code == 0 and "wrote 4 simulated food meters" in out
    scores = tmp_path / "scores.csv"
    code, out, err = run(capsys, "score", "--model", str(tiny_bundle.path), "--input", str(sim),
                         "--output", str(scores))
    assert code == 0, err
    with open(sim) as f:
        n_in = sum(1 for _ in f) - 1
    rows = list(csv.DictReader(open(scores)))
    assert len(rows) == n_in
    assert {"timestamp", "value", "score", "is_anomaly", "window_size", "reason"} <= set(rows[0])
    scored = [r for r in rows if r["score"]]
    assert scored and all(r["window_size"] in ("24", "16") for r in scored)
    assert all(r["reason"] for r in rows if r["is_anomaly"] == "1")


@pytest.mark.parametrize("content, expected", [
    ("", "empty"),
    ("timestamp,value\n2025-01-01T00:00:00Z,abc\n", "row 2"),
    ("foo,bar\n2025-01-01T00:00:00Z,1\n", "column"),
    ("timestamp,value\n" + "".join(f"2025-01-01T{k // 4:02d}:{k % 4 * 15:02d}:00Z,1\n"
                                     for k in range(10)), "too short"),
    ("timestamp,value\nyesterday,1\n", "row 2"),
])
def test_bad_csv_is_one_line_and_exit_2(tmp_path, capsys, tiny_bundle, content, expected):
    bad = tmp_path / "bad.csv"
    bad.write_text(content)
    code, _, err = run(capsys, "score", "--model", str(tiny_bundle.path), "--input", str(bad),
                       "--output", str(tmp_path / "o.csv"))
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and expected in err.lower(), err
    assert "Traceback" not in err


def test_missing_input_file_and_bad_bundle(tmp_path, capsys, tiny_bundle):
    code, _, err = run(capsys, "score", "--model", str(tiny_bundle.path),
                       "--input", str(tmp_path / "nope.csv"), "--output", str(tmp_path / "o.csv"))
    assert code == 2 and "nope.csv" in err
    code, _, err = run(capsys, "score", "--model", str(tmp_path), "--input", "x.csv",
                       "--output", str(tmp_path / "o.csv"))
    assert code == 2 and "manifest.json is missing" in err


def test_train_refuses_a_series_too_short(tmp_path, capsys):
    pytest.importorskip("torch")
    short = tmp_path / "short.csv"
    rows = "\n".join(f"2025-01-01T{h:02d}:{m:02d}:00Z,{h + m / 60:.2f}"
                     for h in range(10) for m in (0, 15, 30, 45))
    short.write_text("timestamp,value\n" + rows + "\n")
    code, _, err = run(capsys, "train", "--input", str(short), "--out", str(tmp_path / "b"),
                       "--windows", "16")
    assert code == 2 and "too few" in err, err


def test_unknown_profile_is_a_clear_error(tmp_path, capsys):
    code, _, err = run(capsys, "simulate", "--profile", "textile", "--out", str(tmp_path / "x"))
    assert code == 2 and "textile" in err


def test_train_and_score_simulated_meters(tmp_path, capsys):
    """The whole offline path on CPU: simulate, train (small), score; flags land on anomalies."""
    pytest.importorskip("torch")
    import time

    import numpy as np

    sim, bundle, scores = tmp_path / "sim.csv", tmp_path / "bundle", tmp_path / "scores.csv"
    started = time.perf_counter()
    assert run(capsys, "simulate", "--profile", "metal", "--meters", "4", "--days", "28",
               "--anomalies-per-meter", "3", "--seed", "5", "--out", str(sim))[0] == 0
    code, out, err = run(capsys, "train", "--input", str(sim), "--out", str(bundle),
                         "--profile", "metal", "--windows", "24,16", "--epochs", "4",
                         "--max-train-windows", "3000", "--meter-col", "meter_id",
                         "--category-col", "category")
    assert code == 0, err
    code, out, err = run(capsys, "score", "--model", str(bundle), "--input", str(sim),
                         "--output", str(scores))
    assert code == 0, err
    elapsed = time.perf_counter() - started
    # score writes each meter's rows in time order; join on (meter, timestamp)
    flag_of = {(r["meter_id"], r["timestamp"]): int(r["is_anomaly"])
               for r in csv.DictReader(open(scores))}
    truth = list(csv.DictReader(open(sim)))
    assert len(flag_of) == len(truth)
    labels = np.array([int(r["label"]) for r in truth])
    flags = np.array([flag_of[(r["meter_id"], r["timestamp"])] for r in truth])
    inside, outside = flags[labels == 1].mean(), flags[labels == 0].mean()
    print(f"\ntrain+score on 4 simulated meters x 28 days: {elapsed:.1f} s; "
          f"flag rate inside labelled anomalies {inside:.1%}, outside {outside:.2%}")
    assert inside > 2 * outside


def _rows_of(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_score_writes_one_row_per_input_row_not_per_grid_slot(tmp_path, capsys, tiny_bundle):
    """A 2-reading gap is interpolated for the windows, but only input rows are written: the
    duplicates and the off-grid reading too, each in its input place."""
    sim = tmp_path / "sim.csv"
    assert run(capsys, "simulate", "--profile", "metal", "--meters", "1", "--days", "3",
               "--out", str(sim))[0] == 0
    lines = sim.read_text().splitlines()
    header, body = lines[0], lines[1:]
    del body[100:102]  # a gap of 2 readings
    ts, rest = body[200].split(",", 1)
    body.insert(201, body[200])  # an identical duplicate
    body.insert(202, ts + "," + rest.replace(rest.split(",")[2], "999", 1))  # a conflicting one
    messy = tmp_path / "messy.csv"
    messy.write_text("\n".join([header, *body]) + "\n")
    scores = tmp_path / "scores.csv"
    code, out, err = run(capsys, "score", "--model", str(tiny_bundle.path), "--input",
                         str(messy), "--output", str(scores))
    assert code == 0, err
    rows, given = _rows_of(scores), _rows_of(messy)
    assert len(rows) == len(given) == len(body)
    assert [r["timestamp"] for r in rows] == [g["timestamp"] for g in given]  # input order
    assert rows[201]["reason"] == f"identical duplicate of row {200 + 2}, dropped"
    assert rows[200]["reason"] == f"replaced by row {202 + 2} (--duplicates last)"
    assert rows[202]["value"] == "999" and rows[202]["score"]
    assert rows[200]["score"] == rows[201]["score"] == ""
    warming = [i for i, r in enumerate(rows) if r["reason"] == "warming up"]
    assert warming == list(range(len(warming))) and len(warming) < 30
    scored = len(body) - 2 - len(warming)  # the interpolated 2 are scored, but not written
    assert sum(1 for r in rows if r["score"]) == scored
    assert f"scored {scored} of {len(body)} readings of 1 meter(s)" in out


def test_score_reads_local_time_jitter_and_semicolons(tmp_path, capsys, tiny_bundle):
    path = tmp_path / "local.csv"
    rows = [f"27.10.2024 {h:02d}:{m + (1 if k % 2 else -1):02d};{k % 7 + 1},5"
            for k, (h, m) in enumerate((h, m) for h in (0, 1, 2, 2, 3, 4, 5, 6, 7, 8)
                                       for m in (1, 16, 31, 46))]
    path.write_text("timestamp;value\n" + "\n".join(rows) + "\n")
    scores = tmp_path / "scores.csv"
    code, _, err = run(capsys, "score", "--model", str(tiny_bundle.path), "--input", str(path),
                         "--output", str(scores), "--tz", "Europe/Amsterdam",
                         "--timestamp-format", "%d.%m.%Y %H:%M", "--interval", "15min")
    assert code == 0, err
    got = _rows_of(scores)
    assert len(got) == 40
    assert got[0]["timestamp"] == "2024-10-26T22:00:00+00:00"  # 00:00 CEST
    assert got[-1]["timestamp"] == "2024-10-27T07:45:00+00:00"  # 08:45 CET
    assert got[1]["value"] == "2.5"


def test_reader_flags_on_every_command():
    """A value that starts with '-' (`--tz -08:00`) is the option's value, not an option."""
    from stream_app.cli import parse_args

    for argv in (["train", "--input", "x.csv", "--out", "b"],
                 ["score", "--input", "x.csv", "--output", "o.csv"],
                 ["replay", "--input", "x.csv", "--backfill"]):
        args = parse_args([*argv, "--interval", "5min", "--grid-tolerance", "60", "--duplicates",
                           "mean", "--tz", "-08:00", "--timestamp-format", "%Y%m%d%H%M"])
        assert (args.interval, args.grid_tolerance, args.duplicates, args.tz,
                args.timestamp_format) == (300, 60, "mean", "-08:00", "%Y%m%d%H%M")
    assert parse_args(["import-greenbutton", "e.csv", "--tz-offset", "-08:00"]).tz == "-08:00"


def test_import_greenbutton_tz_offset_negative(tmp_path, capsys):
    from pathlib import Path

    export = Path(__file__).parent / "data" / "greenbutton" / "export_15min.csv"
    out = tmp_path / "home.csv"
    code, stdout, err = run(capsys, "import-greenbutton", str(export), "--tz-offset", "-08:00",
                            "--meter-id", "home", "--csv", str(out))
    assert code == 0, err
    assert "2024-01-01T08:15:00+00:00 .. 2024-01-02T08:00:00+00:00" in stdout
    assert run(capsys, "import-greenbutton", str(export), "--tz", "America/Los_Angeles",
               "--meter-id", "home")[0] == 0


@pytest.mark.parametrize(("flags", "content", "expected"), [
    (["--duplicates", "error"],
     "timestamp,value\n2025-01-01T00:00:00Z,1\n2025-01-01T00:00:00Z,2\n2025-01-01T00:15:00Z,1\n",
     "duplicate timestamp 2025-01-01t00:00:00+00:00 for meter 'bad' at rows 2 and 3"),
    (["--tz", "Mars/Olympus"], "timestamp,value\n2025-01-01T00:00:00,1\n", "mars/olympus"),
    (["--grid-tolerance", "10min", "--interval", "15min"],
     "timestamp,value\n2025-01-01T00:00:00Z,1\n2025-01-01T00:15:00Z,2\n", "half the 900 s"),
])
def test_reader_flag_errors_are_one_line(tmp_path, capsys, tiny_bundle, flags, content,
                                         expected):
    bad = tmp_path / "bad.csv"
    bad.write_text(content)
    code, _, err = run(capsys, "score", "--model", str(tiny_bundle.path), "--input", str(bad),
                       "--output", str(tmp_path / "o.csv"), *flags)
    assert code == 2 and len(err.strip().splitlines()) == 1 and expected in err.lower(), err


def test_bad_interval_flag_exits_2(tmp_path, capsys):
    assert main(["score", "--input", "x.csv", "--output", "o.csv", "--interval", "fortnight"]) == 2
    assert capsys.readouterr().err == (
        "meterwatch score: error: Invalid value for '--interval': interval 'fortnight' is not a "
        "duration like 300, 5min, 15min or 1h (whole seconds, 1 s to 366 days)\n")


def test_score_refuses_another_interval_than_the_bundles(tmp_path, capsys):
    """A 5-minute file against a 15-minute bundle: one line naming both intervals and the way
    out; resampled with --interval 15min it scores, with a per-meter summary on stderr."""
    rows = [f"2025-01-{1 + k // 288:02d}T{(k % 288) // 12:02d}:{(k % 12) * 5:02d}:00Z,"
            f"{1.0 + (k % 12) / 10}" for k in range(288 * 3)]
    path = tmp_path / "five.csv"
    path.write_text("timestamp,value\n" + "\n".join(rows) + "\n")
    out = tmp_path / "out.csv"
    assert main(["score", "--input", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith(  # the file names no meter: named after it
        "meter five: readings every 300 s, but bundle default@2 was trained on readings every "
        "900 s (resample with --interval 15min)")
    assert main(["score", "--input", str(path), "--out", str(out), "--interval", "15min"]) == 0
    assert "meter five: 864 rows, " in capsys.readouterr().err  # one per input row


@pytest.mark.parametrize(("header", "cell", "flags", "meter", "note"), [
    ("timestamp,value", "", [], "plant7", False),  # names no meter: named after its file
    ("timestamp,meter_id,value", "m7,", [], "m7", False),
    ("timestamp,value", "", ["--meter-id", "m8"], "m8", False),
])
def test_the_shipped_bundle_takes_no_file_for_its_steel_plant(
        tmp_path, capsys, header, cell, flags, meter, note):
    """The shipped bundle knows one meter, a steel plant: a file of the user's own meter is
    not taken for it (a bundle of the user's one meter is: tests/io/test_messy_corpus.py); it
    warms up as a meter of its own."""
    rows = [f"2025-01-{1 + k // 96:02d}T{(k % 96) // 4:02d}:{(k % 4) * 15:02d}:00Z,{cell}"
            f"{40 + 20 * ((k // 8) % 2)}" for k in range(96 * 3)]
    path = tmp_path / "plant7.csv"
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    code, _, err = run(capsys, "score", "--input", str(path), "--output", str(tmp_path / "o.csv"),
                       *flags)
    assert code == 0, err
    said = ("the file names no meter (no meter column, no --meter-id): scored as meter steel, "
            "the one meter bundle default@2 was trained on")
    assert (said in err.splitlines()) == note, err
    scores = _rows_of(tmp_path / "o.csv")
    assert len(scores) == len(rows) and {r["meter_id"] for r in scores} == {meter}
    warming = sum(1 for r in scores if r["reason"] == "warming up")
    assert warming >= 191, warming  # a stranger warms up on 192 readings (scored from the 192nd)


# --- the command line itself (click) ----------------------------------------------------------

@pytest.mark.parametrize(("argv", "where", "expected"), [
    ([], "meterwatch", "Missing command."),
    (["bogus"], "meterwatch", "No such command 'bogus'."),
    (["score", "--input", "x.csv", "--output", "o.csv", "--bogus"], "meterwatch score",
     "No such option: --bogus"),
    (["score", "--input", "x.csv"], "meterwatch score", "Missing option '--output'"),
    (["train", "--input", "x.csv", "--out", "b", "--model", "gru"], "meterwatch train",
     "Invalid value for '--model': 'gru' is not one of 'cnn_gru', 'lstm', 'both'."),
    (["simulate", "--out", "x.csv", "--seed", "abc"], "meterwatch simulate",
     "Invalid value for '--seed': 'abc' is not a valid integer."),
    (["simulate", "--out", "x.csv", "--meters", "0"], "meterwatch simulate",
     "Invalid value for '--meters': must be >= 1, got 0"),
    (["simulate", "--out", "x.csv", "--days", "many"], "meterwatch simulate",
     "Invalid value for '--days': 'many' is not a whole number"),
    (["replay", "--input", "x.csv", "--speed", "fast"], "meterwatch replay",
     "Invalid value for '--speed': speed 'fast' is not a number like 60x"),
    (["import-greenbutton"], "meterwatch import-greenbutton", "Missing argument 'FILE'."),
    # what argparse's exclusive groups refused: told before any broker is asked
    (["replay", "--input", "x.csv"], "meterwatch replay",
     "choose exactly one of rate, speed or backfill (got none)"),
    (["replay", "--input", "x.csv", "--rate", "5", "--speed", "2x"], "meterwatch replay",
     "choose exactly one of rate, speed or backfill (got ['rate', 'speed'])"),
    (["replay", "--input", "x.csv", "--backfill", "--topic", "t", "--topic-template", "m.{meter_id}"],
     "meterwatch replay", "--topic (or MW_INPUT_TOPIC) and --topic-template exclude each other"),
    (["import-greenbutton", "x.xml", "--produce", "--csv", "x.csv"],
     "meterwatch import-greenbutton", "--produce and --csv exclude each other"),
])
def test_usage_errors_are_one_line_and_exit_2(capsys, argv, where, expected):
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert err.startswith(f"{where}: error: ") and expected in err, err
    assert len(err.splitlines()) == 1 and "Usage:" not in err, err


def test_every_default_and_setting_shows_in_help():
    """Each option that has a default names it in --help, and each one bound to a setting
    names its variable; choices are listed."""
    import click

    from stream_app.cli import build_cli

    group = build_cli()
    checked = 0
    for name, command in group.commands.items():
        ctx = click.Context(command, info_name=name, parent=click.Context(group), show_default=True)
        for param in command.params:
            if not isinstance(param, click.Option) or param.hidden:
                continue
            record = param.get_help_record(ctx)
            assert record is not None
            text = " ".join(record)
            default = param.get_default(ctx)
            if all(default is not no for no in (None, False, getattr(click.core, "UNSET", None))):
                assert "default: " in text, (name, text)
                checked += 1
            if param.envvar:
                assert f"env var: {param.envvar}" in text, (name, text)
            if isinstance(param.type, click.Choice):
                assert "|".join(map(str, param.type.choices)) in text, (name, text)
    assert checked > 40


def test_help_names_defaults_variables_and_choices(capsys):
    code, out, _ = run(capsys, "alerts", "--help")
    shown = " ".join(out.split())
    assert code == 0
    assert "--topic TEXT alert topic [env var: MW_ALERTS_TOPIC; default: meter-alerts]" in shown
    assert "--severity [low|medium|high|critical] minimum severity" in shown
    code, out, _ = run(capsys, "score", "--help")
    shown = " ".join(out.split())
    assert "[env var: MW_MODEL_DIR; default: (the shipped default bundle)]" in shown
    assert "--duplicates [last|mean|sum|error]" in shown and "[default: last]" in shown
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "130  interrupted (Ctrl-C)" in out and "_METERWATCH_COMPLETE" in out


def test_options_bound_to_settings_read_their_variable(monkeypatch, tmp_path, capsys):
    from stream_app.cli import parse_args
    from stream_app.io.replay import topics_of

    assert parse_args(["alerts"]).topic == "meter-alerts"
    monkeypatch.setenv("MW_ALERTS_TOPIC", "plant-alerts")
    monkeypatch.setenv("MW_FEEDBACK_TOPIC", "plant-feedback")
    monkeypatch.setenv("MW_INPUT_TOPIC", "plant-readings")
    assert parse_args(["alerts"]).topic == "plant-alerts"
    assert parse_args(["alerts", "--topic", "other"]).topic == "other"  # the option wins
    assert parse_args(["feedback", "--alert-id", "a", "--verdict", "true",
                       "--who", "ann"]).topic == "plant-feedback"
    replay = parse_args(["replay", "--input", "x.csv", "--backfill"])
    assert topics_of(replay) == ("meter.{meter_id}", "plant-readings")
    with pytest.raises(InputError, match="exclude each other"):
        topics_of(parse_args(["replay", "--input", "x.csv", "--backfill",
                              "--topic-template", "m.{meter_id}"]))
    monkeypatch.setenv("MW_MODEL_DIR", str(tmp_path))  # a folder without a bundle: refused
    code, _, err = run(capsys, "score", "--input", "x.csv", "--output", str(tmp_path / "o.csv"))
    assert code == 2 and "manifest.json is missing" in err, err


def test_shell_completion(monkeypatch, capsys):
    monkeypatch.setenv("_METERWATCH_COMPLETE", "bash_source")
    with pytest.raises(SystemExit) as stop:
        main([])
    script = capsys.readouterr().out
    assert stop.value.code == 0
    assert "_meterwatch_completion()" in script
    assert "complete -o nosort -F _meterwatch_completion meterwatch" in script
    monkeypatch.setenv("_METERWATCH_COMPLETE", "bash_complete")
    monkeypatch.setenv("COMP_WORDS", "meterwatch score --dup")
    monkeypatch.setenv("COMP_CWORD", "2")
    with pytest.raises(SystemExit):
        main([])
    assert capsys.readouterr().out.split() == ["plain,--duplicates"]


def test_closed_stdout_ends_silently_with_141(monkeypatch, tmp_path, capsys):
    import io

    class Closed(io.StringIO):  # a pipe whose reader is gone
        def write(self, text):
            raise BrokenPipeError

    monkeypatch.setattr("sys.stdout", Closed())
    code = main(["simulate", "--meters", "1", "--days", "1", "--out", str(tmp_path / "s.csv")])
    assert code == 141 and capsys.readouterr().err == ""


@pytest.mark.parametrize("argv", [
    ["alerts"], ["feedback", "--alert-id", "a", "--verdict", "true", "--who", "ann"],
])
def test_an_unreachable_broker_is_one_line(monkeypatch, capsys, argv):
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9")
    monkeypatch.setenv("MW_BROKER_WAIT_S", "1")
    code, _, err = run(capsys, *argv)
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith(f"meterwatch {argv[0]}: error: no Kafka broker answered at "
                          "127.0.0.1:9 within 1 s (MW_BROKER_WAIT_S"), err
