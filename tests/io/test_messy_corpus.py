"""Real meter data as it comes (issue 12): a corpus of messy files, each one generated here,
driven through `meterwatch train` and `score`. Every file either trains and scores with the
documented repairs, or is refused with the documented one line (exit 2); score writes exactly
one output row per input row. docs/DATA_IN.md ("What meterwatch does with messy files") shows
the lines these cases print (run with -s to see them)."""

from __future__ import annotations

import contextlib
import csv
import io
import json
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from factories import START

from stream_app.cli import main

pytest.importorskip("torch")

AMSTERDAM = ZoneInfo("Europe/Amsterdam")
TINY = ("--model", "lstm", "--epochs", "1", "--max-train-windows", "300", "--windows", "16",
        "--name", "corpus", "--version", "1")
DAY = 86_400
NO_METER = ("the file names no meter (no meter column, no --meter-id): scored as meter plant, "
            "the one meter bundle corpus@1 was trained on")


def _utc(t: int) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _local(t: int) -> str:
    """Naive wall-clock time in Amsterdam, as a meter on local time writes it."""
    return datetime.fromtimestamp(t, UTC).astimezone(AMSTERDAM).strftime("%Y-%m-%dT%H:%M:%S")


def _energy(t: np.ndarray, seed: int) -> np.ndarray:
    """kWh per interval ending at UTC times `t`: one daily cycle for every case, with noise,
    never negative."""
    noise = np.random.default_rng(seed).normal(0.0, 2.0, len(t))
    return np.round(50.0 + 30.0 * np.sin(2 * np.pi * (t % DAY) / DAY) + noise, 3)


def _write(path: Path, stamps, values) -> Path:
    path.write_text("timestamp,value\n" + "".join(f"{t},{v}\n" for t, v in zip(stamps, values)))
    return path


def _clock(first: int, last: int, interval_s: int = 900) -> np.ndarray:
    return np.arange(first, last + 1, interval_s)


# --- the factory: one function per case, each writes its file into `folder` -------------------

def two_weeks(folder: Path) -> Path:
    """The shortest history that trains: 14 days of one 15-minute meter (1,344 readings)."""
    t = START + 900 * np.arange(1, 1345)
    return _write(folder / "plant.csv", map(_utc, t), _energy(t, 0))


def dst_fall_back(folder: Path) -> Path:
    """Naive Amsterdam time across 2024-10-27 03:00 CEST -> 02:00 CET: 02:00-02:45 twice."""
    t = _clock(1729894500, 1730070000)  # 2024-10-26 00:15 CEST .. 2024-10-28 00:00 CET
    return _write(folder / "dst_fall_back.csv", map(_local, t), _energy(t, 1))


def dst_spring_forward(folder: Path) -> Path:
    """Naive Amsterdam time across 2025-03-30 02:00 CET -> 03:00 CEST: 01:45 then 03:00."""
    t = _clock(1743203700, 1743372000)  # 2025-03-29 00:15 CET .. 2025-03-31 00:00 CEST
    return _write(folder / "dst_spring_forward.csv", map(_local, t), _energy(t, 2))


def duplicates(folder: Path) -> Path:
    """Two days; row 52 sent twice alike, row 102 twice with another value (a correction)."""
    t = START + 900 * np.arange(1, 193)
    stamps, values = list(map(_utc, t)), list(_energy(t, 3))
    stamps.insert(101, stamps[100])
    values.insert(101, 99.0)  # file rows 102 and 103: one slot, two values
    stamps.insert(51, stamps[50])
    values.insert(51, values[50])  # file rows 52 and 53: identical
    return _write(folder / "duplicates.csv", stamps, values)


def negative_readings(folder: Path) -> Path:
    """Two days of a consumption meter; row 60 reads -3.2 and rows 120-127 read -1 (a sign or
    wiring fault for two hours): kept as data faults, the short one interpolated over, the long
    one a split."""
    t = START + 900 * np.arange(1, 193)
    values = _energy(t, 5)
    values[58] = -3.2
    values[118:126] = -1.0
    return _write(folder / "negative_readings.csv", map(_utc, t), values)


