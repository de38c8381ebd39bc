"""The `meterwatch` command line: outputs, and one clear line with exit code 2 for user errors."""

import csv

import pytest

from stream_app.cli import main


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
    ("timestamp,value\n" + "".join(f"2025-01-01T{h:02d}:00:00Z,1\n" for h in range(10)),
     "too short"),
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
