"""The Faust internals stream_app/stream/patches.py reaches into are where it expects them.

An upgrade of faust-streaming that moves one fails here, by name, before a worker misbehaves."""

from __future__ import annotations

import contextvars
import inspect

import faust
from faust.streams import Stream, _current_event
from faust.transport.conductor import Conductor
from faust.transport.consumer import Consumer, TransactionManager
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

from stream_app.stream.patches import FAUST_VERSION


def test_the_patched_release_is_the_installed_one():
    assert faust.__version__ == FAUST_VERSION, (
        f"faust-streaming {faust.__version__} installed, patches written for {FAUST_VERSION}: "
        "review stream_app/stream/patches.py and update FAUST_VERSION")


def test_every_internal_a_patch_touches_exists():
    assert isinstance(_current_event, contextvars.ContextVar)
    assert isinstance(Conductor._resubscribe_sleep_lock_seconds, float)
    assert callable(Conductor._flag_changes)
    assert "transport" in inspect.signature(AIOKafkaConsumerThread._create_worker_consumer).parameters
    assert list(inspect.signature(Stream.take_events).parameters) == ["self", "max_", "within"]
    assert "transactional_id" in inspect.signature(TransactionManager.send).parameters
    assert list(inspect.signature(TransactionManager.commit).parameters) == [
        "self", "offsets", "start_new_transaction"]
    assert inspect.iscoroutinefunction(Consumer._commit_tps)
    assert list(inspect.signature(Consumer._commit_tps).parameters) == [
        "self", "tps", "start_new_transaction"]
