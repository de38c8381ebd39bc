"""The worker's agents without a broker: Faust's `agent.test_context()`, a memory:// table, and
in-memory channels in place of the output topics (the middle tier between the pure units and
tests/integration)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import orjson
import pytest
from reference.offline_alerts import expected_alerts

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
    state = json.loads(w.ctx.table.get(b"m-1"))
    assert len(state["h"]["values"]) == 5
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
