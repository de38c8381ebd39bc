"""Operator feedback on alerts, and recalibration of the category limits from it.

Feedback events (topic `meter-alert-feedback`, key = alert_id, JSON, at most MAX_FEEDBACK_BYTES):
    {"alert_id": "...", "verdict": "true" | "false" | "ignore", "who": "alice", "at": ISO-8601}
`decode_feedback` refuses anything else with an `InputError` whose message starts with a reason
code (`too_large`, `malformed_json` — nesting too deep to parse included —, `missing_field:who`,
`bad_field:verdict` ...); the worker sends the refused event to the dead-letter topic with its
original bytes. Unknown fields are ignored.

Who judged: `who` is self-declared. Anyone who may write to the feedback topic can write any
name, so the topic must be writable by the operators' principal only (a topic-level WRITE ACL,
README "Feedback and recalibration"). Within that, the rules below keep one judge — one
mistaken operator, or one name made up by whoever can write — from moving a limit alone, and
bound how far one recalibration can move it. Judges are told apart by `who` after NFKC
normalisation and case folding ("Alice" and "alice " are one judge).

`meterwatch recalibrate` joins verdicts with the alerts' `open` messages (their z-score and
category) and moves each category's z limit:

- each judge's last verdict on an alert counts ("ignore" withdraws it); an alert whose judges
  disagree is disputed and counts for neither side;
- only categories with at least MIN_VERDICTS true/false alerts change;
- the target: if every false alert's z is below every true alert's z, the midpoint between the
  highest false z and the lowest true z (all verdicts would have been right); otherwise the limit
  among the observed z's that maximises (true alerts kept - false alerts kept); ties go to the
  limit that keeps more true alerts, then to the higher limit; a limit only rises when there are
  false alerts, only falls toward a true alert's z, and stays within LIMIT_BOUNDS;
- a rise needs false verdicts from at least `min_judges` distinct judges in the category, a fall
  true verdicts from as many (MW_FEEDBACK_MIN_JUDGES, default 2); else the limit holds;
- one run moves a limit toward its target by at most a factor `max_step` either way
  (MW_FEEDBACK_MAX_STEP, default 1.25), so a larger correction takes several runs, each one
  audited. The default lets the typical correction (3.0 -> 4.2) land in two runs, while the
  longest one, from 3.0 to the 6.0 bound, takes four (3.75, 4.69, 5.86, 6.0).
Each run that changes a limit appends an audit entry to the bundle's manifest (who ran it, when,
the rules, per category the counts, judges, old, target and new limits, and every verdict with
its author) and re-hashes it, so the change is visible and verifiable.

Over 300 lines: verdict decoding, the trust rules and the audit are one contract.
"""

from __future__ import annotations

import json
import re
import time
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import numpy as np

from stream_app.core.errors import InputError
from stream_app.core.manifest import Manifest
from stream_app.core.thresholds import LIMIT_BOUNDS
from stream_app.stream.settings import KafkaSettings, WorkerSettings

VERDICTS = ("true", "false", "ignore")
_DEFAULTS = {f.name: f.default for f in fields(WorkerSettings)}
MIN_VERDICTS = 3
# A verdict is about 150 bytes; the cap keeps a malicious one from costing more than a glance.
MAX_FEEDBACK_BYTES = 4096
MAX_WHO = 128  # characters: an account name or an e-mail address
_ALERT_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")  # alert ids are 24 hex characters
# Each verdict of a run is listed in its audit entry; past this many (about 1 MB) the rest are
# counted, so that a manifest never outgrows its 64 MiB limit. The judges stay named per category.
MAX_AUDITED_VERDICTS = 10_000


@dataclass(frozen=True)
class Verdict:
    alert_id: str
    verdict: str
    who: str
    at: str

    @property
    def judge(self) -> str:
        """Who, as judges are told apart: NFKC-normalised, case-folded, stripped."""
        return unicodedata.normalize("NFKC", self.who).casefold().strip()


def _optional_text(data: dict[str, Any], name: str) -> str | None:
    value = data.get(name)
    if value is not None and type(value) is not str:
        raise InputError(f"wrong_type:{name}: expected string, got {type(value).__name__}")
    return value


def _text(data: dict[str, Any], name: str) -> str:
    value = _optional_text(data, name)
    if value is None:
        raise InputError(f"missing_field:{name}: {name} is required")
    return value