def one_day_gap(folder: Path) -> Path:
    """16 days with the eighth missing (96 readings): it trains, and scores, in two segments."""
    t = START + 900 * np.arange(1, 16 * 96 + 1)
    keep = (t <= START + 7 * DAY) | (t > START + 8 * DAY)
    return _write(folder / "one_day_gap.csv", map(_utc, t[keep]), _energy(t, 4)[keep])


def _jittered(name: str, interval_s: int, jitter_s: int, seed: int, folder: Path) -> Path:
    n = 14 * DAY // interval_s
    rng = np.random.default_rng(seed)
    jitter = rng.integers(-jitter_s, jitter_s + 1, n)
    t = START + interval_s * np.arange(1, n + 1) + jitter
    return _write(folder / f"{name}.csv", map(_utc, t), _energy(t - jitter, seed))


def jitter_5min(folder: Path) -> Path:
    """Two weeks of a 5-minute clock that runs up to a minute early or late."""
    return _jittered("jitter_5min", 300, 60, 5, folder)


def jitter_10min(folder: Path) -> Path:
    """Two weeks of a 10-minute clock that runs up to two minutes early or late."""
    return _jittered("jitter_10min", 600, 120, 6, folder)


def kw_readings(folder: Path) -> Path:
    """Two weeks of mean power in kW (4x the kWh of a 15-minute interval)."""
    t = START + 900 * np.arange(1, 1345)
    return _write(folder / "kw_readings.csv", map(_utc, t), _energy(t, 7) * 4)


def register_rollover(folder: Path) -> Path:
    """Two days of a cumulative kWh register that rolls over at 100,000 after about 100
    readings."""
    t = START + 900 * np.arange(1, 194)
    register = np.round((95_000 + np.cumsum(_energy(t, 8))) % 100_000, 3)
    return _write(folder / "register_rollover.csv", map(_utc, t), register)


# --- running the CLI ---------------------------------------------------------------------------

