"""Hot reload: a new verified bundle is switched to without a restart; a bad one is refused."""

import json
import shutil
import time
import urllib.request
from dataclasses import replace

import pytest

from stream_app.core.manifest import MAX_BYTES
from stream_app.core.model_bundle import MANIFEST, read_manifest, write_manifest
from stream_app.stream.reload import BundleWatcher


def bump_version(path, version):
    write_manifest(path, replace(read_manifest(path), version=version))


@pytest.fixture
def bundle_dir(tiny_bundle, tmp_path):
    path = tmp_path / "live"
    shutil.copytree(tiny_bundle.path, path)
    return path


def test_watcher_switches_only_to_a_changed_bundle_that_verifies(bundle_dir):
    watcher = BundleWatcher(bundle_dir)
    assert watcher.poll() is None  # unchanged
    bump_version(bundle_dir, "2")
    fresh = watcher.poll()
    assert fresh is not None and fresh.bundle.version == "tiny@2"
    assert watcher.poll() is None and watcher.reloads == 1


def test_a_bad_new_bundle_keeps_the_old_one_and_is_retried(bundle_dir):
    watcher = BundleWatcher(bundle_dir)
    onnx = bundle_dir / "lstm_w16.onnx"
    good = onnx.read_bytes()
    bump_version(bundle_dir, "3")
    onnx.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))  # tampered after hashing
    assert watcher.poll() is None and watcher.failures == 1
    assert watcher.poll() is None and watcher.failures == 1  # logged once per content
    onnx.write_bytes(good)  # the copy completes
    fresh = watcher.poll()
    assert fresh is not None and fresh.bundle.version == "tiny@3"


def _drop_bytes(path):
    manifest = json.loads((path / MANIFEST).read_text())
    del manifest["files"]["forest.npz"]["bytes"]
    (path / MANIFEST).write_text(json.dumps(manifest))


def _link_manifest(path):
    outside = path.parent / "outside.json"
    outside.write_bytes((path / MANIFEST).read_bytes())
    (path / MANIFEST).unlink()
    (path / MANIFEST).symlink_to(outside)


def _huge_manifest(path):
    with open(path / MANIFEST, "r+b") as fh:
        fh.truncate(MAX_BYTES + 1)


def _limits_for_one_category(path):
    manifest = json.loads((path / MANIFEST).read_text())
    manifest["decision"]["limits"] = {"industrial": 3.0}
    (path / MANIFEST).write_text(json.dumps(manifest))


@pytest.mark.parametrize("damage, why", [
    (_drop_bytes, "lacks field"),
    (lambda p: (p / MANIFEST).write_text('{"a":' * 100_000 + "1" + "}" * 100_000),
     "nested more than"),
    (_link_manifest, "is a symbolic link"),
    (_huge_manifest, "a manifest may have"),
    (_limits_for_one_category, "no limit for category"),
    (lambda p: (p / MANIFEST).write_text('{"schema_version": 1, "name": NaN}'), "NaN"),
])
def test_a_refused_reload_is_logged_once_and_the_old_bundle_keeps_serving(
        bundle_dir, damage, why, caplog):
    watcher = BundleWatcher(bundle_dir)
    damage(bundle_dir)
    with caplog.at_level("ERROR", "meterwatch.reload"):
        assert watcher.poll() is None and watcher.poll() is None
    refusals = [r.getMessage() for r in caplog.records]
    assert watcher.failures == 1 and len(refusals) == 1
    assert "the old one keeps serving" in refusals[0] and why in refusals[0], refusals[0]
    assert "\n" not in refusals[0]


@pytest.mark.kafka
@pytest.mark.slow
def test_worker_switches_bundle_without_restart_and_loses_no_reading(
        kafka_broker, bundle_dir, sim_series, tmp_path, unique_name):
    from test_worker_kafka import Run, _messages, metric, wait_for

    from stream_app.stream.topics import create_topics

    run = Run(kafka_broker, bundle_dir, tmp_path, unique_name("mw").replace("_", "-"))
    try:
        series = sim_series[0][:2]
        create_topics(kafka_broker.bootstrap, [run.topic(s.meter_id) for s in series], 4)
        _, port = run.start_worker()
        n = len(series[0].values)
        first = _messages(run, series, range(n // 2))
        run.produce(first)
        wait_for(lambda: metric(port, "meterwatch_readings_outcome_total") >= len(first), 120,
                 "the first half")

        def health():
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                return json.loads(r.read())

        assert health()["bundle"] == "tiny@1"
        started = time.monotonic()
        bump_version(bundle_dir, "2")
        wait_for(lambda: health()["bundle"] == "tiny@2", 30, "the switch to version 2")
        switch_s = time.monotonic() - started
        second = _messages(run, series, range(n // 2, n))
        run.produce(second)
        total = len(first) + len(second)
        wait_for(lambda: metric(port, "meterwatch_readings_outcome_total") >= total, 120,
                 "the second half")
        processed = metric(port, "meterwatch_readings_outcome_total")
        lost = total - processed - metric(port, "meterwatch_readings_invalid_total")
        print(f"\nhot reload: switched in {switch_s:.1f} s (poll every 2 s); "
              f"readings produced {total}, processed {processed:.0f}, lost {lost:.0f}")
        assert lost == 0
        assert metric(port, "meterwatch_bundle_reloads_total") == 1
    finally:
        run.stop()
