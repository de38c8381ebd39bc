"""`meterwatch demo`: an embedded broker, one worker, simulated factory meters, live alerts.

The simulated meters cover all four usage categories and carry labelled injected anomalies;
they are streamed faster than real time, alerts are printed as they arrive, and the run ends
with a summary: readings sent, alerts, injected anomalies detected / missed, false alerts and
reading-to-alert latency. The broker and worker are stopped by PID on every exit path, Ctrl-C
included.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import cast

import numpy as np
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from tqdm import tqdm

from stream_app.core.errors import MeterwatchError
from stream_app.core.records import encode_reading
from stream_app.devtools.brokers import free_port, start_broker, stop_process
from stream_app.devtools.simulator import simulate_with_events
from stream_app.stream.topics import create_topics

DETECTION_GRACE = 4  # readings after an injected event's end in which an alert still counts


@dataclass
class AlertLog:
    alerts: list[dict] = field(default_factory=list)
    received: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def start_worker(bootstrap: str, broker_kind: str, model_dir: Path, app_id: str,
                 web_port: int, log_path: Path, extra_env: dict | None = None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MW_", "KAFKA_"))}
    env.update({
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "MW_BROKER_KIND": broker_kind,
        "MW_MODEL_DIR": str(model_dir), "MW_APP_ID": app_id, "MW_WEB_PORT": str(web_port),
        "MW_SESSION_TIMEOUT_S": "3", "MW_BATCH_MAX_WAIT_S": "0.05",
    })
    env.update(extra_env or {})
    with open(log_path, "ab") as log:
        return subprocess.Popen([sys.executable, "-m", "stream_app.cli", "worker"], env=env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def worker_health(web_port: int) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/health", timeout=1) as resp:
            return json.loads(resp.read())
    except OSError:
        return None


def worker_metrics(web_port: int, timeout: float = 5.0) -> str:
    """The worker's /metrics page (Prometheus text)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/metrics", timeout=timeout) as r:
        return r.read().decode()


def metric_total(text: str, name: str) -> float:
    """Sum of every sample of `name` (all label values) in Prometheus text."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and not line.startswith(name + "_created"))


def wait_for_worker(proc: subprocess.Popen, web_port: int, log_path: Path,
                    timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:]
            raise MeterwatchError(f"the worker exited with code {proc.returncode}:\n{tail}")
        health = worker_health(web_port)
        if health and health.get("assigned"):
            return
        time.sleep(0.3)
    raise MeterwatchError(f"the worker was not ready after {timeout:.0f} s (log: {log_path})")


def follow_alerts(bootstrap: str, topic: str, log: AlertLog, stop: threading.Event,
                  echo: bool) -> None:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"demo-{time.time_ns()}",
                         "enable.auto.commit": False, "fetch.wait.max.ms": 50})
    # assign, not subscribe: no group join to wait for, every partition from the start
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    try:
        while not stop.is_set():
            msg = consumer.poll(0.1)
            if msg is None or msg.error():
                continue
            alert = json.loads(cast(bytes, msg.value()))  # the worker's alerts are never null
            with log.lock:
                log.alerts.append(alert)
                log.received.append(time.time())
            if echo and alert["status"] != "update":
                tqdm.write(_alert_line(alert))
    finally:
        consumer.close()


def _alert_line(a: dict) -> str:
    if a["kind"] != "anomaly":
        return f"  {a['status']:>8} {a['kind']:<8} {a['meter_id']:<12} {a['reason']}"
    return (f"  {a['status']:>8} {a['severity']:<8} {a['meter_id']:<12} {a['category']:<12} "
            f"at {a['window_end']}  z={a['zscore']:.1f} > {a['threshold']:.1f}  {a['reason']}")


def run_demo(meters: int = 8, days: int = 10, speed: float = 1000.0, seed: int = 7,
             broker_kind: str = "tansu", model_dir: Path | None = None) -> int:
    from stream_app.cli import DEFAULT_BUNDLE

    model_dir = Path(model_dir or DEFAULT_BUNDLE)
    series, events = simulate_with_events("metal", meters, days, seed=seed,
                                          anomalies_per_meter=1.5)
    # meters the bundle has never seen: each warms up (fits its normalisation) before scoring
    for s in series:
        s.meter_id = f"plant-{s.meter_id}"
    events = [replace(e, meter_id=f"plant-{e.meter_id}") for e in events]
    workdir = Path(os.environ.get("TMPDIR", "/tmp")) / f"meterwatch-demo-{os.getpid()}"
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "worker.log"
    broker = worker = None
    stop = threading.Event()
    alert_log = AlertLog()
    try:
        print(f"starting the embedded {broker_kind} broker ...")
        broker = start_broker(broker_kind)
        topics = {s.meter_id: f"meter.{s.meter_id}" for s in series}
        create_topics(broker.bootstrap, list(topics.values()) + ["meter-alerts"], 4)
        web_port = free_port()
        print(f"starting a worker (bundle {model_dir.name}, log {log_path}) ...")
        worker = start_worker(broker.bootstrap, broker.kind, model_dir,
                              f"meterwatch-demo-{os.getpid()}", web_port, log_path)
        wait_for_worker(worker, web_port, log_path)
        follower = threading.Thread(target=follow_alerts, daemon=True,
                                    args=(broker.bootstrap, "meter-alerts", alert_log, stop, True))
        follower.start()
        sent_at = produce_paced(broker.bootstrap, series, topics, speed)
        try:
            wait_for_metric(web_port, "meterwatch_readings_outcome_total",
                            sum(len(s.values) for s in series), timeout=60)
        except TimeoutError:  # the summary then shows what was scored
            pass
        time.sleep(1.0)
        stop.set()
        follower.join(timeout=5)
        _summary(series, events, sent_at, alert_log)
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted: stopping the worker and the broker")
        return 130
    finally:
        stop.set()
        if worker is not None:
            stop_process(worker, timeout=10)
        if broker is not None:
            broker.stop()


def produce_paced(bootstrap: str, series, topics: dict, speed: float,
                  progress: bool = True) -> dict:
    """Send every reading in time order at `speed` readings/s (inf: as fast as possible);
    returns the wall-clock send time of each (meter_id, epoch ms)."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    order = sorted((int(ts), k, i) for k, s in enumerate(series)
                   for i, ts in enumerate(s.timestamps))
    sent_at: dict = {}
    started = time.perf_counter()
    for n, (ts, k, i) in enumerate(tqdm(order, desc="readings", unit="rd", smoothing=0.1,
                                        disable=not progress)):
        s = series[k]
        key, value = encode_reading(s.meter_id, ts * 1000, float(s.values[i]), s.category)
        producer.produce(topics[s.meter_id], value=value, key=key)
        sent_at[(s.meter_id, ts * 1000)] = time.time()
        producer.poll(0)
        lag = (n + 1) / speed - (time.perf_counter() - started)
        if lag > 0.002:  # a few readings per wake-up: the pacing itself costs little CPU
            time.sleep(lag)
    producer.flush(30)
    return sent_at


