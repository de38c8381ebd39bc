"""The worker's agents without a broker: Faust's `agent.test_context()`, a memory:// table, and
in-memory channels in place of the output topics (the middle tier between the pure units and
tests/integration)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import orjson
import pytest
from reference.offline_alerts import expected_alerts

from stream_app.core.meter_state import MeterState
from stream_app.core.model_bundle import Bundle
from stream_app.core.records import Reading, decode_reading, encode_reading
from stream_app.core.scoring import Detector
from stream_app.stream.app import create_app
from stream_app.stream.context import Outputs
from stream_app.stream.dead_letters import DeadLetter
from stream_app.stream.feedback import encode_feedback
from stream_app.stream.rekey import SOURCE, internal_partition
from stream_app.stream.settings import KafkaSettings, WorkerSettings

DEFAULT_BUNDLE = Path(__file__).resolve().parents[2] / "onnx_models" / "default"
T0 = 1_736_121_600_000  # 2025-01-06, 15-minute steps
INPUT = "meter.agent-test"


@pytest.fixture(scope="module")
def bundle():
    return Bundle.load(DEFAULT_BUNDLE)


class Worker:
    """An app as `create_app` builds it, its outputs replaced by channels we can read."""

    def __init__(self, bundle, data_dir: Path, **settings):
        worker = WorkerSettings(batch_max_wait_s=0.05, data_dir=data_dir, **settings)
        self.app = create_app(KafkaSettings(), worker, Detector(bundle), [INPUT])
        self.ctx = self.app.meterwatch
        app = self.app
        self.ctx.outputs = Outputs(readings=app.channel(), alerts=app.channel(), dlq=app.channel())
        # a channel delivers to its subscribers only; keep one per output
        self.out = {name: getattr(self.ctx.outputs, name).clone(is_iterator=True)
                    for name in ("readings", "alerts", "dlq")}

    def agent(self, name: str):
        return self.app.meterwatch_agents[name].test_context()

    async def until(self, done, timeout_s: float = 120.0) -> None:
        """Wait until `done()` holds: the agents have processed what was put (a put returns
        once its event is taken, not processed)."""
        deadline = time.monotonic() + timeout_s
        while not done():
            assert time.monotonic() < deadline, "the agent did not finish in time"
            await asyncio.sleep(0.05)

    async def drain(self, name: str, idle_s: float = 0.5) -> list:
        """Every event on an output until none came for idle_s."""
        got = []
        while True:
            try:
                got.append(await self.out[name].get(timeout=idle_s))
            except TimeoutError:
                return got

    def metric(self, name: str) -> float:
        text = self.ctx.metrics.render().decode()
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith(name) and "_created" not in line)


def readings_of(meter: str, n: int, start: int = 0) -> list[tuple[bytes, bytes]]:
    return [encode_reading(meter, T0 + (start + i) * 900_000, 10.0 + (i % 7), "industrial")
            for i in range(n)]


def test_ingest_rekeys_valid_readings_and_dead_letters_the_rest(bundle, tmp_path):
    sent = readings_of("m-1", 3) + readings_of("m-2", 2)

    async def run():
        w = Worker(bundle, tmp_path)
        async with w.agent("ingest") as agent:
            for key, value in sent:
                await agent.put(value, key=key)
            await agent.put(b"{not json", key=b"m-1")
            await w.until(lambda: w.metric("meterwatch_readings_invalid_total") == 1)
            return w, await w.drain("readings"), await w.drain("dlq")

    w, internal, letters = asyncio.run(run())
    lines = [line for event in internal for line in event.value.split(b"\n")]
    assert sorted(lines) == sorted(decode_reading(v, key=k).to_json() for k, v in sent)
    for event in internal:  # one message per internal partition, with the source positions
        source = orjson.loads(event.headers[SOURCE])
        assert len(source["o"]) == len(event.value.split(b"\n"))
        assert source["s"] == [f"{INPUT}:0"]
        meters = {Reading.from_json(line).meter_id for line in event.value.split(b"\n")}
        assert len({internal_partition(m, 4) for m in meters}) == 1
    (letter,) = [DeadLetter.from_json(e.value) for e in letters]
    assert letter.reason == "malformed_json" and letter.topic == INPUT
    assert letter.original_value() == b"{not json" and letter.original_key() == b"m-1"
    assert w.metric("meterwatch_readings_in_total") == len(sent) + 1
    assert w.metric('meterwatch_readings_invalid_total{reason="malformed_json"}') == 1


def internal_message(readings: list[tuple[bytes, bytes]], first_offset: int) -> tuple[bytes, dict]:
    """A message of the internal topic as ingest writes it (rekey.Group), from one source."""
    lines = [decode_reading(v, key=k).to_json() for k, v in readings]
    header = {"s": [f"{INPUT}:0"], "i": [0] * len(lines),
              "o": list(range(first_offset, first_offset + len(lines))),
              "t": [T0] * len(lines)}
    return b"\n".join(lines), {SOURCE: orjson.dumps(header)}


def test_score_keeps_state_and_recognises_a_redelivered_reading(bundle, tmp_path):
    async def run():
        w = Worker(bundle, tmp_path)
        async with w.agent("score") as agent:
            value, headers = internal_message(readings_of("m-1", 5), 0)
            await agent.put(value, headers=headers)
            again, headers_again = internal_message(readings_of("m-1", 1, start=4), 4)
            await agent.put(again, headers=headers_again)  # the last reading, read again
            await w.until(lambda: w.metric("meterwatch_readings_outcome_total") == 6)
            return w

    w = asyncio.run(run())
    state = MeterState.from_bytes(w.ctx.table.get(b"m-1"))
    assert len(state.history["values"]) == 5
    assert w.metric('meterwatch_readings_outcome_total{outcome="warming_up"}') == 5
    assert w.metric('meterwatch_readings_outcome_total{outcome="duplicate"}') == 1
    assert w.metric("meterwatch_meters") == 0  # the gauge is the lag timer's (not run here)


def test_score_sends_the_alerts_offline_score_gives(bundle, sim_series, tmp_path):
    series = next(s for s in sim_series[0] if expected_alerts(bundle, [s]))
    expected = expected_alerts(bundle, [series])

    async def run():
        w = Worker(bundle, tmp_path)
        readings = [encode_reading(series.meter_id, int(t) * 1000, float(v), series.category)
                    for t, v in zip(series.timestamps, series.values, strict=True)]
        async with w.agent("score") as agent:
            for start in range(0, len(readings), 200):
                value, headers = internal_message(readings[start:start + 200], start)
                await agent.put(value, headers=headers)
            await w.until(lambda: w.metric("meterwatch_readings_outcome_total") == len(readings))
            return w, await w.drain("alerts")

    w, alerts = asyncio.run(run())
    got = [json.loads(e.value) for e in alerts]
    assert {(a["alert_id"], a["status"]) for a in got if a["status"] != "update"} == expected
    assert all(e.key == series.meter_id.encode() for e in alerts)
    assert w.ctx.recent_alerts[0] == got[-1]  # the live page's list, newest first
    assert w.metric("meterwatch_readings_outcome_total") == len(series.values)


def test_a_line_that_is_not_a_reading_goes_to_the_dead_letters(bundle, tmp_path):
    async def run():
        w = Worker(bundle, tmp_path)
        async with w.agent("score") as agent:
            value, headers = internal_message(readings_of("m-1", 3), 0)
            lines = value.split(b"\n")
            lines[1] = b"{not a reading"  # only a bug could write this: still not lost
            await agent.put(b"\n".join(lines), headers=headers)
            await w.until(lambda: w.metric("meterwatch_readings_outcome_total") == 2)
            return w, await w.drain("dlq")

    w, letters = asyncio.run(run())
    (letter,) = [DeadLetter.from_json(e.value) for e in letters]
    assert letter.reason.startswith("internal_error")
    assert letter.original_value() == b"{not a reading"
    assert w.metric('meterwatch_readings_invalid_total{reason="internal_error"}') == 1
    assert w.metric('meterwatch_readings_outcome_total{outcome="warming_up"}') == 2


def test_feedback_is_counted_and_a_bad_verdict_dead_lettered(bundle, tmp_path):
    async def run():
        w = Worker(bundle, tmp_path)
        async with w.agent("record_feedback") as agent:
            key, value = encode_feedback("a-1", "false", "alice")
            await agent.put(value, key=key)
            await agent.put(b'{"alert_id": "a-2", "verdict": "maybe"}', key=b"a-2")
            await w.until(lambda: w.metric("meterwatch_feedback_total") == 2)
            return w, await w.drain("dlq")

    w, letters = asyncio.run(run())
    (letter,) = [DeadLetter.from_json(e.value) for e in letters]
    assert letter.reason == "bad_feedback" and letter.original_key() == b"a-2"
    assert w.metric('meterwatch_feedback_total{verdict="false"}') == 1
    assert w.metric('meterwatch_feedback_total{verdict="invalid"}') == 1
    assert w.metric("meterwatch_readings_invalid_total") == 0  # not a reading


def producer_bytes(meter: str, step: int, value: float, *, off_s: int = 0) -> bytes:
    """A reading as a producer may send it: local time with its offset, spaces, an extra field
    (the compact line on the internal topic differs from it)."""
    ts = time.strftime("%Y-%m-%dT%H:%M:%S+01:00",
                       time.gmtime(T0 // 1000 + step * 900 + off_s + 3600))
    return json.dumps({"meter_id": meter, "timestamp": ts, "value": value,
                       "category": "industrial", "note": "as sent"}, indent=1).encode()


def test_a_reading_refused_after_the_hop_is_dead_lettered_as_it_came(bundle, tmp_path):
    """ingest -> internal topic -> score: the meter window's refusals name the input event
    (topic, partition, offset), its key (the meter id, none or empty) and its original bytes."""
    good = [(producer_bytes("m-1", s, 10.0 + s), b"m-1") for s in range(8)]
    refused = [  # (value, key, partition, reason code)
        (producer_bytes("m-1", 2, 99.0), b"m-1", 2, "out_of_order"),
        (producer_bytes("m-1", 7, 42.0), None, 1, "conflicting_duplicate"),
        (producer_bytes("m-1", 8, 1.0, off_s=420), b"", 3, "off_grid"),
        (producer_bytes("m-1", 6, 3.0), b"m-1", 2, "conflicting_duplicate"),
    ]

    async def run():
        w = Worker(bundle, tmp_path)
        async with w.agent("ingest") as ingest:
            for value, key in good:
                await ingest.put(value, key=key, partition=2)
            for value, key, partition, _ in refused:
                await ingest.put(value, key=key, partition=partition)
            internal = []
            while len(internal) < len(good) + len(refused):  # readings, not messages
                event = await w.out["readings"].get(timeout=60)
                internal += [event] * len(event.value.split(b"\n"))
        async with w.agent("score") as score:
            for event in dict.fromkeys(internal):  # each message once, in order
                await score.put(event.value, headers=event.headers)
            await w.until(lambda: w.metric("meterwatch_readings_outcome_total")
                          == len(good) + len(refused))
        return w, await w.drain("dlq")

    w, letters = asyncio.run(run())
    letters = [DeadLetter.from_json(e.value) for e in letters]
    assert len(letters) == len(refused)
    offsets = {value: offset for offset, (value, *_) in enumerate(good + refused)}
    for letter, (value, key, partition, code) in zip(letters, refused, strict=True):
        assert letter.reason == code
        assert (letter.topic, letter.partition, letter.offset) == (INPUT, partition, offsets[value])
        assert letter.original_key() == key and letter.original_value() == value
        assert letter.original_sha256 == hashlib.sha256(value).hexdigest()
        assert letter.original_size == len(value) and not letter.truncated
    assert w.metric('meterwatch_readings_outcome_total{outcome="refused"}') == len(refused)


class HeldAcknowledgements:
    """The alerts channel as a broker that has not answered yet: each send is delivered to the
    channel, and its acknowledgement waits until `release()`."""

    def __init__(self, channel):
        self.channel = channel
        self.held: list[asyncio.Future] = []
        self.released = False

    async def send(self, **message):
        await self.channel.send(**message)
        ack = asyncio.get_running_loop().create_future()
        if self.released:
            ack.set_result(None)
        self.held.append(ack)
        return ack

    def release(self) -> None:
        self.released = True
        for ack in self.held:
            if not ack.done():
                ack.set_result(None)

    def clone(self, **kwargs):
        return self.channel.clone(**kwargs)


def test_a_state_is_written_only_once_its_alerts_are_acknowledged(bundle, sim_series, tmp_path):
    """The state records the source offsets it applied (a reading read again after a crash is
    a duplicate), so it must not outlive an alert it implies: while the broker has not
    acknowledged a batch's alert, the meter's state is the one before that batch."""
    series = next(s for s in sim_series[0] if expected_alerts(bundle, [s]))
    readings = [encode_reading(series.meter_id, int(t) * 1000, float(v), series.category)
                for t, v in zip(series.timestamps, series.values, strict=True)]
    where = f"{INPUT}:0"

    async def run():
        w = Worker(bundle, tmp_path)
        held = HeldAcknowledgements(w.ctx.outputs.alerts)
        w.ctx.outputs.alerts = held
        async with w.agent("score") as agent:
            for start in range(0, len(readings), 200):
                value, headers = internal_message(readings[start:start + 200], start)
                await agent.put(value, headers=headers, wait=False)
            await w.until(lambda: held.held)
            waiting = await w.drain("alerts", idle_s=0.2)  # sent, not acknowledged
            opened = min(int(np.flatnonzero(series.timestamps * 1000 == ms_of(e))[0])
                         for e in waiting)
            state = w.ctx.table.get(series.meter_id.encode())
            before = -1 if state is None else MeterState.from_bytes(state).offsets[where]
            held.release()
            await w.until(lambda: w.metric("meterwatch_readings_outcome_total") == len(readings))
            after = MeterState.from_bytes(w.ctx.table.get(series.meter_id.encode())).offsets[where]
            return opened, before, after, waiting + await w.drain("alerts")

    opened, before, after, alerts = asyncio.run(run())
    assert before < opened, (before, opened)  # the alert's batch is not in the state yet
    assert after == len(readings) - 1
    got = [json.loads(e.value) for e in alerts]
    assert {(a["alert_id"], a["status"]) for a in got if a["status"] != "update"} \
        == expected_alerts(bundle, [series])


def ms_of(alert_event) -> int:
    """Epoch ms of an alert message's last_seen."""
    from datetime import datetime

    text = json.loads(alert_event.value)["last_seen"].replace("Z", "+00:00")
    return int(datetime.fromisoformat(text).timestamp() * 1000)
