"""Operator feedback: verdict decoding, limit recalibration rules, audit trail in the bundle."""

import json
import shutil

import pytest
from test_worker_kafka import run  # noqa: F401 (the fixture)

from stream_app.core.errors import InputError
from stream_app.core.model_bundle import Bundle
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
    return [Verdict(f"a{i}", v, "op", "") for i, v in pairs]


def test_separable_verdicts_put_the_limit_between_false_and_true():
    limits, report = recalibrate_limits(
        {"industrial": 3.0}, alerts(3.2, 3.4, 5.0, 6.0),
        verdicts((0, "false"), (1, "false"), (2, "true"), (3, "true")))
    assert limits["industrial"] == pytest.approx(4.2)  # (3.4 + 5.0) / 2
    assert report["categories"]["industrial"] == {"true": 2, "false": 2, "old": 3.0, "new": 4.2}


def test_mixed_verdicts_maximise_true_minus_false():
    # false at 3.5 and 5.5, true at 4.0 and 6.0: a limit just under 4.0 keeps both true alerts
    # and drops one false one (gain 1, like 5.5 or 5.99 which would lose the true 4.0)
    limits, _ = recalibrate_limits({"general": 3.1}, alerts(3.5, 4.0, 5.5, 6.0, category="general"),
                                   verdicts((0, "false"), (1, "true"), (2, "false"), (3, "true")))
    assert limits["general"] == pytest.approx(3.999)


def test_too_few_verdicts_change_nothing_and_ignore_and_unknown_count_right():
    limits, report = recalibrate_limits(
        {"industrial": 3.0}, alerts(3.2, 3.3),
        verdicts((0, "false"), (1, "ignore")) + [Verdict("zz", "true", "op", "")])
    assert limits == {"industrial": 3.0}
    assert report["unmatched_verdicts"] == 1


def test_last_verdict_wins():
    v = verdicts((0, "true"), (1, "false"), (2, "false")) + [Verdict("a0", "false", "op", "")]
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
    from confluent_kafka import Producer

    from stream_app.cli import main
    from stream_app.stream.topics import create_topics

    alerts_topic, feedback_topic = unique_name("alerts"), unique_name("feedback")
    create_topics(kafka_broker.bootstrap, [alerts_topic, feedback_topic], 2)
    producer = Producer({"bootstrap.servers": kafka_broker.bootstrap})
    for i, z in enumerate((3.2, 3.4, 5.0, 6.0)):
        alert = {"alert_id": f"a{i}", "status": "open", "kind": "anomaly",
                 "category": "industrial", "zscore": z}
        producer.produce(alerts_topic, key=f"a{i}".encode(), value=json.dumps(alert).encode())
    for i, verdict in enumerate(("false", "false", "true", "true")):
        key, value = encode_feedback(f"a{i}", verdict, "op")
        producer.produce(feedback_topic, key=key, value=value)
    assert producer.flush(15) == 0
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_broker.bootstrap)
    monkeypatch.setenv("MW_ALERTS_TOPIC", alerts_topic)
    monkeypatch.setenv("MW_FEEDBACK_TOPIC", feedback_topic)
    path = tmp_path / "b"
    shutil.copytree(tiny_bundle.path, path)
    assert main(["recalibrate", "--model", str(path), "--who", "shift-lead"]) == 0
    out = capsys.readouterr().out
    assert "industrial" in out and "3.0 -> 4.2" in out
    bundle = Bundle.load(path)
    assert bundle.limits.limit("industrial") == pytest.approx(4.2)
    assert bundle.manifest.audit[-1]["by"] == "shift-lead"


@pytest.mark.kafka
@pytest.mark.slow
def test_worker_counts_verdicts_and_dead_letters_bad_feedback(run):  # noqa: F811 (the fixture)
    from test_worker_kafka import metric, wait_for

    from stream_app.stream.topics import create_topics

    create_topics(run.broker.bootstrap, [run.topic("m1")], 4)
    _, port = run.start_worker()
    key, value = encode_feedback("a1", "false", "alice")
    run.produce([(run.env["MW_FEEDBACK_TOPIC"], key, value),
                 (run.env["MW_FEEDBACK_TOPIC"], b"a2", b"{not json")])
    wait_for(lambda: metric(port, "meterwatch_feedback_total") >= 2, 60, "both verdicts")
    letters = run.consume(run.env["MW_DLQ_TOPIC"], lambda got: len(got) >= 1)
    assert letters[0]["reason"].startswith("bad_feedback")
