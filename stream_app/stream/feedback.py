"""Operator feedback on alerts, and recalibration of the category limits from it.

Feedback events (topic `meter-alert-feedback`, key = alert_id, JSON):
    {"alert_id": "...", "verdict": "true" | "false" | "ignore", "who": "alice", "at": ISO-8601}
The last verdict per alert_id counts. `meterwatch recalibrate` joins verdicts with the alerts'
`open` messages (their z-score and category) and moves each category's z limit:

- only categories with at least MIN_VERDICTS true/false verdicts change;
- if every false alert's z is below every true alert's z, the new limit is the midpoint between
  the highest false z and the lowest true z (all verdicts would have been right);
- otherwise the limit among the observed z's that maximises (true alerts kept - false alerts
  kept) wins; ties go to the limit that keeps more true alerts, then to the higher limit;
- a limit only rises when there are false alerts, and only falls toward a true alert's z, and it
  stays within LIMIT_BOUNDS.
Each run appends an audit entry to the bundle's manifest (who, when, verdict counts, old and new
limits) and re-hashes it, so the change is visible and verifiable.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from stream_app.core.errors import InputError
from stream_app.core.manifest import Manifest
from stream_app.core.thresholds import LIMIT_BOUNDS

VERDICTS = ("true", "false", "ignore")
MIN_VERDICTS = 3


@dataclass(frozen=True)
class Verdict:
    alert_id: str
    verdict: str
    who: str
    at: str


def decode_feedback(raw: bytes) -> Verdict:
    try:
        data = json.loads(raw)
        verdict = Verdict(str(data["alert_id"]), str(data["verdict"]).lower(),
                          str(data.get("who", "")), str(data.get("at", "")))
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"not a feedback event: {exc}") from None
    if verdict.verdict not in VERDICTS:
        raise InputError(f"verdict must be one of {VERDICTS}, got {verdict.verdict!r}")
    return verdict


def encode_feedback(alert_id: str, verdict: str, who: str) -> tuple[bytes, bytes]:
    if verdict not in VERDICTS:
        raise InputError(f"verdict must be one of {VERDICTS}, got {verdict!r}")
    at = datetime.now(UTC).isoformat(timespec="seconds")
    body = {"alert_id": alert_id, "verdict": verdict, "who": who, "at": at}
    return alert_id.encode(), json.dumps(body).encode()


def _new_limit(old: float, true_z: list[float], false_z: list[float]) -> float:
    lo, hi = LIMIT_BOUNDS
    if false_z and true_z and max(false_z) < min(true_z):
        return float(np.clip((max(false_z) + min(true_z)) / 2, lo, hi))
    # a reading is flagged when z > limit: a limit just under a true z keeps that alert,
    # a limit at a false z drops it
    candidates = {old, *(z - 1e-3 for z in true_z), *false_z}  # limits are kept to 3 decimals

    def gain(limit: float) -> tuple[int, int, float]:
        kept_true = sum(z > limit for z in true_z)
        return kept_true - sum(z > limit for z in false_z), kept_true, limit

    return float(np.clip(max(candidates, key=gain), lo, hi))


def recalibrate_limits(limits: Mapping[str, float], alerts: Mapping[str, dict],
                       verdicts: Iterable[Verdict]) -> tuple[dict[str, float], dict]:
    """New limits per category from verdicts on alerts (alert_id -> its `open` message)."""
    latest = {v.alert_id: v for v in verdicts}
    per_category: dict[str, dict[str, list[float]]] = {}
    unmatched = 0
    for alert_id, v in latest.items():
        alert = alerts.get(alert_id)
        if alert is None or v.verdict == "ignore":
            unmatched += alert is None
            continue
        bucket = per_category.setdefault(alert["category"], {"true": [], "false": []})
        bucket[v.verdict].append(float(alert["zscore"]))
    new = dict(limits)
    report = {"unmatched_verdicts": unmatched, "categories": {}}
    for category, zs in sorted(per_category.items()):
        n = len(zs["true"]) + len(zs["false"])
        entry = {"true": len(zs["true"]), "false": len(zs["false"]), "old": limits[category]}
        if n >= MIN_VERDICTS and category in limits:
            new[category] = round(_new_limit(limits[category], zs["true"], zs["false"]), 3)
        entry["new"] = new.get(category)
        report["categories"][category] = entry
    return new, report


def apply_to_bundle(bundle_dir: Path, new_limits: dict, report: dict, who: str) -> Manifest:
    """Write the new limits into the bundle's manifest with an audit entry; re-hash; verify."""
    from stream_app.core.model_bundle import Bundle, write_manifest

    manifest = Bundle.load(bundle_dir).manifest  # verified: a tampered bundle is not re-hashed
    entry = {"at": datetime.now(UTC).isoformat(timespec="seconds"),
             "by": who, "action": "recalibrate_limits", **report}
    write_manifest(bundle_dir, manifest.with_limits(new_limits, entry))
    return Bundle.load(bundle_dir).manifest


