"""Feedback a worker and a recalibration can trust: malformed or deep verdicts are dead-lettered
(the feedback agent under Faust's `test_context()`), and a limit moves only on verdicts of enough
distinct judges and by a bounded step per run (on a copy of the default bundle)."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest

from stream_app.core.errors import ConfigError, InputError
from stream_app.core.model_bundle import Bundle
from stream_app.core.scoring import Detector
from stream_app.stream import feedback
from stream_app.stream.app import create_app
from stream_app.stream.context import Outputs
from stream_app.stream.dead_letters import DeadLetter
from stream_app.stream.feedback import (
    MAX_FEEDBACK_BYTES,
    Verdict,
    apply_to_bundle,
    decode_feedback,
    encode_feedback,
    recalibrate_limits,
)
from stream_app.stream.settings import KafkaSettings, WorkerSettings

DEFAULT_BUNDLE = Path(__file__).resolve().parents[2] / "onnx_models" / "default"
DEEP = b"[" * 100_000 + b"]" * 100_000  # the verdict that raised RecursionError in the agent
DEEP_SMALL = b"[" * 2_000 + b"]" * 2_000  # under the size limit, still too deep for json


def verdict_bytes(**fields) -> bytes:
    return json.dumps({"alert_id": "a1", "verdict": "false", "who": "alice",
                       "at": "2026-12-01T08:00:00+00:00", **fields}).encode()


@pytest.mark.parametrize(("raw", "code"), [
    (DEEP, "too_large"),
    (DEEP_SMALL, "malformed_json"),
    (verdict_bytes()[:-1] + b', "note": ' + b"[" * 1_500 + b"]" * 1_500 + b"}", "malformed_json"),
    (b"", "empty"),
    (b"\xff\xfe", "not_utf8"),
    (b"{", "malformed_json"),
    (b'["a1", "false"]', "not_an_object"),
    (b'{"alert_id": "a1", "verdict": "false"}', "missing_field:who"),
    (verdict_bytes(who=7), "wrong_type:who"),
    (verdict_bytes(who="   "), "bad_field:who"),
    (verdict_bytes(who="alice\n2026-12-01 INFO forged log line"), "bad_field:who"),
    (verdict_bytes(who="a" * 129), "bad_field:who"),
    (verdict_bytes(alert_id={"x": 1}), "wrong_type:alert_id"),
    (verdict_bytes(alert_id="../../a1"), "bad_field:alert_id"),
    (verdict_bytes(verdict="maybe"), "bad_field:verdict"),
    (verdict_bytes(verdict=["false"]), "wrong_type:verdict"),
    (verdict_bytes(at="yesterday"), "bad_field:at"),
    (verdict_bytes(at="2026-12-01T08:00:00"), "bad_field:at"),  # no UTC offset
    (verdict_bytes(at=12), "wrong_type:at"),
])
def test_a_malformed_verdict_is_one_input_error_with_its_reason(raw, code):
    with pytest.raises(InputError) as info:
        decode_feedback(raw)
    assert str(info.value).startswith(code + ":")


def test_a_good_verdict_decodes_and_encode_refuses_what_the_worker_would():
    v = decode_feedback(verdict_bytes(verdict="FALSE", who=" Alice ", note={"any": "thing"}))
    assert (v.alert_id, v.verdict, v.who, v.at) == ("a1", "false", "Alice",
                                                     "2026-12-01T08:00:00+00:00")
    assert len(verdict_bytes()) < MAX_FEEDBACK_BYTES // 20
    with pytest.raises(InputError, match="bad_field:who"):
        encode_feedback("a1", "false", "")


def test_deep_and_malformed_verdicts_go_to_the_dead_letter_topic_and_the_agent_goes_on(tmp_path):
    app = create_app(KafkaSettings(), WorkerSettings(data_dir=tmp_path),
                     Detector(Bundle.load(DEFAULT_BUNDLE)), ["meter.feedback-test"])
    ctx = app.meterwatch
    ctx.outputs = Outputs(readings=app.channel(), alerts=app.channel(), dlq=app.channel())
    dlq = ctx.outputs.dlq.clone(is_iterator=True)
    sent = [(b"a1", DEEP), (b"a2", DEEP_SMALL), (b"a3", b'{"alert_id": "a3", "verdict": "true"}'),
            encode_feedback("a4", "false", "alice")]

    async def run():
        async with app.meterwatch_agents["record_feedback"].test_context() as agent:
            for key, value in sent:
                await agent.put(value, key=key)
            letters = []
            while True:
                try:
                    letters.append(DeadLetter.from_json((await dlq.get(timeout=0.5)).value))
                except TimeoutError:
                    return letters

    letters = asyncio.run(run())
    assert [(d.reason, d.detail.split(":")[0], d.original_key()) for d in letters] == [
        ("bad_feedback", "too_large", b"a1"), ("bad_feedback", "malformed_json", b"a2"),
        ("bad_feedback", "missing_field", b"a3")]
    assert [d.original_value() for d in letters] == [raw for _, raw in sent[:3]]
    assert all(d.offset is not None and not d.truncated for d in letters)
    metrics = ctx.metrics.render().decode()
    assert 'meterwatch_feedback_total{verdict="invalid"} 3.0' in metrics
    assert 'meterwatch_feedback_total{verdict="false"} 1.0' in metrics  # the agent went on


def alerts(*zs, category="industrial"):
    return {f"a{i}": {"category": category, "zscore": z} for i, z in enumerate(zs)}


def test_four_forged_false_verdicts_from_one_judge_no_longer_move_the_limit():
    """The attack measured for issue 14: four "false" verdicts under one self-declared name on
    the default bundle's industrial alerts. The target is still 6.0 (what used to be written);
    the limit holds, and spelling the name four ways makes no second judge."""
    names = ("mallory", "Mallory", " MALLORY", "\uff4d\uff41\uff4c\uff4c\uff4f\uff52\uff59")
    forged = [Verdict(f"a{i}", "false", who, "") for i, who in enumerate(names)]
    old = dict(Bundle.load(DEFAULT_BUNDLE).manifest.decision.limits)
    assert old["industrial"] == 3.0
    new, report = recalibrate_limits(old, alerts(4.5, 5.5, 6.5, 7.5), forged)
    entry = report["categories"]["industrial"]
    assert new == old
    assert (entry["target"], entry["new"], entry["judges"]["false"]) == (6.0, 3.0, ["mallory"])
    assert entry["held"] == "a rise needs false verdicts from 2 judges, has 1"
    assert [row["who"] for row in report["verdicts"]] == list(names)  # each author on record


def test_honest_verdicts_from_two_judges_move_the_limit_stepwise_with_authors_audited(tmp_path):
    path = tmp_path / "bundle"
    shutil.copytree(DEFAULT_BUNDLE, path)
    opened = alerts(4.0, 4.6, 5.0, 6.0, 7.0)  # false below 5.5, true above: the target is 5.5
    said = [Verdict("a0", "false", "alice", ""), Verdict("a1", "false", "bob", ""),
            Verdict("a2", "false", "alice", ""), Verdict("a3", "true", "bob", ""),
            Verdict("a4", "true", "alice", "")]
    steps = []
    for _ in range(4):
        old = dict(Bundle.load(path).manifest.decision.limits)
        new, report = recalibrate_limits(old, opened, said)
        if new != old:
            apply_to_bundle(path, new, report, "shift-lead")
        steps.append(Bundle.load(path).limits.limit("industrial"))
    assert steps == [3.75, 4.688, 5.5, 5.5]  # x1.25 a run, then the target; then no change
    assert all(b / a <= 1.25 + 1e-3 for a, b in zip([3.0, *steps], steps, strict=False))
    audit = Bundle.load(path).manifest.audit
    assert [e["categories"]["industrial"]["new"] for e in audit[-3:]] == [3.75, 4.688, 5.5]
    last = audit[-1]
    assert last["by"] == "shift-lead" and last["rules"]["min_judges"] == 2
    assert last["categories"]["industrial"]["judges"] == {"true": ("alice", "bob"),
                                                          "false": ("alice", "bob")}
    assert {(r["alert_id"], r["verdict"], r["who"]) for r in last["verdicts"]} == {
        (v.alert_id, v.verdict, v.who) for v in said}


def test_a_fall_needs_true_verdicts_from_two_judges():
    opened = alerts(2.0, 2.2, 2.4, category="general")  # flagged under an earlier, lower limit
    alice = [Verdict(f"a{i}", "true", "alice", "") for i in range(3)]
    new, report = recalibrate_limits({"general": 3.1}, opened, alice)
    assert new == {"general": 3.1} and report["categories"]["general"]["target"] == 1.999
    new, _ = recalibrate_limits({"general": 3.1}, opened, [*alice, Verdict("a1", "true", "bob", "")])
    assert new == {"general": 2.48}  # 3.1 / 1.25, toward 1.999


def test_disputed_alerts_count_for_neither_side_and_ignore_withdraws():
    opened = alerts(4.0, 4.5, 5.0)
    honest = [Verdict(f"a{i}", "false", who, "") for i in range(3) for who in ("alice", "bob")]
    new, report = recalibrate_limits({"industrial": 3.0}, opened, honest)
    assert new == {"industrial": 3.75}
    disputed = [*honest, *(Verdict(f"a{i}", "true", "mallory", "") for i in range(3))]
    new, report = recalibrate_limits({"industrial": 3.0}, opened, disputed)
    assert new == {"industrial": 3.0} and report["categories"]["industrial"]["disputed"] == 3
    withdrawn = [*honest, Verdict("a2", "ignore", "bob", ""), Verdict("a1", "ignore", "bob", "")]
    _, report = recalibrate_limits({"industrial": 3.0}, opened, withdrawn)
    assert report["categories"]["industrial"]["judges"]["false"] == ["alice", "bob"]
    new, report = recalibrate_limits({"industrial": 3.0}, opened, [*withdrawn, Verdict(
        "a0", "ignore", "bob", "")])
    assert new == {"industrial": 3.0}  # bob withdrew every verdict: alice alone
    assert report["categories"]["industrial"]["judges"]["false"] == ["alice"]


def test_the_rules_come_from_the_settings_and_the_audit_list_is_bounded(monkeypatch):
    opened = {**alerts(4.0, 4.5, 5.0), **{f"g{i}": {"category": "general", "zscore": 3.5}
                                          for i in range(3)}}
    mine = [Verdict(f"a{i}", "false", "alice", "") for i in range(3)]
    mine += [Verdict(f"g{i}", "false", "alice", "") for i in range(3)]
    new, report = recalibrate_limits({"industrial": 3.0, "general": 3.1}, opened, mine,
                                     min_judges=1, max_step=6.0)
    assert new == {"industrial": 5.0, "general": 3.5} and report["rules"]["max_step"] == 6.0
    monkeypatch.setattr(feedback, "MAX_AUDITED_VERDICTS", 2)
    _, report = recalibrate_limits({"industrial": 5.0, "general": 3.1}, opened, mine, min_judges=1)
    assert [r["category"] for r in report["verdicts"]] == ["general", "general"]  # moved first
    assert report["verdicts_not_listed"] == 4
    defaults = WorkerSettings.from_env({})
    assert (defaults.feedback_min_judges, defaults.feedback_max_step) == (2, 1.25)
    read = WorkerSettings.from_env({"MW_FEEDBACK_MIN_JUDGES": "3", "MW_FEEDBACK_MAX_STEP": "1.5"})
    assert (read.feedback_min_judges, read.feedback_max_step) == (3, 1.5)
    for name, raw in (("MW_FEEDBACK_MIN_JUDGES", "0"), ("MW_FEEDBACK_MAX_STEP", "1"),
                      ("MW_FEEDBACK_MAX_STEP", "7"), ("MW_FEEDBACK_MAX_STEP", "nan")):
        with pytest.raises(ConfigError, match=name):
            WorkerSettings.from_env({name: raw})
