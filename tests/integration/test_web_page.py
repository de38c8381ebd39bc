"""The worker's live alert page (headless Chromium) and silent-meter alerts, on a real broker.

One worker serves the tests: the page's headers over plain HTTP (always), the page itself in
headless Chromium (when installed: it runs the page's script under its Content-Security-Policy),
and silent meters. Readings of a simulated meter with injected anomalies give
anomaly alerts for the page; a meter reporting every 2 s and then stopping gives a
`meter_silent` alert after 4 x 2 s of wall clock, resolved by its next reading.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
import uuid

import pytest
from test_worker_kafka import Run, expected_alerts, metric, wait_for

from stream_app.core.alerts import alert_id
from stream_app.core.records import encode_reading
from stream_app.stream.pages import SECURITY_HEADERS
from stream_app.stream.topics import create_topics

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

QUIET = "quiet-1"


def get_json(port: int, path: str):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
        return json.loads(resp.read())


@pytest.fixture(scope="module")
def live(kafka_broker, tiny_bundle, sim_series, tmp_path_factory):
    """(run, web port, the anomaly alerts `score` expects) once the readings are processed."""
    name = f"web-{uuid.uuid4().hex[:8]}"
    run = Run(kafka_broker, tiny_bundle.path, tmp_path_factory.mktemp("web"), name)
    series = sim_series[0]
    with_alerts = [s for s in series if expected_alerts(tiny_bundle, [s])][:1]
    assert with_alerts, "the simulated anomalies should raise alerts"
    create_topics(kafka_broker.bootstrap, [run.topic(s.meter_id) for s in with_alerts]
                  + [run.topic(QUIET)], 4)
    try:
        _, port = run.start_worker()
        s = with_alerts[0]
        run.produce([(run.topic(s.meter_id), *encode_reading(
            s.meter_id, int(t) * 1000, float(v), s.category)) for t, v in zip(s.timestamps,
                                                                             s.values, strict=True)])
        wait_for(lambda: metric(port, "meterwatch_readings_outcome_total") >= len(s.values), 180,
                 "the meter's readings to be processed")
        yield run, port, expected_alerts(tiny_bundle, with_alerts)
    finally:
        run.stop()


def get(port: int, path: str) -> tuple[int, dict]:
    """Status and headers of a GET, errors included."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers)


def test_every_page_of_a_running_worker_is_locked_down(live):
    """Plain HTTP, no browser: the security headers on every page (errors too), Faust's own
    router and table pages gone, the page's style served as a file (the CSP has no inline)."""
    _, port, _ = live
    pages = ["/", "/web/app.js", "/web/app.css", "/api/alerts", "/api/readings?meter=x",
             "/metrics", "/health"]
    for path in pages:
        status, headers = get(port, path)
        assert status == 200, path
        assert headers["Content-Security-Policy"] == SECURITY_HEADERS["Content-Security-Policy"]
        assert headers["X-Content-Type-Options"] == "nosniff", path
    for path in ("/router/", "/table/", "/table/meter-state/", "/no-such-page"):
        status, headers = get(port, path)
        assert status == 404 and headers["X-Content-Type-Options"] == "nosniff", path
    assert get_json(port, "/health")["status"] == "ok"


def chromium(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("no chromium on PATH (apt-get install chromium) for the headless page test")
    return subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu",
                           "--disable-background-networking", "--disable-component-update",
                           "--disable-sync", "--no-first-run", *args],
                          check=True, capture_output=True, text=True, timeout=timeout)


def test_page_lists_the_alerts_and_plots_the_selected_one(live, tmp_path):
    _, port, expected = live
    opened = {aid for aid, status in expected if status == "open"}
    wait_for(lambda: opened <= {a["alert_id"] for a in get_json(port, "/api/alerts")["alerts"]},
             30, "the alerts in the page's JSON")
    url = f"http://127.0.0.1:{port}/"
    profile = tmp_path / "chromium"
    done = chromium(f"--user-data-dir={profile}", "--virtual-time-budget=5000", "--dump-dom",
                    "--enable-logging=stderr", url)
    dom = done.stdout
    assert "Content Security Policy" not in done.stderr, done.stderr[-2000:]  # nothing refused
    for aid in opened:
        assert f'id="alert-{aid}"' in dom, aid
    assert 'id="plot"' in dom
    assert '<polyline class="actual"' in dom and '<polyline class="expected"' in dom
    shot = tmp_path / "page.png"
    chromium(f"--user-data-dir={profile}", "--virtual-time-budget=5000", "--window-size=1300,700",
             f"--screenshot={shot}", url)
    assert shot.stat().st_size > 10_000
    print(f"\nscreenshot: {shot}")
    readings = get_json(port, "/api/readings?meter=" + next(iter(
        a["meter_id"] for a in get_json(port, "/api/alerts")["alerts"])))["readings"]
    steps = {b[0] - a[0] for a, b in zip(readings, readings[1:])}
    assert len(readings) >= 16 and steps == {900_000}  # the state's history, on its grid


def test_a_meter_that_stops_reporting_raises_and_resolves_a_silent_alert(live):
    run, port, _ = live
    topic = run.topic(QUIET)
    base = (int(time.time()) // 2 * 2 - 60) * 1000
    def produce(k):
        return run.produce([(topic, *encode_reading(QUIET, base + 2000 * k, 1.0, "general",
                                                     interval_s=2))])
    for k in range(3):
        produce(k)
        time.sleep(1.0)
    last_sent = time.time()

    def silence_alerts():
        return [a for a in get_json(port, "/api/alerts")["alerts"]
                if a["meter_id"] == QUIET and a["kind"] == "meter_silent"]

    wait_for(lambda: silence_alerts(), 30, "the silent-meter alert")
    seen_after = time.time() - last_sent
    (opened,) = silence_alerts()
    assert opened["status"] == "open" and seen_after >= 8.0 - 1.0  # 4 x 2 s, less produce lag
    assert opened["alert_id"] == alert_id(opened["bundle_version"], QUIET, base + 4000, 0,
                                          kind="meter_silent")
    assert opened["zscore"] > opened["threshold"] == 4.0
    assert get_json(port, "/api/alerts")["silent_meters"] == [QUIET]
    produce(3)
    wait_for(lambda: len(silence_alerts()) == 2, 20, "the resolved silent-meter alert")
    resolved = silence_alerts()[0]
    assert (resolved["status"], resolved["alert_id"]) == ("resolved", opened["alert_id"])
    on_topic = run.consume(run.env["MW_ALERTS_TOPIC"], lambda got: len(
        [a for a in got if a["kind"] == "meter_silent"]) >= 2, timeout=30)
    assert [a["status"] for a in on_topic if a["kind"] == "meter_silent"] == ["open", "resolved"]
