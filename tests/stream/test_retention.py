"""Bounded memory: the TTL eviction, the meter cap and the silence timer, on the real agents.

The score agent runs under Faust's `agent.test_context()` with a memory:// table (as in
test_agents.py); the silence timer is the worker's own `check_silence`, called with a wall clock
moved on instead of waiting an hour.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import orjson
import pytest
from reference.json_schema import schema_errors
from test_agents import INPUT, T0, Worker, internal_message, readings_of

from stream_app.core.meter_state import MeterState
from stream_app.core.model_bundle import Bundle
from stream_app.core.records import encode_reading
from stream_app.stream.context import WorkerContext
from stream_app.stream.dead_letters import DeadLetter
from stream_app.stream.retention import MeterPartitions, last_reading_ms
from stream_app.stream.timers import check_silence

DEFAULT_BUNDLE = Path(__file__).resolve().parents[2] / "onnx_models" / "default"
DAY_MS = 86_400_000
HOUR_S = 3600.0


@pytest.fixture(scope="module")
def bundle():
    return Bundle.load(DEFAULT_BUNDLE)


def assigned_of(ctx) -> set[tuple[str, int]]:
    """What the consumer is assigned in a worker: every internal partition."""
    return {(ctx.worker.readings_topic, p) for p in range(ctx.worker.partitions)}


def made_up(n: int, ts: int, prefix: str = "fake") -> list[tuple[bytes, bytes]]:
    return [encode_reading(f"{prefix}-{i:05d}", ts, 1.0, "industrial") for i in range(n)]


async def put_all(w: Worker, agent, readings, first_offset: int = 0, size: int = 1000) -> None:
    for start in range(0, len(readings), size):
        value, headers = internal_message(readings[start:start + size], first_offset + start)
        await agent.put(value, headers=headers)


def alerts_of(events) -> list[dict]:
    return [json.loads(e.value) for e in events]


def test_twenty_thousand_made_up_meters_leave_no_memory_behind_after_the_ttl(bundle, tmp_path):
    """The issue's case: 20,000 made-up meter ids each get state, silence timing and a
    partition entry. They go silent together: one grouped alert, not 20,000. Once a live meter
    moves stream time 31 days on (TTL 30 days), the timer evicts them all: the table, the
    tracker and the partition map hold the live meter alone again."""
    async def run():
        w = Worker(bundle, tmp_path)
        ctx = w.ctx
        async with w.agent("score") as agent:
            await put_all(w, agent, made_up(20_000, T0))
            await put_all(w, agent, readings_of("live", 1), first_offset=50_000)
            await w.until(lambda: w.metric("meterwatch_readings_outcome_total") == 20_001)
            assert len(ctx.table) == len(ctx.silence) == len(ctx.meter_partition) == 20_001
            now = time.time() + 4 * 900 + 60  # every meter silent (4 x its 900 s interval)
            silent_ticks = []
            for k in range(5):  # 5,000 deadlines decided a tick (DUE_PER_CHECK)
                started = time.perf_counter()
                await check_silence(ctx, assigned_of(ctx), now + k)
                silent_ticks.append(time.perf_counter() - started)
            silent_alerts = alerts_of(await w.drain("alerts"))
            # the live meter reports 31 days of stream time later: the others are beyond the TTL
            value, headers = internal_message(readings_of("live", 1, start=31 * 96), 50_001)
            await agent.put(value, headers=headers)
            await w.until(lambda: w.metric("meterwatch_readings_outcome_total") == 20_002)
            ticks = []
            for _ in range(42):  # 500 evicted a tick (EVICT_PER_TICK)
                started = time.perf_counter()
                await check_silence(ctx, assigned_of(ctx), time.time())
                ticks.append(time.perf_counter() - started)
            return w, silent_ticks, silent_alerts, alerts_of(await w.drain("alerts")), ticks

    w, silent_ticks, silent_alerts, expiry_alerts, ticks = asyncio.run(run())
    ctx = w.ctx
    print(f"\n20,000 made-up meters: silence ticks {', '.join(f'{t * 1000:.0f}' for t in silent_ticks)}"
          f" ms, {len(silent_alerts)} message(s) of {len({a['alert_id'] for a in silent_alerts})} "
          f"alert(s); eviction ticks {', '.join(f'{t * 1000:.0f}' for t in ticks)} ms")
    assert [(a["kind"], a["status"], a["meter_id"], a["meters"]["silent"])
            for a in silent_alerts] == [("meters_silent", "open", "site:-:-", 5_000),
                                        ("meters_silent", "update", "site:-:-", 10_000),
                                        ("meters_silent", "update", "site:-:-", 20_000)]
    # the 20,001st (the live meter, due last) joined without a message: not doubled again
    assert list(ctx.table.keys()) == [b"live"]
    assert "live" in ctx.silence and len(ctx.silence) == 1
    assert dict(ctx.meter_partition) == {"live": (ctx.worker.readings_topic, 0)}
    assert ctx.meter_partition.partitions() == 1
    assert sum(ctx.silence.heap_sizes()) <= 1 and ctx.silence.silent_count == 0
    assert w.metric("meterwatch_meters_evicted_total") == 20_000
    assert ctx.retention.count == 1
    # as they expire (500 a tick) the group's count halves a few times, then it resolves
    group = [a for a in expiry_alerts if a["kind"] == "meters_silent"]
    assert [a["status"] for a in group] == ["update"] * (len(group) - 1) + ["resolved"]
    assert len(group) <= 16
    others = [(a["kind"], a["meter_id"]) for a in expiry_alerts if a["kind"] != "meters_silent"]
    assert others == [("gap", "live")]  # its 31-day jump restarts its history
    resolved = group[-1]
    assert resolved["meters"]["expired"] == 20_000 and resolved["meters"]["peak"] == 20_001
    assert resolved["meters"]["back"] == 1  # the live meter, which was in the group too
    assert w.metric("meterwatch_silent_meters") == 0


def test_new_meters_beyond_the_cap_are_dead_lettered_never_dropped(bundle, tmp_path):
    sent = [r for i in range(8) for r in readings_of(f"m-{i}", 2)]  # m-0 ... m-7, 2 readings each

    async def run():
        w = Worker(bundle, tmp_path, max_meters=5)
        async with w.agent("score") as agent:
            await put_all(w, agent, sent)
            await w.until(lambda: w.metric("meterwatch_readings_outcome_total")
                          + w.metric("meterwatch_readings_invalid_total") == len(sent))
            letters = [e.value for e in await w.drain("dlq")]
            capped = w.metric("meterwatch_meter_cap_reached")
            w.ctx.retention.evict("m-0")  # one meter fewer: a new one gets in again
            value, headers = internal_message(readings_of("m-9", 1) + readings_of("m-1", 1, 2),
                                              100)
            await agent.put(value, headers=headers)
            await w.until(lambda: w.metric("meterwatch_readings_outcome_total") == 12)
            return w, letters, capped

    w, raw_letters, capped = asyncio.run(run())
    ctx = w.ctx
    schema = json.loads((Path(__file__).resolve().parents[2] / "docs" / "schemas"
                         / "dead-letter.schema.json").read_text())
    assert all(schema_errors(json.loads(raw), schema) == [] for raw in raw_letters)
    letters = [DeadLetter.from_json(raw) for raw in raw_letters]
    refused = {json.loads(letter.original_value())["meter_id"] for letter in letters}
    assert refused == {"m-5", "m-6", "m-7"} and len(letters) == 6
    assert {letter.reason for letter in letters} == {"meter_cap"}
    assert all("MW_MAX_METERS=5" in letter.detail for letter in letters)
    # the reading as it came, before the hop: its input topic and offset
    assert {letter.topic for letter in letters} == {INPUT}
    assert sorted(letter.offset for letter in letters) == list(range(10, 16))
    assert w.metric('meterwatch_readings_invalid_total{reason="meter_cap"}') == 6
    assert capped == 1
    # every reading accounted: 10 outcomes + 6 dead letters of the first 16, then 2 more outcomes
    assert w.metric("meterwatch_readings_outcome_total") == 12
    assert sorted(k.decode() for k in ctx.table.keys()) == ["m-1", "m-2", "m-3", "m-4", "m-9"]
    assert sorted(ctx.meter_partition) == ["m-1", "m-2", "m-3", "m-4", "m-9"]
    assert len(ctx.silence) == 5  # the refused were never timed for long
    assert w.metric("meterwatch_meter_cap_reached") == 1  # 5 again: full


def test_restored_meters_not_heard_from_are_swept_after_the_ttl(bundle, tmp_path):
    """A restarted worker finds meters in its table that it does not time (restored from the
    changelog): the sweep evicts those whose last reading is beyond the TTL and keeps the rest,
    a bounded slice of keys a tick; while Faust settles nothing goes."""
    async def run():
        w = Worker(bundle, tmp_path)
        async with w.agent("score") as agent:
            await put_all(w, agent, made_up(5_000, T0, "old"))
            await put_all(w, agent, made_up(10, T0 + 29 * DAY_MS, "recent"), 10_000)
            await put_all(w, agent, made_up(1, T0 + 31 * DAY_MS, "newest"), 20_000)
            await w.until(lambda: w.metric("meterwatch_readings_outcome_total") == 5_011)
        return w

    w = asyncio.run(run())
    old = w.ctx
    # the restarted worker: the same table, fresh memory-only maps
    ctx = WorkerContext(kafka=old.kafka, worker=old.worker, scorer=old.scorer, table=old.table,
                        outputs=old.outputs, source=old.source)
    assert len(ctx.silence) == 0 and len(ctx.table) == 5_011

    async def ticks(n: int, settling: bool = False) -> list[int]:
        examined = []
        for _ in range(n):
            await check_silence(ctx, assigned_of(ctx), time.time(), settling=settling)
            examined.append(ctx.retention.examined)
        return examined

    asyncio.run(ticks(5, settling=True))
    assert len(ctx.table) == 5_011  # recovering or rebalancing: no eviction
    # a first pass (3 ticks) learns stream time from the states, the second evicts (500 a
    # tick: EVICT_PER_TICK)
    examined = asyncio.run(ticks(14))
    assert max(examined) == 2_000  # SWEEP_KEYS a tick at most, whatever the table holds
    left = sorted(k.decode() for k in ctx.table.keys())
    assert left == sorted([f"recent-{i:05d}" for i in range(10)] + ["newest-00000"])
    assert ctx.silence.stream_ms == T0 + 31 * DAY_MS  # the newest state moved stream time
    assert ctx.retention.count == 11
    assert ctx.metrics.meters_evicted._value.get() == 5_000


def test_meter_partitions_forget_a_lost_partition_without_walking_every_meter():
    partitions = MeterPartitions()
    for i in range(1_000):
        partitions[f"m{i}"] = ("t", i % 4)
    partitions["m0"] = ("t", 1)  # moved
    assert partitions["m0"] is partitions["m1"]  # one shared tuple per partition
    lost = partitions.lose({("t", 1), ("t", 2), ("t", 3)})
    assert sorted(lost) == sorted(f"m{i}" for i in range(4, 1_000, 4))
    assert len(partitions) == 751 and partitions.partitions() == 3
    assert partitions.pop("m1") == ("t", 1) and partitions.pop("m1") is None
    assert partitions.lose({("t", 1), ("t", 2), ("t", 3)}) == []


def test_the_last_reading_is_read_from_the_state_or_none():
    state = MeterState({"last_ts": 1_736_121_600, "values": []}, 900, "general").to_bytes()
    assert last_reading_ms(state) == 1_736_121_600_000
    legacy = orjson.dumps({"h": {"last_ts": 1_736_121_600}, "a": None, "c": "general", "iv": 900})
    assert last_reading_ms(legacy) == 1_736_121_600_000  # the first layout, still read
    for raw in (None, b"", b"{not json", b"[]", b'{"h": {}}', b'{"h": {"last_ts": null}}'):
        assert last_reading_ms(raw) is None


def test_the_memory_settings_are_read_and_checked_once():
    from stream_app.core.errors import ConfigError
    from stream_app.stream.settings import WorkerSettings

    read = WorkerSettings.from_env({"MW_METER_TTL_S": "3600", "MW_MAX_METERS": "50000",
                                    "MW_SILENCE_GROUP_MIN": "25"})
    assert (read.meter_ttl_s, read.max_meters, read.silence_group_min) == (3600.0, 50_000, 25)
    default = WorkerSettings.from_env({})
    assert (default.meter_ttl_s, default.max_meters, default.silence_group_min) == (
        30 * 86_400.0, 200_000, 10)
    for name, raw in (("MW_METER_TTL_S", "59"), ("MW_METER_TTL_S", "nan"),
                      ("MW_MAX_METERS", "0"), ("MW_SILENCE_GROUP_MIN", "1")):
        with pytest.raises(ConfigError, match=name):
            WorkerSettings.from_env({name: raw})
