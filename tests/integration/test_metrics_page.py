"""A real worker's /metrics on Apache Kafka, as Prometheus reads it: the process and platform
collectors, the bundle info, no `_created` series, a lag gauge for every assigned partition of
the input, internal and feedback topics (split between two workers: each reports its own), and
the two latency histograms, each observing what its name says.

The readings are produced with Kafka timestamps set AGE_S x (meter number) seconds in the past,
so a histogram's sum says from which readings it measured: reading -> scored sums every reading's
age, reading -> alert sent only the ages of the readings (meters) that raised an alert.
"""

from __future__ import annotations

import json
import time

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from prometheus_client.parser import text_string_to_metric_families

from stream_app.core.records import encode_reading
from stream_app.devtools.brokers import free_port, stop_process
from stream_app.devtools.demo import start_worker, wait_for_worker, worker_health, worker_metrics
from stream_app.stream.feedback import encode_feedback
from stream_app.stream.timers import group_offsets
from stream_app.stream.topics import create_topics

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.real_kafka("consumer groups")]

AGE_S = 300  # meter i's readings carry a Kafka timestamp (i + 1) x 300 s before their sending
INPUT_PARTITIONS = 2  # a keyed meter topic fills one: the other is assigned and empty
PARTITIONS = 4  # MW_PARTITIONS: the internal topic's and the feedback topic's


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    """(sample name, sorted labels) -> value, parsed by prometheus_client's own parser."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(worker_metrics(port))
            for s in family.samples}


def value(page: dict, metric: str, **labels) -> float:
    return page[(metric, tuple(sorted(labels.items())))]


def total(page: dict, metric: str) -> float:
    """The sum of a metric's samples over all its label values (0 when it has none yet)."""
    return sum(v for (n, _), v in page.items() if n == metric)


def lags(port: int) -> dict[tuple[str, int], float]:
    return {(dict(labels)["topic"], int(dict(labels)["partition"])): v
            for (name, labels), v in scrape(port).items() if name == "meterwatch_consumer_lag"}


def assigned(port: int, topics: set[str]) -> set[tuple[str, int]]:
    """The worker's assignment (its /health) within `topics`."""
    out = set()
    for item in (worker_health(port) or {}).get("assigned", []):
        topic, _, partition = item.rpartition(":")
        if topic in topics:
            out.add((topic, int(partition)))
    return out


def wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if predicate():
                return
        except OSError:  # a busy worker answered its page late: ask again
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.5)


def read_all(broker, topic: str, count: int, timeout_s: float = 120.0) -> list[dict]:
    consumer = Consumer({**broker.client_config, "group.id": f"{topic}-reader",
                         "enable.auto.commit": False})
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        got, deadline = [], time.monotonic() + timeout_s
        while len(got) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and not msg.error():
                got.append(json.loads(msg.value()))
        return got
    finally:
        consumer.close()


