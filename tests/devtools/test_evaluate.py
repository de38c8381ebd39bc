"""`meterwatch evaluate`: metric functions against hand-computed examples, then the command."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stream_app import cli
from stream_app.core.errors import InputError
from stream_app.core.timestamps import format_timestamp
from stream_app.devtools.evaluate import (
    average_precision,
    events,
    point_adjusted_f1,
    pointwise,
)
from stream_app.devtools.simulator import simulate_to_csv
from stream_app.io.series_io import read_meter_csv


def _arr(text: str) -> np.ndarray:
    return np.array([int(c) for c in text], dtype=np.int8)


# labels: two events, [2, 5) and [10, 12). flags: one run inside event 1 (from index 3),
# one run [7, 9) touching no event; event 2 is missed.
LABELS = _arr("0011100000110000")
FLAGS = _arr("0001100110000000")


def test_pointwise_hand_counts():
    m = pointwise(LABELS, FLAGS)
    assert (m["tp"], m["fp"], m["fn"]) == (2, 2, 3)
    assert m["precision"] == pytest.approx(2 / 4)
    assert m["recall"] == pytest.approx(2 / 5)
    assert m["f1"] == pytest.approx(2 * 2 / (2 * 2 + 2 + 3))


def test_pointwise_undefined_ratios_are_none():
    m = pointwise(_arr("0000"), _arr("0000"))
    assert m["precision"] is None and m["recall"] is None and m["f1"] is None


def test_events_one_detected_one_missed_one_false_run():
    e = events(LABELS, FLAGS, np.ones(len(LABELS), bool), interval_s=900)
    assert (e["windows"], e["detected"], e["alert_runs"], e["false_alert_runs"]) == (2, 1, 2, 1)
    assert e["recall"] == pytest.approx(0.5)
    assert e["precision"] == pytest.approx(0.5)
    assert e["f1"] == pytest.approx(0.5)
    assert e["delays_readings"] == [1]  # event starts at 2, first flag at 3
    assert e["delays_minutes"] == [15.0]


def test_events_grace_extends_window_end_only():
    labels, flags = _arr("0011000000"), _arr("0000110000")  # flags from just after the end
    scored = np.ones(10, bool)
    assert events(labels, flags, scored)["detected"] == 0
    assert events(labels, flags, scored, grace=1)["false_alert_runs"] == 0
    e = events(labels, flags, scored, grace=1)
    assert e["detected"] == 1 and e["delays_readings"] == [2]
    with pytest.raises(InputError):
        events(labels, flags, scored, grace=-1)


def test_events_skip_windows_inside_warmup():
    labels, flags = _arr("1100001100"), _arr("0000000100")
    scored = np.array([0, 0, 0, 1, 1, 1, 1, 1, 1, 1], bool)
    e = events(labels, flags, scored)
    assert (e["windows"], e["unscorable_windows"], e["detected"]) == (1, 1, 1)
    assert e["delays_readings"] == [1]


def test_events_no_alerts_gives_f1_zero_not_undefined():
    e = events(LABELS, np.zeros_like(LABELS), np.ones(len(LABELS), bool))
    assert e["precision"] is None and e["recall"] == 0 and e["f1"] == 0


def test_point_adjusted_f1_credits_whole_window():
    # after adjustment event 1 is fully hit: tp 3, fp 2, fn 2
    assert point_adjusted_f1(LABELS, FLAGS) == pytest.approx(6 / (6 + 2 + 2))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_average_precision_matches_sklearn(seed):
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(seed)
    y = (rng.random(400) < 0.1).astype(int)
    score = rng.normal(size=400) + y
    score[::7] = np.round(score[::7], 1)  # ties
    assert average_precision(y, score) == pytest.approx(
        metrics.average_precision_score(y, score), abs=1e-12)
    assert average_precision(np.zeros(5), np.arange(5.0)) is None
    assert average_precision(np.array([0, 1, 0, 1]), np.array([1, 4, 2, 3.0])) == 1.0


def _run(argv: list[str]) -> int:
    """The command as cli.main runs it: user errors give exit code 2."""
    return cli.main(["evaluate", *argv])


@pytest.fixture(scope="module")
def labelled_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("eval") / "sim.csv"
    simulate_to_csv(path, "metal", meters=2, days=6, seed=11, anomalies_per_meter=2.0)
    return path


def test_end_to_end_report_and_plots(tiny_bundle, labelled_csv, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "out"
    assert _run(["--model", str(tiny_bundle.path), "--input", str(labelled_csv),
                 "--out", str(out), "--grace", "2"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["bundle"]["version"] == tiny_bundle.version
    assert report["thresholds"]["industrial"] == tiny_bundle.limits.limit("industrial")
    assert report["grace_readings"] == 2
    series = read_meter_csv(labelled_csv)
    assert set(report["meters"]) == {s.meter_id for s in series}
    o = report["overall"]
    assert o["scored_readings"] == sum(m["scored_readings"] for m in report["meters"].values())
    assert o["anomalous_readings"] > 0 and 0 <= o["ap"] <= 1
    assert o["point"]["tp"] + o["point"]["fn"] == o["anomalous_readings"]
    assert o["event"]["detected"] == len(o["event"]["delays_readings"])
    for s in series:
        assert (out / f"{s.meter_id}.png").stat().st_size > 1000
    printed = capsys.readouterr().out
    assert "overall" in printed and "INFLATED" in printed


def test_label_windows_json_replace_csv_labels(tiny_bundle, labelled_csv, tmp_path):
    series = read_meter_csv(labelled_csv)
    s = series[0]
    start, end = int(s.timestamps[300]), int(s.timestamps[309])
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps([{"meter_id": s.meter_id, "start": format_timestamp(start),
                                   "end": format_timestamp(end)}]))
    out = tmp_path / "out"
    assert _run(["--model", str(tiny_bundle.path), "--input", str(labelled_csv),
                 "--out", str(out), "--labels", str(labels), "--no-plots"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["meters"][s.meter_id]["anomalous_readings"] == 10  # ends inclusive
    assert report["meters"][series[1].meter_id]["anomalous_readings"] == 0
    assert report["overall"]["event"]["windows"] == 1


def test_bad_input_exits_2(tiny_bundle, labelled_csv, tmp_path, capsys):
    unlabelled = tmp_path / "plain.csv"
    unlabelled.write_text("timestamp,value\n" + "".join(
        f"{format_timestamp(1_700_000_000 + 900 * i)},{1 + i % 5}\n" for i in range(400)))
    base = ["--model", str(tiny_bundle.path), "--out", str(tmp_path / "o"), "--no-plots"]
    assert _run([*base, "--input", str(unlabelled)]) == 2
    bad_json = tmp_path / "bad.json"
    for text in ("{not json", '[{"meter_id": "nope", "start": "2025-01-06", "end": "2025-01-07"}]',
                 '[{"meter_id": "metal-001", "start": "2025-01-06"}]'):
        bad_json.write_text(text)
        assert _run([*base, "--input", str(labelled_csv), "--labels", str(bad_json)]) == 2
    assert _run([*base, "--input", str(labelled_csv), "--grace", "-1"]) == 2