def wait_for_metric(web_port: int, name: str, at_least: float, timeout: float) -> None:
    """Poll the worker's /metrics until the total of `name` reaches `at_least`;
    TimeoutError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if metric_total(worker_metrics(web_port, timeout=2), name) >= at_least:
                return
        except OSError:  # a busy worker may answer late: ask again
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"the worker's {name} did not reach {at_least:,.0f} in "
                               f"{timeout:.0f} s")
        time.sleep(0.2)


def _summary(series, events, sent_at: dict, log: AlertLog) -> None:
    from datetime import datetime

    interval = {s.meter_id: s.interval_s for s in series}
    anomalies = [a for a in log.alerts if a["kind"] not in ("gap", "meter_silent")
                 and a["status"] != "resolved"]
    hit_events, false_alerts, latencies = set(), set(), []
    for alert, received in zip(log.alerts, log.received, strict=True):
        end_ms = int(datetime.fromisoformat(alert["window_end"]).timestamp() * 1000)
        if (alert["meter_id"], end_ms) in sent_at and alert["status"] == "open":
            latencies.append(received - sent_at[(alert["meter_id"], end_ms)])
    for alert in anomalies:
        end_s = datetime.fromisoformat(alert["window_end"]).timestamp()
        grace = DETECTION_GRACE * interval[alert["meter_id"]]
        matched = [k for k, e in enumerate(events) if e.meter_id == alert["meter_id"]
                   and e.start_ts <= end_s <= e.end_ts + grace]
        if matched:
            hit_events.update(matched)
        elif alert["status"] == "open":
            false_alerts.add(alert["alert_id"])
    opened = {a["alert_id"] for a in anomalies if a["status"] == "open"}
    lat = np.array(latencies) * 1000 if latencies else np.array([np.nan])
    print("\nsummary")
    print(f"  readings sent          {len(sent_at)} from {len(series)} meters "
          f"({', '.join(sorted({s.category for s in series}))})")
    print(f"  alerts                 {len(opened)} opened, {len(log.alerts)} messages in all")
    print(f"  injected anomalies     {len(hit_events)} of {len(events)} detected, "
          f"{len(events) - len(hit_events)} missed")
    missed = [e.kind for k, e in enumerate(events) if k not in hit_events]
    if missed:
        print(f"  missed kinds           {', '.join(sorted(missed))}")
    print(f"  false alerts           {len(false_alerts)}")
    print(f"  reading->alert latency p50 {np.percentile(lat, 50):.0f} ms, "
          f"p99 {np.percentile(lat, 99):.0f} ms")
