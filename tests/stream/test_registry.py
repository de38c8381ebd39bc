"""Model registry: company > profile > default, new versions picked up, bad ones refused."""

import shutil
from dataclasses import replace

import pytest

from stream_app.core.errors import BundleError
from stream_app.core.model_bundle import read_manifest, write_manifest
from stream_app.core.records import Reading
from stream_app.core.stream_scoring import StreamScorer
from stream_app.stream.registry import Registry, latest_bundle


def place(tiny_bundle, path, name, version):
    shutil.copytree(tiny_bundle.path, path)
    write_manifest(path, replace(read_manifest(path), name=name, version=version))


@pytest.fixture
def root(tiny_bundle, tmp_path):
    place(tiny_bundle, tmp_path / "default", "default", "1")
    place(tiny_bundle, tmp_path / "acme" / "1", "acme", "1")
    place(tiny_bundle, tmp_path / "food" / "2", "food", "2")
    (tmp_path / "empty").mkdir()
    return tmp_path


def test_resolution_order(root):
    registry = Registry(root)
    assert registry.versions() == {"acme": "acme@1", "default": "default@1", "food": "food@2"}
    assert registry.resolve("acme", "food").bundle.version == "acme@1"
    assert registry.resolve("other", "food").bundle.version == "food@2"
    assert registry.resolve(None, None).bundle.version == "default@1"


def test_new_version_is_picked_up_and_a_bad_one_refused(root, tiny_bundle):
    registry = Registry(root)
    place(tiny_bundle, root / "acme" / "10", "acme", "10")  # 10 > 9 > 2: natural order
    assert registry.refresh() == ["acme"]
    assert registry.resolve("acme", None).bundle.version == "acme@10"
    place(tiny_bundle, root / "acme" / "11", "acme", "11")
    (root / "acme" / "11" / "forest.npz").write_bytes(b"broken")
    assert registry.refresh() == []
    assert registry.resolve("acme", None).bundle.version == "acme@10"  # the old one serves
    assert latest_bundle(root / "acme").name == "11"


def test_registry_needs_a_default(tiny_bundle, tmp_path):
    place(tiny_bundle, tmp_path / "acme", "acme", "1")
    with pytest.raises(BundleError, match="no 'default' bundle"):
        Registry(tmp_path)


def test_each_reading_is_scored_by_its_company_bundle(root, sim_series):
    registry = Registry(root)
    scorer = StreamScorer(registry.detectors["default"], registry=registry)
    series = sim_series[0][0]
    readings = [Reading(series.meter_id, int(t) * 1000, float(v), series.category,
                        company="acme") for t, v in zip(series.timestamps, series.values)]
    states, alerts = {}, []
    for start in range(0, len(readings), 256):
        batch = readings[start:start + 256]
        result = scorer.process(batch, {series.meter_id: states.get(series.meter_id)})
        states.update(result.states)
        alerts += result.alerts
    anomalies = [a for a in alerts if a.kind == "anomaly"]
    assert anomalies and all(a.bundle_version == "acme@1" for a in anomalies)