def read_topic(config: dict, topic: str, timeout: float = 10.0) -> list:
    """Every message of a topic, from the beginning to its current end (no group join)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer({**config, "group.id": f"meterwatch-read-{time.time_ns()}",
                         "enable.auto.commit": False})
    try:
        meta = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
        if meta is None or meta.error is not None:
            raise InputError(f"topic {topic!r} does not exist")
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)[1]
                for p in meta.partitions}
        todo = {p for p, end in ends.items() if end > 0}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in todo])
        out, deadline = [], time.monotonic() + timeout * 6
        while todo and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            out.append(msg.value())
            if msg.offset() + 1 >= ends[msg.partition()]:
                todo.discard(msg.partition())
        return out
    finally:
        consumer.close()


def add_feedback_arguments(p) -> None:
    p.add_argument("--alert-id", required=True)
    p.add_argument("--verdict", required=True, choices=VERDICTS)
    p.add_argument("--who", required=True, help="who judged the alert (recorded in the audit)")
    p.add_argument("--topic", default=None, help="default: MW_FEEDBACK_TOPIC")


def run_feedback(args) -> int:
    from confluent_kafka import Producer

    from stream_app.stream.settings import KafkaSettings, WorkerSettings

    topic = args.topic or WorkerSettings.from_env().feedback_topic
    producer = Producer(KafkaSettings.from_env().confluent_config())
    key, value = encode_feedback(args.alert_id, args.verdict, args.who)
    producer.produce(topic, key=key, value=value)
    if producer.flush(15) != 0:
        raise InputError(f"the feedback could not be delivered to {topic!r}")
    print(f"recorded verdict {args.verdict!r} on alert {args.alert_id} by {args.who}")
    return 0


def add_recalibrate_arguments(p) -> None:
    p.add_argument("--model", required=True, type=Path, help="bundle folder to recalibrate")
    p.add_argument("--who", default="meterwatch recalibrate")
    p.add_argument("--dry-run", action="store_true", help="print the change, write nothing")


def run_recalibrate(args) -> int:
    from stream_app.core.model_bundle import Bundle
    from stream_app.stream.settings import KafkaSettings, WorkerSettings

    bundle = Bundle.load(args.model)
    kafka, worker = KafkaSettings.from_env(), WorkerSettings.from_env()
    config = kafka.confluent_config()
    opened = {}
    for raw in read_topic(config, worker.alerts_topic):
        alert = json.loads(raw)
        if alert.get("status") == "open" and alert.get("kind") == "anomaly":
            opened[alert["alert_id"]] = alert
    verdicts = []
    for raw in read_topic(config, worker.feedback_topic):
        try:
            verdicts.append(decode_feedback(raw))
        except InputError as exc:
            print(f"skipped a feedback event: {exc}")
    old = dict(bundle.manifest.decision.limits)
    new, report = recalibrate_limits(old, opened, verdicts)
    for category, entry in report["categories"].items():
        print(f"{category:<13} true {entry['true']:>3}  false {entry['false']:>3}  "
              f"limit {entry['old']} -> {entry['new']}")
    if args.dry_run or new == old:
        print("no change written" if new == old else "dry run: nothing written")
        return 0
    apply_to_bundle(args.model, new, report, args.who)
    print(f"wrote the new limits and an audit entry to {args.model}/manifest.json")
    return 0
