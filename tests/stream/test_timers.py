"""Timers and background tasks survive their own failures: one log line, a counter, a retry."""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from pathlib import Path

import pytest

from stream_app.core.model_bundle import Bundle
from stream_app.core.scoring import Detector
from stream_app.devtools.brokers import free_port
from stream_app.stream import timers
from stream_app.stream.app import create_app
from stream_app.stream.guard import TaskGuard
from stream_app.stream.metrics import WorkerMetrics
from stream_app.stream.settings import KafkaSettings, WorkerSettings

DEFAULT_BUNDLE = Path(__file__).resolve().parents[2] / "onnx_models" / "default"


def failures(metrics: WorkerMetrics, task: str) -> float:
    return metrics.task_failures.labels(task)._value.get()


def test_a_failing_task_is_counted_logged_once_and_run_again(caplog):
    metrics = WorkerMetrics()
    guard = TaskGuard("flaky", metrics.task_failures, 2.0)
    outcomes = iter([OSError("broker gone"), OSError("broker gone"), None, KeyError("bytes")])
    ran = []

    async def tick():
        ran.append(1)
        outcome = next(outcomes)
        if outcome is not None:
            raise outcome

    async def run() -> list[bool]:
        return [await guard.run(tick) for _ in range(4)]

    with caplog.at_level(logging.INFO, logger="meterwatch.worker"):
        assert asyncio.run(run()) == [False, False, True, False]
    assert len(ran) == 4  # every tick ran: a failure only ends that tick
    assert failures(metrics, "flaky") == 3
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["flaky failed (retried every 2 s): OSError: broker gone",
                     "flaky works again after 2 failed run(s)",
                     "flaky failed (retried every 2 s): KeyError: 'bytes'"]
    assert all(r.exc_info is None for r in caplog.records)  # one line each, no traceback
    text = metrics.render().decode()
    assert 'meterwatch_task_failures_total{task="flaky"} 3.0' in text


def test_cancellation_is_not_a_failure():
    metrics = WorkerMetrics()
    guard = TaskGuard("stopping", metrics.task_failures, 1.0)

    async def tick():
        raise asyncio.CancelledError  # the worker stopping: must propagate

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(guard.run(tick))
    assert failures(metrics, "stopping") == 0


@pytest.fixture
def app_without_broker(tmp_path, monkeypatch):
    """A worker's app whose broker address answers nothing (a closed local port)."""
    monkeypatch.setattr(timers, "LIST_TOPICS_TIMEOUT_S", 1.0)
    kafka = KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}")
    worker = WorkerSettings(data_dir=tmp_path)
    return create_app(kafka, worker, Detector(Bundle.load(DEFAULT_BUNDLE)), ["meter.a"])


def test_topic_discovery_without_a_broker_fails_its_tick_not_the_worker(app_without_broker,
                                                                        caplog):
    """The failure seen in a broker outage: list_topics times out ('Failed to get metadata')."""
    app = app_without_broker
    discover = app.meterwatch_timers["discover_topics"]

    async def two_ticks():
        return [await discover.run_once(), await discover.run_once()]

    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="meterwatch.worker"):
        assert asyncio.run(two_ticks()) == [False, False]
    assert time.monotonic() - started < 10
    assert failures(app.meterwatch.metrics, "discover_topics") == 2
    (line,) = [r.getMessage() for r in caplog.records if r.name == "meterwatch.worker"]
    assert line.startswith("discover_topics failed (retried every 10 s): KafkaException")
    assert list(app.meterwatch.source.topics) == ["meter.a"]  # nothing added, nothing lost


def test_every_timer_is_guarded(app_without_broker):
    assert set(app_without_broker.meterwatch_timers) == {
        "check_silence", "discover_topics", "reload_bundle", "report_lag"}
    for timer in app_without_broker.meterwatch_timers.values():
        assert timer.guard.name == timer.name and timer.guard.interval_s == timer.interval_s


def test_a_reload_switches_the_bundle_and_its_info_metric(tmp_path):
    """reload_bundle's tick, for real: a new version written into the bundle folder is verified,
    switched to, counted, and meterwatch_bundle_info names it instead of the old one."""
    from dataclasses import replace

    from stream_app.core.model_bundle import read_manifest, write_manifest

    bundle = tmp_path / "bundle"
    shutil.copytree(DEFAULT_BUNDLE, bundle)
    old = read_manifest(bundle)
    app = create_app(KafkaSettings(), WorkerSettings(data_dir=tmp_path, model_dir=bundle),
                     Detector(Bundle.load(bundle)), ["meter.a"])
    ctx = app.meterwatch
    info = f'meterwatch_bundle_info{{name="{old.name}",version="{old.version}"}} 1.0'
    assert info in ctx.metrics.render().decode()
    write_manifest(bundle, replace(old, version=f"{old.version}-retrained"))

    assert asyncio.run(app.meterwatch_timers["reload_bundle"].run_once())
    text = ctx.metrics.render().decode()
    assert ctx.scorer.bundle.version == f"{old.name}@{old.version}-retrained"
    assert f'version="{old.version}-retrained"' in text and info not in text
    assert "meterwatch_bundle_reloads_total 1.0" in text
    assert failures(ctx.metrics, "reload_bundle") == 0
