"""Operator feedback: verdict decoding, limit recalibration rules, audit trail in the bundle.
The trust rules (judges, step) and the agent's dead letters: tests/stream/test_feedback_trust.py."""

import json
import shutil

import pytest
from test_worker_kafka import run  # noqa: F401 (the fixture)

from stream_app.core.errors import InputError
from stream_app.core.model_bundle import Bundle
from stream_app.stream.dead_letters import DeadLetter
from stream_app.stream.feedback import (
    Verdict,
    apply_to_bundle,
    decode_feedback,
    encode_feedback,
    recalibrate_limits,
)


def alerts(*zs, category="industrial"):
    return {f"a{i}": {"category": category, "zscore": z} for i, z in enumerate(zs)}


def verdicts(*pairs):
    """Each verdict given alike by two judges (the default MW_FEEDBACK_MIN_JUDGES)."""
    return [Verdict(f"a{i}", v, who, "") for i, v in pairs for who in ("alice", "bob")]


# The target rules, in one run: max_step=6 lets a limit reach its target at once.
def test_separable_verdicts_put_the_limit_between_false_and_true():
    limits, report = recalibrate_limits(
        {"industrial": 3.0}, alerts(3.2, 3.4, 5.0, 6.0),
        verdicts((0, "false"), (1, "false"), (2, "true"), (3, "true")), max_step=6.0)
    assert limits["industrial"] == pytest.approx(4.2)  # (3.4 + 5.0) / 2
    assert report["categories"]["industrial"] == {
        "true": 2, "false": 2, "disputed": 0, "judges": {"true": ["alice", "bob"],
                                                         "false": ["alice", "bob"]},
        "old": 3.0, "target": 4.2, "new": 4.2}
    limits, _ = recalibrate_limits({"industrial": 3.0}, alerts(3.2, 3.4, 5.0, 6.0),
                                   verdicts((0, "false"), (1, "false"), (2, "true"), (3, "true")))
    assert limits["industrial"] == 3.75  # the default step: x1.25 a run toward 4.2


def test_mixed_verdicts_maximise_true_minus_false():
    # false at 3.5 and 5.5, true at 4.0 and 6.0: a limit just under 4.0 keeps both true alerts
    # and drops one false one (gain 1, like 5.5 or 5.99 which would lose the true 4.0)
    limits, _ = recalibrate_limits({"general": 3.1}, alerts(3.5, 4.0, 5.5, 6.0, category="general"),
                                   verdicts((0, "false"), (1, "true"), (2, "false"), (3, "true")),
                                   max_step=6.0)
    assert limits["general"] == pytest.approx(3.999)


def test_too_few_verdicts_change_nothing_and_ignore_and_unknown_count_right():
    limits, report = recalibrate_limits(
        {"industrial": 3.0}, alerts(3.2, 3.3),
        verdicts((0, "false"), (1, "ignore")) + [Verdict("zz", "true", "op", "")])
    assert limits == {"industrial": 3.0}
    assert report["unmatched_verdicts"] == 1


def test_last_verdict_wins():
    v = verdicts((0, "true"), (1, "false"), (2, "false")) + verdicts((0, "false"))
    limits, report = recalibrate_limits({"industrial": 3.0}, alerts(3.1, 3.2, 3.3), v)
    assert report["categories"]["industrial"]["false"] == 3
    assert limits["industrial"] == pytest.approx(3.3)  # drops all three false alerts


def test_feedback_round_trip_and_bad_events():
    key, value = encode_feedback("abc", "false", "alice")
    v = decode_feedback(value)
    assert (key, v.alert_id, v.verdict, v.who) == (b"abc", "abc", "false", "alice")
    for raw in (b"{", b'{"verdict":"true"}', b'{"alert_id":"x","verdict":"maybe"}'):
        with pytest.raises(InputError):
            decode_feedback(raw)


def test_recalibration_is_audited_in_the_bundle(tiny_bundle, tmp_path):
    path = tmp_path / "b"
    shutil.copytree(tiny_bundle.path, path)
    old = dict(tiny_bundle.manifest.decision.limits)
    new = {**old, "industrial": 4.2}
    manifest = apply_to_bundle(path, new, {"categories": {"industrial": {"old": 3.0}}}, "ops")
    assert manifest.decision.limits["industrial"] == 4.2
    assert manifest.audit[-1]["action"] == "recalibrate_limits"
    assert Bundle.load(path).limits.limit("industrial") == 4.2  # re-hashed: still verifies
    assert json.loads((path / "manifest.json").read_text())["audit"][-1]["by"] == "ops"