def cli(*argv: str | Path) -> tuple[int, list[str], list[str]]:
    """meterwatch's exit status and its stdout and stderr lines (progress bars left out)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    errors = [line for line in err.getvalue().splitlines()
              if line.strip() and "epoch" not in line and "does not beat" not in line]
    return code, out.getvalue().splitlines(), errors


def show(case: str, lines: list[str]) -> None:
    for line in lines:
        print(f"{case} | {line}")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("corpus")


@pytest.fixture(scope="module")
def trained(folder):
    """train(case) -> (bundle folder, train's output lines), each case trained once."""
    done: dict[str, tuple[Path, list[str]]] = {}

    def train(case, *flags: str) -> tuple[Path, list[str]]:
        if case.__name__ not in done:
            bundle = folder / f"{case.__name__}_bundle"
            code, out, err = cli("train", "--input", case(folder), "--out", bundle, *TINY, *flags)
            assert code == 0, err
            done[case.__name__] = bundle, out
        return done[case.__name__]

    return train


def score(folder: Path, bundle: Path, path: Path, *flags: str) -> tuple[list[str], list[str],
                                                                          list[dict]]:
    """Score a file that must score: (stdout, stderr, output rows), one output row per input
    row, in input order."""
    output = folder / f"{path.stem}_scores.csv"
    code, out, err = cli("score", "--model", bundle, "--input", path, "--output", output, *flags)
    assert code == 0, err
    with open(path, newline="") as fh:
        given = list(csv.DictReader(fh))
    with open(output, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(given)
    return out, err, rows


def summary(meter: str, rows: list[dict], repairs: int) -> str:
    """score's per-meter line on stderr, with the counts of its output rows."""
    scored = sum(1 for r in rows if r["score"])
    flagged = sum(1 for r in rows if r["is_anomaly"] == "1")
    return f"meter {meter}: {len(rows)} rows, {scored} scored, {flagged} flagged, {repairs} repairs"


def _manifest(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


def _timestamps(rows: list[dict]) -> np.ndarray:
    return np.array([datetime.fromisoformat(r["timestamp"]).timestamp() for r in rows], np.int64)


# --- the cases ---------------------------------------------------------------------------------

def test_two_weeks_of_one_meter_trains_and_scores(folder, trained):
    bundle, out = trained(two_weeks)
    assert out[0].startswith("bundle corpus@1 written to ") and "windows [16]" in out[0], out
    assert len(out) == 1  # nothing to repair
    assert _manifest(bundle)["training"]["config"]["unit"] == "kWh"
    out, err, rows = score(folder, bundle, two_weeks(folder))
    show("two weeks", out[:1] + err)
    assert err == [summary("plant", rows, 0)]  # its name is the bundle's meter already
    assert sum(1 for r in rows if r["score"]) == 1329
    assert [r["reason"] for r in rows[:15]] == ["warming up"] * 15  # a window of 16 filling


@pytest.mark.parametrize("case", [dst_fall_back, dst_spring_forward])
def test_naive_local_time_across_dst_is_read_without_a_repair(folder, trained, case):
    """The fall-back's repeated hour is kept twice, the spring-forward's missing hour is no
    gap: one 15-minute step in UTC all through, nothing interpolated, nothing refused. The file
    names no meter, so the one-meter bundle scores it as its meter (plant), with no warm-up."""
    path = case(folder)
    out, err, rows = score(folder, trained(two_weeks)[0], path, "--tz", "Europe/Amsterdam")
    show(case.__name__, err)
    assert not [line for line in out if line.startswith("repaired")], out
    assert np.all(np.diff(_timestamps(rows)) == 900)
    assert err == [NO_METER, summary("plant", rows, 0)]
    assert sum(1 for r in rows if r["score"]) == len(rows) - 15  # no warm-up beyond the window
    local = [r["timestamp"] for r in csv.DictReader(open(path))]
    if case is dst_fall_back:  # 48 hours and the repeated one
        assert len(rows) == 196 and local.count("2024-10-27T02:15:00") == 2
    else:  # 48 hours less the skipped one
        assert len(rows) == 188 and "2025-03-30T02:15:00" not in local


def test_identical_and_conflicting_duplicates_are_repaired_and_kept_as_rows(folder, trained):
    out, err, rows = score(folder, trained(two_weeks)[0], duplicates(folder))
    repairs = [line for line in out if line.startswith("repaired")]
    show("duplicates", repairs + err)
    assert repairs == [
        "repaired plant: dropped 1 identical duplicate readings (row 53)",
        "repaired plant: 1 slots with conflicting duplicates resolved by --duplicates last "
        "(row 104)"]
    assert len(rows) == 194  # 192 readings, two of them twice
    assert rows[51]["reason"] == "identical duplicate of row 52, dropped"
    assert rows[101]["reason"] == "replaced by row 104 (--duplicates last)"
    assert rows[102]["value"] == "99" and rows[102]["score"]


def test_negative_readings_are_kept_as_flagged_data_faults_not_refused(folder, trained):
    out, err, rows = score(folder, trained(two_weeks)[0], negative_readings(folder))
    repairs = [line for line in out if line.startswith("repaired")]
    show("negative_readings", repairs + err)
    assert repairs[0] == (
        "repaired plant: 9 negative readings (rows 60, 120, 121, ... (9 in all)) kept as data "
        "faults (kind negative_reading, not scored): a consumption meter cannot use negative "
        "energy, so their slots count as missing")
    assert "repaired plant: interpolated 1 missing readings at row 60" in repairs
    assert any("gap of 8 missing readings at rows 120-127" in line for line in repairs)
    faults = [r for r in rows if r["kind"] == "negative_reading"]
    assert [r["value"] for r in faults] == ["-3.2"] + ["-1"] * 8
    assert all(r["is_anomaly"] == "1" and not r["score"] and r["reason"] == (
        "negative reading: a data fault of a consumption meter, not scored") for r in faults)
    assert len(rows) == 192 and all(float(r["value"]) >= 0 for r in rows if r["score"])
    assert summary("plant", rows, len(repairs)) in err  # the faults counted as flagged


def test_a_one_day_gap_splits_training_and_scoring_into_segments(folder, trained):
    bundle, train_out = trained(one_day_gap)
    gap = ("repaired one_day_gap: gap of 96 missing readings between rows 673 and 674 "
           "(2025-01-13T00:15:00+00:00 to 2025-01-14T00:00:00+00:00), longer than --max-gap 4: "
           "the series is split there (no window spans it)")
    assert train_out[0] == gap
    assert _manifest(bundle)["training"]["metrics"]["windows"]["segments"] == {"one_day_gap": 2}
    out, err, rows = score(folder, bundle, one_day_gap(folder))
    show("one-day gap", [gap] + err)
    assert gap in out and len(rows) == 1440  # 16 days less the missing one
    filling = [i for i, r in enumerate(rows)
               if r["reason"] == "windows filling again after a gap of 96 readings"]
    assert filling == list(range(672, 672 + 15))  # the first rows after the gap
    assert err == [summary("one_day_gap", rows, 1)]


@pytest.mark.parametrize(("case", "interval", "snapped"), [
    (jitter_5min, 300, "snapped 4003 readings up to 60 s off the 300 s grid"),
    (jitter_10min, 600, "snapped 2009 readings up to 120 s off the 600 s grid"),
])
def test_a_jittered_clock_is_snapped_to_its_grid(folder, trained, case, interval, snapped):
    bundle, train_out = trained(case)
    expected = [f"repaired {case.__name__}: irregular clock, interval {interval} s from the "
                "median step",
                f"repaired {case.__name__}: {snapped} to the nearest grid point"]
    assert train_out[:2] == expected
    assert _manifest(bundle)["interval_s"] == interval
    out, err, rows = score(folder, bundle, case(folder))
    show(case.__name__, out[:2] + err)
    assert out[:2] == expected and len(rows) == 14 * DAY // interval
    assert np.all(_timestamps(rows) % interval == 0)  # on the grid


def test_kw_readings_train_and_score_as_energy_per_interval(folder, trained):
    bundle, train_out = trained(kw_readings, "--unit", "kW")
    line = "repaired kw_readings: kW readings turned into kWh per 900 s interval"
    assert train_out[0] == line
    assert _manifest(bundle)["training"]["config"]["unit"] == "kW"  # the bundle says its unit
    path = kw_readings(folder)
    out, err, rows = score(folder, bundle, path, "--unit", "kW")
    show("kW readings", [line] + err)
    assert out[0] == line and len(rows) == 1344
    given = [float(r["value"]) for r in csv.DictReader(open(path))]
    assert [float(r["value"]) for r in rows[:3]] == pytest.approx([v / 4 for v in given[:3]])
    assert not [e for e in err if e.startswith("note:")]
    _, err, _ = score(folder, bundle, path)  # --unit forgotten: scored, and said
    assert [e for e in err if e.startswith("note:")] == [
        "note: bundle corpus@1 was trained on readings in kW; this file is read as kWh "
        "(--unit): if its readings are in kW, give --unit kW"]


def test_a_register_with_a_rollover_scores_its_deltas_in_two_segments(folder, trained):
    out, err, rows = score(folder, trained(two_weeks)[0], register_rollover(folder),
                           "--cumulative")
    repairs = [line for line in out if line.startswith("repaired")]
    show("register rollover", repairs + err)
    assert repairs == [
        "repaired plant: register readings turned into interval energy (the first, at row 2, "
        "is the baseline)",
        "repaired plant: the register dropped 1 times (rollover or reset; rows 101): those "
        "intervals' energy is unknown, the series is split there (no window spans it)",
        "repaired plant: dropped 1 missing readings at the start (at row 2)"]
    assert err == [NO_METER, summary("plant", rows, 3)]
    assert len(rows) == 193
    assert rows[0]["reason"] == "empty value at an end of the series, dropped"
    assert rows[99]["reason"] == "unknown energy (the register dropped), the series is split here"
    assert [r["reason"] for r in rows[100:116]] == \
        ["windows filling again after a gap of 1 readings"] * 15 + [rows[116]["reason"]]
    assert all(0 < float(r["value"]) < 100 for r in rows[1:] if r["score"])  # never negative


def test_an_interval_mismatch_is_one_line_naming_both(folder, trained):
    bundle = trained(two_weeks)[0]
    code, out, err = cli("score", "--model", bundle, "--input", jitter_5min(folder),
                         "--output", folder / "mismatch.csv")
    show("interval mismatch", err)
    assert code == 2 and err == [
        "meterwatch score: error: meter plant: readings every 300 s, but bundle corpus@1 was "
        "trained on readings every 900 s (resample with --interval 15min)"]
    assert not (folder / "mismatch.csv").exists()