def decode_feedback(raw: bytes) -> Verdict:
    """The verdict in a feedback event; anything else is an InputError starting with its reason
    code. No other exception escapes (the feedback agent dead-letters what this refuses)."""
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise InputError(f"wrong_type:payload: expected bytes, got {type(raw).__name__}")
    if len(raw) == 0:
        raise InputError("empty: no payload (null value or tombstone)")
    if len(raw) > MAX_FEEDBACK_BYTES:
        raise InputError(f"too_large: {len(raw)} bytes > {MAX_FEEDBACK_BYTES}")
    try:
        data = json.loads(bytes(raw).decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise InputError(f"not_utf8: byte {exc.start}: {exc.reason}") from None
    except RecursionError:
        raise InputError("malformed_json: nested too deep to parse") from None
    except ValueError as exc:
        raise InputError(f"malformed_json: {str(exc)[:200]}") from None
    if type(data) is not dict:
        raise InputError(f"not_an_object: top-level JSON {type(data).__name__}")
    alert_id, verdict, who = _text(data, "alert_id"), _text(data, "verdict"), _text(data, "who")
    at = _optional_text(data, "at") or ""
    if not _ALERT_ID.fullmatch(alert_id):
        raise InputError(f"bad_field:alert_id: 1..128 characters from [A-Za-z0-9._:-], "
                         f"got {alert_id[:40]!r}")
    if verdict.lower() not in VERDICTS:
        raise InputError(f"bad_field:verdict: one of {VERDICTS}, got {verdict[:40]!r}")
    who = who.strip()
    if not (0 < len(who) <= MAX_WHO and who.isprintable()):
        raise InputError(f"bad_field:who: 1..{MAX_WHO} printable characters, got {who[:40]!r}")
    if at:
        try:
            aware = len(at) <= 64 and datetime.fromisoformat(at).tzinfo is not None
        except ValueError:
            aware = False
        if not aware:
            raise InputError(f"bad_field:at: ISO-8601 with a UTC offset, got {at[:40]!r}")
    return Verdict(alert_id, verdict.lower(), who, at)


def encode_feedback(alert_id: str, verdict: str, who: str) -> tuple[bytes, bytes]:
    """(key, value) of a feedback event; InputError for what the worker would refuse."""
    at = datetime.now(UTC).isoformat(timespec="seconds")
    value = json.dumps({"alert_id": alert_id, "verdict": verdict, "who": who, "at": at}).encode()
    decode_feedback(value)
    return alert_id.encode(), value


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


@dataclass
class _Evidence:
    """One category's verdicts: the z of each judged alert and who judged it which way."""

    z: dict[str, list[float]] = field(default_factory=lambda: {"true": [], "false": []})
    judges: dict[str, set[str]] = field(default_factory=lambda: {"true": set(), "false": set()})
    disputed: int = 0

    def add(self, zscore: float, verdicts: list[Verdict]) -> None:
        said = {v.verdict for v in verdicts} - {"ignore"}
        if len(said) > 1:
            self.disputed += 1
        elif said:
            (side,) = said
            self.z[side].append(zscore)
            self.judges[side] |= {v.judge for v in verdicts if v.verdict == side}


def _decide(old: float | None, ev: _Evidence, min_judges: int, max_step: float) -> dict:
    """The category's report entry: its counts, judges, old, target and new limit, and why a
    limit that the verdicts would move holds (`old` None: the bundle has no such category)."""
    true_z, false_z = ev.z["true"], ev.z["false"]
    entry: dict = {"true": len(true_z), "false": len(false_z), "disputed": ev.disputed,
                   "judges": {side: sorted(ev.judges[side]) for side in ("true", "false")},
                   "old": old, "target": old, "new": old}
    if old is None:
        entry["held"] = "not a category of the bundle"
        return entry
    if len(true_z) + len(false_z) < MIN_VERDICTS:
        entry["held"] = f"{len(true_z) + len(false_z)} judged alerts, fewer than {MIN_VERDICTS}"
        return entry
    target = entry["target"] = round(_new_limit(old, true_z, false_z), 3)
    if target == old:
        return entry
    side, move = ("false", "rise") if target > old else ("true", "fall")
    if len(ev.judges[side]) < min_judges:
        entry["held"] = (f"a {move} needs {side} verdicts from {min_judges} judges, "
                         f"has {len(ev.judges[side])}")
        return entry
    stepped = float(np.clip(target, old / max_step, old * max_step))
    entry["new"] = round(float(np.clip(stepped, *LIMIT_BOUNDS)), 3)
    return entry


def recalibrate_limits(limits: Mapping[str, float], alerts: Mapping[str, dict],
                       verdicts: Iterable[Verdict], *,
                       min_judges: int = WorkerSettings.feedback_min_judges,
                       max_step: float = WorkerSettings.feedback_max_step,
                       ) -> tuple[dict[str, float], dict]:
    """New limits per category from verdicts on alerts (alert_id -> its `open` message), and the
    report that explains them (the audit entry's body)."""
    latest = {(v.alert_id, v.judge): v for v in verdicts}  # each judge's last word on an alert
    by_alert: dict[str, list[Verdict]] = {}
    unmatched = 0
    for (alert_id, _), v in latest.items():
        if alert_id in alerts:
            by_alert.setdefault(alert_id, []).append(v)
        else:
            unmatched += 1
    evidence: dict[str, _Evidence] = {}
    for alert_id, said in by_alert.items():
        alert = alerts[alert_id]
        evidence.setdefault(alert["category"], _Evidence()).add(float(alert["zscore"]), said)
    new = dict(limits)
    categories = {}
    for category, ev in sorted(evidence.items()):
        categories[category] = entry = _decide(limits.get(category), ev, min_judges, max_step)
        if category in limits:
            new[category] = entry["new"]
    rows = sorted(({"alert_id": v.alert_id, "category": alerts[v.alert_id]["category"],
                    "verdict": v.verdict, "who": v.who, "at": v.at}
                   for said in by_alert.values() for v in said),
                  key=lambda r: (new.get(r["category"]) == limits.get(r["category"]),
                                 r["category"], r["alert_id"], r["who"]))  # moved ones first
    report = {"rules": {"min_verdicts": MIN_VERDICTS, "min_judges": min_judges,
                        "max_step": max_step},
              "unmatched_verdicts": unmatched, "categories": categories,
              "verdicts": rows[:MAX_AUDITED_VERDICTS]}
    if len(rows) > MAX_AUDITED_VERDICTS:
        report["verdicts_not_listed"] = len(rows) - MAX_AUDITED_VERDICTS
    return new, report


def apply_to_bundle(bundle_dir: Path, new_limits: dict, report: dict, who: str) -> Manifest:
    """Write the new limits into the bundle's manifest with an audit entry; re-hash; verify."""
    from stream_app.core.model_bundle import Bundle, write_manifest

    manifest = Bundle.load(bundle_dir).manifest  # verified: a tampered bundle is not re-hashed
    entry = {"at": datetime.now(UTC).isoformat(timespec="seconds"),
             "by": who, "action": "recalibrate_limits", **report}
    write_manifest(bundle_dir, manifest.with_limits(new_limits, entry))
    return Bundle.load(bundle_dir).manifest


def read_topic(kafka: KafkaSettings, topic: str, timeout: float = 10.0) -> list:
    """Every message of a topic, from the beginning to its current end (no group join)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer(kafka.confluent_config(fixed={
        "group.id": f"meterwatch-read-{time.time_ns()}", "enable.auto.commit": False}))
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
            offset = msg.offset()
            assert offset is not None  # a consumed message, not an error, has its offset
            if offset + 1 >= ends[msg.partition()]:
                todo.discard(msg.partition())
        return out
    finally:
        consumer.close()


def feedback_params() -> list[click.Option]:
    """Options of `meterwatch feedback`; --topic is the worker's MW_FEEDBACK_TOPIC."""
    return [
        click.Option(["--alert-id"], required=True),
        click.Option(["--verdict"], required=True, type=click.Choice(VERDICTS)),
        click.Option(["--who"], required=True, help="who judged the alert (recorded in the audit)"),
        click.Option(["--topic"], default=_DEFAULTS["feedback_topic"], envvar="MW_FEEDBACK_TOPIC",
                     show_envvar=True, help="feedback topic"),
    ]


def run_feedback(args) -> int:
    from confluent_kafka import Producer

    topic = args.topic
    producer = Producer(KafkaSettings.from_env().confluent_config())
    key, value = encode_feedback(args.alert_id, args.verdict, args.who)
    producer.produce(topic, key=key, value=value)
    if producer.flush(15) != 0:
        raise InputError(f"the feedback could not be delivered to {topic!r}")
    print(f"recorded verdict {args.verdict!r} on alert {args.alert_id} by {args.who}")
    return 0


def recalibrate_params() -> list[click.Option]:
    """Options of `meterwatch recalibrate`; --model may be the worker's MW_MODEL_DIR."""
    return [
        click.Option(["--model"], required=True, type=click.Path(path_type=Path),
                     envvar="MW_MODEL_DIR", show_envvar=True, help="bundle folder to recalibrate"),
        click.Option(["--who"], default="meterwatch recalibrate",
                     help="who ran it (recorded in the audit)"),
        click.Option(["--dry-run"], is_flag=True, help="print the change, write nothing"),
    ]


def run_recalibrate(args) -> int:
    from stream_app.core.model_bundle import Bundle

    bundle = Bundle.load(args.model)
    kafka, worker = KafkaSettings.from_env(), WorkerSettings.from_env()
    opened = {}
    for raw in read_topic(kafka, worker.alerts_topic):
        alert = json.loads(raw)
        if alert.get("status") == "open" and alert.get("kind") == "anomaly":
            opened[alert["alert_id"]] = alert
    verdicts = []
    for raw in read_topic(kafka, worker.feedback_topic):
        try:
            verdicts.append(decode_feedback(raw))
        except InputError as exc:
            print(f"skipped a feedback event: {exc}")
    old = dict(bundle.manifest.decision.limits)
    new, report = recalibrate_limits(old, opened, verdicts, min_judges=worker.feedback_min_judges,
                                     max_step=worker.feedback_max_step)
    for category, entry in report["categories"].items():
        judges = len({*entry["judges"]["true"], *entry["judges"]["false"]})
        why = f"  held: {entry['held']}" if "held" in entry else ""
        if entry["new"] != entry["target"] and not why:
            why = f"  (toward {entry['target']}, at most x{worker.feedback_max_step} a run)"
        print(f"{category:<13} true {entry['true']:>3}  false {entry['false']:>3}  "
              f"judges {judges:>2}  limit {entry['old']} -> {entry['new']}{why}")
    if args.dry_run or new == old:
        print("no change written" if new == old else "dry run: nothing written")
        return 0
    apply_to_bundle(args.model, new, report, args.who)
    print(f"wrote the new limits and an audit entry to {args.model}/manifest.json")
    return 0