@pytest.mark.kafka
def test_recalibrate_reads_alerts_and_feedback_from_kafka(kafka_broker, unique_name, tiny_bundle,
                                                          tmp_path, monkeypatch, capsys):
    """Two honest judges on industrial alerts move the limit stepwise, run after run; four
    forged verdicts under one name on general alerts hold; a deep verdict is skipped."""
    from confluent_kafka import Producer

    from stream_app.cli import main
    from stream_app.stream.topics import create_topics

    alerts_topic, feedback_topic = unique_name("alerts"), unique_name("feedback")
    create_topics(kafka_broker.bootstrap, [alerts_topic, feedback_topic], 2)
    producer = Producer({"bootstrap.servers": kafka_broker.bootstrap})
    opened = [("industrial", z) for z in (3.2, 3.4, 5.0, 6.0)]
    opened += [("general", z) for z in (4.5, 5.5, 6.5, 7.5)]
    for i, (category, z) in enumerate(opened):
        alert = {"alert_id": f"a{i}", "status": "open", "kind": "anomaly",
                 "category": category, "zscore": z}
        producer.produce(alerts_topic, key=f"a{i}".encode(), value=json.dumps(alert).encode())
    said = [(f"a{i}", verdict, who) for i, verdict in enumerate(("false", "false", "true", "true"))
            for who in ("alice", "bob")]
    said += [(f"a{i}", "false", "mallory") for i in range(4, 8)]
    for alert_id, verdict, who in said:
        key, value = encode_feedback(alert_id, verdict, who)
        producer.produce(feedback_topic, key=key, value=value)
    producer.produce(feedback_topic, key=b"a0", value=b"[" * 2_000 + b"]" * 2_000)
    assert producer.flush(15) == 0
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_broker.bootstrap)
    monkeypatch.setenv("MW_ALERTS_TOPIC", alerts_topic)
    monkeypatch.setenv("MW_FEEDBACK_TOPIC", feedback_topic)
    path = tmp_path / "b"
    shutil.copytree(tiny_bundle.path, path)
    general = tiny_bundle.limits.limit("general")
    assert main(["recalibrate", "--model", str(path), "--who", "shift-lead"]) == 0
    out = capsys.readouterr().out
    assert "skipped a feedback event: malformed_json: nested too deep to parse" in out
    assert "3.0 -> 3.75  (toward 4.2, at most x1.25 a run)" in out
    assert f"{general} -> {general}  held: a rise needs false verdicts from 2 judges, has 1" in out
    assert main(["recalibrate", "--model", str(path), "--who", "shift-lead"]) == 0
    assert "3.75 -> 4.2" in capsys.readouterr().out
    bundle = Bundle.load(path)
    assert bundle.limits.limit("industrial") == pytest.approx(4.2)
    assert bundle.limits.limit("general") == general
    audit = bundle.manifest.audit[-1]
    assert audit["by"] == "shift-lead"
    assert {(r["alert_id"], r["verdict"], r["who"]) for r in audit["verdicts"]} == set(said)


@pytest.mark.kafka
@pytest.mark.slow
def test_worker_counts_verdicts_and_dead_letters_bad_feedback(run):  # noqa: F811 (the fixture)
    from test_worker_kafka import metric, wait_for

    from stream_app.stream.topics import create_topics

    create_topics(run.broker.bootstrap, [run.topic("m1")], 4)
    _, port = run.start_worker()
    key, value = encode_feedback("a1", "false", "alice")
    deep, deeper = b"[" * 2_000 + b"]" * 2_000, b"[" * 100_000 + b"]" * 100_000
    topic = run.env["MW_FEEDBACK_TOPIC"]
    run.produce([(topic, b"a2", b"{not json"), (topic, b"a3", deep), (topic, b"a4", deeper),
                 (topic, key, value)])
    wait_for(lambda: metric(port, "meterwatch_feedback_total") >= 4, 60, "every verdict")
    assert metric(port, 'meterwatch_feedback_total{verdict="invalid"}') == 3
    got = run.consume(run.env["MW_DLQ_TOPIC"], lambda got: len(got) >= 3)
    letters = {d.original_key(): d for d in map(DeadLetter.from_json, map(json.dumps, got))}
    assert {k: (d.reason, d.detail.split(":")[0]) for k, d in letters.items()} == {
        b"a2": ("bad_feedback", "malformed_json"), b"a3": ("bad_feedback", "malformed_json"),
        b"a4": ("bad_feedback", "too_large")}
    assert letters[b"a3"].original_value() == deep and letters[b"a4"].original_value() == deeper
    assert {d.topic for d in letters.values()} == {topic}
