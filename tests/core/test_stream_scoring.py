"""StreamScorer, the worker's batch logic without Kafka: redelivery after a crash is harmless."""

from stream_app.core.records import Reading
from stream_app.core.scoring import Detector
from stream_app.core.stream_scoring import StreamScorer


def readings_of(series):
    return [Reading(series.meter_id, int(t) * 1000, float(v), series.category)
            for t, v in zip(series.timestamps, series.values)]


def run_batches(scorer, readings, offsets, states, size=256):
    alerts, outcomes = [], {}
    for start in range(0, len(readings), size):
        batch, offs = readings[start:start + size], offsets[start:start + size]
        result = scorer.process(batch, {r.meter_id: states.get(r.meter_id) for r in batch},
                                positions=[("meter.x:0", o) for o in offs])
        states.update(result.states)
        alerts += result.alerts
        for k, v in result.outcomes.items():
            outcomes[k] = outcomes.get(k, 0) + v
    return alerts, outcomes


def test_redelivered_readings_are_duplicates_and_change_nothing(tiny_bundle, sim_series):
    series = sim_series[0][0]
    readings = readings_of(series)
    offsets = list(range(len(readings)))
    scorer = StreamScorer(Detector(tiny_bundle))
    states: dict = {}
    half = len(readings) // 2
    run_batches(scorer, readings[:half], offsets[:half], states)
    saved = dict(states)
    # a crash: the last 300 applied readings come again (their offsets were not committed)
    again, outcomes = run_batches(scorer, readings[half - 300:half], offsets[half - 300:half],
                                  states)
    assert again == [] and outcomes == {"duplicate": 300}
    assert states == saved
    rest, _ = run_batches(scorer, readings[half:], offsets[half:], states)
    # the same run without the crash gives the same alerts
    fresh_states: dict = {}
    fresh = StreamScorer(Detector(tiny_bundle))
    _, _ = run_batches(fresh, readings[:half], offsets[:half], fresh_states)
    expected, _ = run_batches(fresh, readings[half:], offsets[half:], fresh_states)
    assert [(a.alert_id, a.status) for a in rest] == [(a.alert_id, a.status) for a in expected]


def test_a_meters_state_takes_the_memory_of_its_bytes_only(tiny_bundle, sim_series):
    """The table keeps every meter's state bytes for as long as the worker runs: they must not
    carry a serializer's spare buffer (orjson's bytes keep ~16 KiB unless copied)."""
    import tracemalloc

    series = sim_series[0][0]
    readings = readings_of(series)[:120]
    scorer = StreamScorer(Detector(tiny_bundle))
    states: dict = {}
    run_batches(scorer, readings, list(range(len(readings))), states)
    template = states[series.meter_id]
    meters = [f"m-{i}" for i in range(300)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = scorer.process([Reading(m, readings[-1].ts + 900_000, 1.0, series.category)
                               for m in meters], dict.fromkeys(meters, template)).states
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    size = sum(len(v) for v in kept.values())
    assert held < 2 * size + 100_000, (held, size)


def test_a_gap_alert_names_the_gap_and_follows_the_alert_schema(tiny_bundle, sim_series):
    import json
    from pathlib import Path

    from reference.json_schema import schema_errors

    schema = json.loads((Path(__file__).resolve().parents[2] / "docs" / "schemas"
                         / "alert.schema.json").read_text())
    series = sim_series[0][0]
    readings = readings_of(series)
    kept = readings[:300] + readings[310:320]  # 10 readings missing: longer than max_gap 4
    alerts, _ = run_batches(StreamScorer(Detector(tiny_bundle)), kept, list(range(len(kept))), {})
    [gap] = [a for a in alerts if a.kind == "gap"]
    assert (gap.status, gap.window_size, gap.readings_flagged) == ("open", 10, 10)
    assert gap.first_seen == gap.window_start < gap.window_end == gap.last_seen
    assert gap.reason == "10 readings missing; the meter's history restarts"
    assert (gap.zscore, gap.threshold) == (10.0, 4.0)  # missing / the most interpolated
    assert schema_errors(gap.to_dict(), schema) == []
