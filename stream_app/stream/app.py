"""The Faust app of a worker: its settings, topics and the per-meter table, then the parts.

    input topics (regex `meter\\..+`, or one keyed topic)
        -> ingest -> internal topic, partitioned by meter_id (co-partitioned with the table)
        -> score -> table + alerts topic; refused events -> dead-letter topic
    feedback topic -> record_feedback

The parts live by role: agents.py (the three agents), timers.py (silence, topic discovery,
bundle reload, lag), pages.py (web port), patches.py (what is patched in Faust), all over one
`WorkerContext` (context.py). `create_app` wires them; worker.py runs the start-up checks first.

Faust's own command line works too: `faust -A stream_app.stream.app worker -l info` reads the
module's `app`, built from the environment (KAFKA_*, MW_*) on first use with the same start-up
checks as `meterwatch worker`; a failed check ends it with one line and exit code 2.
"""

from __future__ import annotations

import sys

import faust

from stream_app.core.scoring import Detector
from stream_app.core.stream_scoring import StreamScorer
from stream_app.stream import agents, pages, timers
from stream_app.stream.context import Outputs, WorkerContext
from stream_app.stream.metrics import WorkerMetrics
from stream_app.stream.patches import (
    check_faust_version,
    one_transaction_per_worker,
    resubscribe_soon,
    tansu_fetch_wait,
)
from stream_app.stream.settings import KafkaSettings, WorkerSettings
from stream_app.stream.timers import matching_topics

__all__ = ["STATE_TABLE", "create_app", "make_app", "matching_topics"]

STATE_TABLE = "meter-state"


def make_app(kafka: KafkaSettings, worker: WorkerSettings) -> faust.App:
    """The Faust App with the worker's settings (nothing declared on it yet)."""
    check_faust_version()
    if kafka.is_tansu:
        tansu_fetch_wait()
    if worker.processing_guarantee == "exactly_once":
        one_transaction_per_worker()
    worker.data_dir.mkdir(parents=True, exist_ok=True)  # Faust makes only the last level
    app = faust.App(
        worker.app_id,
        **kafka.faust_kwargs(),
        datadir=worker.app_data_dir,
        store=worker.store,
        topic_partitions=worker.partitions,
        processing_guarantee=worker.processing_guarantee,
        web_port=worker.web_port,
        web_bind=worker.web_host,
        web_host=worker.web_host,
        web_in_thread=False,
        # Faust's own pages list topic and table names: off (pages.py serves ours)
        web_router_enabled=False,
        web_tables_enabled=False,
        web_application_options={"middlewares": [pages.security_middleware(
            worker.web_token.reveal() if worker.web_token is not None else None)]},
        broker_session_timeout=worker.session_timeout_s,
        broker_heartbeat_interval=worker.session_timeout_s / 6,
        broker_rebalance_timeout=max(worker.session_timeout_s, 10.0),
        stream_recovery_delay=0.1,
        consumer_metadata_max_age_ms=5000,  # new per-meter topics join within seconds
        consumer_auto_offset_reset="earliest",
        key_serializer="raw",
        value_serializer="raw",
    )
    resubscribe_soon(app)
    return app


def create_app(kafka: KafkaSettings, worker: WorkerSettings, detector: Detector,
               input_topics: list[str], metrics: WorkerMetrics | None = None,
               registry=None) -> faust.App:
    """`input_topics`: the inputs that exist at start; new pattern matches join while running
    (Faust's own `pattern=` subscription does not work, so the worker polls the topic list).
    The worker context is `app.meterwatch`; its agents and timers by name are
    `app.meterwatch_agents` and `app.meterwatch_timers`."""
    app = make_app(kafka, worker)

    def raw_topic(*names: str, **kwargs):
        return app.topic(*names, key_serializer="raw", value_serializer="raw", **kwargs)

    outputs = Outputs(
        readings=raw_topic(worker.readings_topic, partitions=worker.partitions, internal=True),
        alerts=raw_topic(worker.alerts_topic),
        dlq=raw_topic(worker.dlq_topic),
    )
    # keys and values are bytes (JSON we encode ourselves): the changelog stores them raw
    table = app.Table(STATE_TABLE, default=None, partitions=worker.partitions,
                      key_type=bytes, value_type=bytes)
    ctx = WorkerContext(kafka=kafka, worker=worker,
                        scorer=StreamScorer(detector, registry=registry), table=table,
                        outputs=outputs, source=raw_topic(*input_topics),
                        metrics=metrics or WorkerMetrics(), registry=registry)
    agents_by_name = agents.register(app, ctx, raw_topic(worker.feedback_topic))
    timers_by_name = timers.register(app, ctx)
    app.meterwatch = ctx  # type: ignore[attr-defined]  # Faust's App declares no such field
    app.meterwatch_agents = agents_by_name  # type: ignore[attr-defined]  # Faust's App declares no such field
    app.meterwatch_timers = timers_by_name  # type: ignore[attr-defined]  # Faust's App declares no such field
    pages.register(app, ctx)
    return app


def __getattr__(name: str):
    """The module-level `app` that `faust -A stream_app.stream.app ...` looks up: built once, on
    first use (importing this module loads no bundle and touches no broker)."""
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from stream_app.core.errors import MeterwatchError
    from stream_app.stream.worker import build

    try:
        built = build(KafkaSettings.from_env(), WorkerSettings.from_env())
    except MeterwatchError as exc:
        print(f"meterwatch worker: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    globals()["app"] = built
    return built
