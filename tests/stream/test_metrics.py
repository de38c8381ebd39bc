"""The worker's /metrics content without a broker: the collectors beside ours, no `_created`
series, and the lag of every assigned partition (timers.report_lag over plain values; the
broker side, `group_offsets` and a real worker's page, is in tests/integration/test_metrics_page.py).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
from faust.types import TP

from stream_app.core.model_bundle import Bundle
from stream_app.core.scoring import Detector
from stream_app.stream import timers
from stream_app.stream.app import create_app
from stream_app.stream.metrics import LATENCY_BUCKETS, WorkerMetrics
from stream_app.stream.settings import KafkaSettings, WorkerSettings

DEFAULT_BUNDLE = Path(__file__).resolve().parents[2] / "onnx_models" / "default"


def samples(text: str) -> dict[str, float]:
    """'name{labels}' -> value of every sample line."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def test_process_platform_and_gc_collectors_and_no_created_series():
    metrics = WorkerMetrics()
    metrics.readings_in.inc(3)
    metrics.alerts.labels("industrial", "high", "open").inc()
    metrics.reading_to_scored.observe(0.03)
    text = metrics.render().decode()
    got = samples(text)
    assert got["process_resident_memory_bytes"] > 1 << 20
    assert got["process_cpu_seconds_total"] > 0
    assert got["process_open_fds"] >= 1 and got["process_max_fds"] >= got["process_open_fds"]
    assert "process_start_time_seconds" in got and "process_virtual_memory_bytes" in got
    v = sys.version_info
    assert (f'python_info{{implementation="CPython",major="{v.major}",minor="{v.minor}",'
            f'patchlevel="{v.micro}",version="{v.major}.{v.minor}.{v.micro}"}}') in got
    assert 'python_gc_collections_total{generation="0"}' in got
    assert got["meterwatch_readings_in_total"] == 3
    assert "_created" not in text  # not one series, ours or the collectors'


def test_latency_histograms_resolve_sub_second_values():
    metrics = WorkerMetrics()
    for seconds in (0.004, 0.04, 0.12, 0.35, 0.8):
        metrics.reading_to_scored.observe(seconds)
    metrics.reading_to_alert.observe(0.12)
    got = samples(metrics.render().decode())
    below_one_s = [b for b in LATENCY_BUCKETS if b < 1.0]
    assert len(below_one_s) >= 10  # p50/p99 of a caught-up worker fall between real bounds
    scored = {le: got[f'meterwatch_reading_to_scored_seconds_bucket{{le="{le}"}}']
              for le in ("0.005", "0.05", "0.15", "0.4", "1.0")}
    assert scored == {"0.005": 1, "0.05": 2, "0.15": 3, "0.4": 4, "1.0": 5}
    assert got["meterwatch_reading_to_alert_seconds_count"] == 1
    assert got['meterwatch_reading_to_alert_seconds_bucket{le="0.1"}'] == 0
    assert got['meterwatch_reading_to_alert_seconds_bucket{le="0.15"}'] == 1
    assert "meterwatch_end_to_end_latency_seconds_count" not in got  # split in the two above


def test_a_partition_no_longer_assigned_loses_its_lag_series():
    metrics = WorkerMetrics()
    metrics.set_lag({("meter.a", 0): 5, ("meterwatch-readings", 1): 2})
    metrics.set_lag({("meterwatch-readings", 1): 0, ("meterwatch-readings", 2): 7})
    lags = {k: v for k, v in samples(metrics.render().decode()).items()
            if k.startswith("meterwatch_consumer_lag")}
    assert lags == {'meterwatch_consumer_lag{partition="1",topic="meterwatch-readings"}': 0,
                    'meterwatch_consumer_lag{partition="2",topic="meterwatch-readings"}': 7}


@pytest.fixture
def ctx(tmp_path):
    """A worker's context as create_app builds it (no broker is asked for anything)."""
    app = create_app(KafkaSettings(), WorkerSettings(data_dir=tmp_path),
                     Detector(Bundle.load(DEFAULT_BUNDLE)), ["meter.a", "meter.b"])
    return app.meterwatch


def test_report_lag_covers_every_assigned_partition_of_the_consumed_topics(ctx):
    readings, feedback = ctx.worker.readings_topic, ctx.worker.feedback_topic
    assert timers.consumed_topics(ctx) == {"meter.a", "meter.b", readings, feedback}
    assignment = {TP("meter.a", 0), TP("meter.a", 1), TP("meter.b", 0), TP(feedback, 0),
                  *(TP(readings, p) for p in range(4)),
                  TP("meterwatch-meter-state-changelog", 0)}  # restored from, not consumed
    high = {("meter.a", 0): 120, ("meter.a", 1): 0, ("meter.b", 0): 40, (feedback, 0): 3,
            (readings, 0): 10, (readings, 1): 50, (readings, 2): 8, (readings, 3): None,
            ("meterwatch-meter-state-changelog", 0): 999}
    ctx.last_offsets.update({("meter.a", 0): 99, (readings, 0): 9, (readings, 1): 20,
                             ("meter.gone", 0): 5})  # the last one moved to another worker
    asked = []

    async def committed(keys):
        asked.append(keys)
        return {(feedback, 0): 3, ("meter.b", 0): 30}  # readings 2: the broker answered nothing

    asyncio.run(timers.report_lag(ctx, assignment, lambda tp: high[(tp.topic, tp.partition)],
                                  committed))
    assert asked == [sorted([("meter.b", 0), (feedback, 0), (readings, 2)])]  # the untaken only
    lags = {k: v for k, v in samples(ctx.metrics.render().decode()).items()
            if k.startswith("meterwatch_consumer_lag")}
    assert lags == {
        'meterwatch_consumer_lag{partition="0",topic="meter.a"}': 20,  # took 99 of 0..119
        'meterwatch_consumer_lag{partition="1",topic="meter.a"}': 0,  # empty
        'meterwatch_consumer_lag{partition="0",topic="meter.b"}': 10,  # committed 30 of 40
        f'meterwatch_consumer_lag{{partition="0",topic="{feedback}"}}': 0,
        f'meterwatch_consumer_lag{{partition="0",topic="{readings}"}}': 0,
        f'meterwatch_consumer_lag{{partition="1",topic="{readings}"}}': 29,
    }  # readings 3 (high-water mark not fetched yet) and 2 (no answer): no figure, not a guess
    assert ("meter.gone", 0) not in ctx.last_offsets


def test_a_broker_that_does_not_answer_costs_only_the_untaken_partitions(ctx):
    readings = ctx.worker.readings_topic
    ctx.last_offsets[(readings, 0)] = 4

    async def committed(keys):
        raise OSError("broker gone")

    with pytest.raises(OSError):  # the timer's guard counts it and runs again next tick
        asyncio.run(timers.report_lag(ctx, [TP(readings, 0), TP(readings, 1)],
                                      lambda tp: 10, committed))
    lags = {k: v for k, v in samples(ctx.metrics.render().decode()).items()
            if k.startswith("meterwatch_consumer_lag")}
    assert lags == {f'meterwatch_consumer_lag{{partition="0",topic="{readings}"}}': 5}