def test_metrics_page_of_real_workers(kafka_broker, tiny_bundle, sim_series, tmp_path,
                                      unique_name):
    name = unique_name("mwm").replace("_", "-")
    series = sim_series[0]
    inputs = {s.meter_id: f"meter.{name}.{s.meter_id}" for s in series}
    env = {"MW_INPUT_PATTERN": rf"meter\.{name}\..+", "MW_ALERTS_TOPIC": f"{name}-alerts",
           "MW_DLQ_TOPIC": f"{name}-dlq", "MW_READINGS_TOPIC": f"{name}-readings",
           "MW_FEEDBACK_TOPIC": f"{name}-feedback", "MW_PARTITIONS": str(PARTITIONS)}
    consumed = {*inputs.values(), env["MW_READINGS_TOPIC"], env["MW_FEEDBACK_TOPIC"]}
    every_partition = {(t, p) for t in inputs.values() for p in range(INPUT_PARTITIONS)} | {
        (t, p) for t in (env["MW_READINGS_TOPIC"], env["MW_FEEDBACK_TOPIC"])
        for p in range(PARTITIONS)}
    create_topics(kafka_broker.client_config, list(inputs.values()), INPUT_PARTITIONS)
    workers = []

    def start(n: int) -> int:
        port, log = free_port(), tmp_path / f"worker-{n}.log"
        proc = start_worker(kafka_broker.bootstrap, kafka_broker.kind, tiny_bundle.path, name,
                            port, log, {**env, "MW_DATA_DIR": str(tmp_path / f"data-{n}")})
        workers.append(proc)
        wait_for_worker(proc, port, log, timeout=180)
        return port

    try:
        started = time.time()
        port_a = start(0)

        # --- readings, aged per meter, and one verdict -----------------------------------
        age_ms = {s.meter_id: AGE_S * 1000 * (i + 1) for i, s in enumerate(series)}
        producer = Producer({**kafka_broker.client_config, "linger.ms": 5})
        sent_from = time.time()
        readings = 0
        for k in range(len(series[0].values)):
            for s in series:
                key, raw = encode_reading(s.meter_id, int(s.timestamps[k]) * 1000,
                                          float(s.values[k]), s.category)
                producer.produce(inputs[s.meter_id], key=key, value=raw,
                                 timestamp=int(time.time() * 1000) - age_ms[s.meter_id])
                producer.poll(0)
                readings += 1
        key, verdict = encode_feedback("a-1", "false", "alice")
        producer.produce(env["MW_FEEDBACK_TOPIC"], key=key, value=verdict)
        assert producer.flush(30) == 0

        def processed() -> bool:
            page = scrape(port_a)
            return (total(page, "meterwatch_readings_outcome_total") >= readings
                    and total(page, "meterwatch_feedback_total") >= 1)

        wait_for(processed, 300, "every reading and the verdict to be processed")
        page, scraped_at = scrape(port_a), time.time()
        text = worker_metrics(port_a)
        sent_alerts = total(page, "meterwatch_alerts_out_total")
        alerts = read_all(kafka_broker, env["MW_ALERTS_TOPIC"], int(sent_alerts))
        assert len(alerts) == sent_alerts > 0
        assert value(page, "meterwatch_feedback_total", verdict="false") == 1

        # --- the two latency histograms --------------------------------------------------
        longest = scraped_at - sent_from  # no reading waited longer than this beyond its age
        assert value(page, "meterwatch_reading_to_scored_seconds_count") == readings
        scored_sum = value(page, "meterwatch_reading_to_scored_seconds_sum")
        ages = sum(len(s.values) * age_ms[s.meter_id] for s in series) / 1000
        assert ages <= scored_sum <= ages + readings * longest
        assert all(a["kind"] != "meter_silent" for a in alerts)  # every alert has its reading
        assert value(page, "meterwatch_reading_to_alert_seconds_count") == len(alerts)
        alert_sum = value(page, "meterwatch_reading_to_alert_seconds_sum")
        alert_ages = sum(age_ms[a["meter_id"]] for a in alerts) / 1000
        assert alert_ages <= alert_sum <= alert_ages + len(alerts) * longest
        print(f"\n{readings} readings, {len(alerts)} alerts; beyond their age: reading -> "
              f"scored {scored_sum / readings - ages / readings:.2f} s on average, reading -> "
              f"alert sent {(alert_sum - alert_ages) / len(alerts):.2f} s")
        for le in ("0.005", "0.05", "0.1", "0.2", "0.5"):  # sub-second bounds
            assert ("meterwatch_reading_to_scored_seconds_bucket", (("le", le),)) in page
        assert ("meterwatch_end_to_end_latency_seconds_count", ()) not in page

        # --- process, platform, bundle, no _created --------------------------------------
        assert value(page, "process_resident_memory_bytes") > 64 * 2**20  # ONNX Runtime et al.
        assert started - 5 <= value(page, "process_start_time_seconds") <= scraped_at  # the worker
        assert value(page, "process_cpu_seconds_total") > 1
        assert value(page, "process_open_fds") > 0
        assert any(n == "python_info" for n, _ in page)
        assert any(n == "python_gc_collections_total" for n, _ in page)
        manifest = tiny_bundle.manifest
        assert value(page, "meterwatch_bundle_info", name=manifest.name,
                     version=manifest.version) == 1
        assert "_created" not in text

        # --- lag: every assigned partition, one worker ------------------------------------
        wait_for(lambda: lags(port_a) == dict.fromkeys(every_partition, 0), 60,
                 "a zero lag for each of the 16 partitions")
        assert assigned(port_a, consumed) == every_partition

        # --- two workers: each reports the partitions it holds, none twice -----------------
        port_b = start(1)

        def split() -> bool:
            a, b = lags(port_a), lags(port_b)
            return (bool(a) and bool(b) and not set(a) & set(b)
                    and set(a) | set(b) == every_partition
                    and set(a) == assigned(port_a, consumed)
                    and set(b) == assigned(port_b, consumed)
                    and not any({**a, **b}.values()))

        # worker B took none of its partitions' records: its figures are the group's
        # committed offsets (timers.group_offsets), A's after the rebalance without the moved
        wait_for(split, 180, "the lag gauges to follow the partitions to the second worker")
    finally:
        for proc in workers:
            stop_process(proc, timeout=15)


def test_group_offsets_are_the_committed_offset_or_the_log_start(kafka_broker, unique_name):
    topic, group = unique_name("lag"), unique_name("lag-group")
    create_topics(kafka_broker.client_config, [topic], 3)
    producer = Producer(kafka_broker.client_config)
    for partition, count in ((0, 10), (1, 6), (2, 0)):
        for n in range(count):
            producer.produce(topic, value=b"%d" % n, partition=partition)
    assert producer.flush(30) == 0
    admin = AdminClient(kafka_broker.client_config)
    # partition 1 loses its first 2 records (retention would): its log starts at 2
    for future in admin.delete_records([TopicPartition(topic, 1, 2)], request_timeout=30).values():
        future.result(timeout=30)
    consumer = Consumer({**kafka_broker.client_config, "group.id": group,
                         "enable.auto.commit": False})
    try:
        consumer.commit(offsets=[TopicPartition(topic, 0, 7)], asynchronous=False)  # read 0..6 of 0..9
    finally:
        consumer.close()
    keys = [(topic, 0), (topic, 1), (topic, 2)]
    assert group_offsets(admin, group, keys) == {(topic, 0): 7, (topic, 1): 2, (topic, 2): 0}
