"""Model registry: company > profile > default, new versions picked up, bad ones refused."""

import json
import logging
import shutil
from dataclasses import replace

import pytest

from stream_app.core.errors import BundleError
from stream_app.core.model_bundle import MANIFEST, read_manifest, write_manifest
from stream_app.core.records import Reading
from stream_app.core.stream_scoring import StreamScorer
from stream_app.stream.registry import Registry, latest_bundle, version_number


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


def test_version_names_are_ascii_decimal_numbers():
    assert [version_number(n) for n in ("7", "10", "007")] == [7, 10, 7]
    assert [version_number(n) for n in ("²", "١٢", "v2", "1.5", "-1", "", " 1")] == [None] * 7


def test_a_version_folder_named_superscript_two_is_ignored_not_a_crash(root, tiny_bundle, caplog):
    registry = Registry(root)
    place(tiny_bundle, root / "acme" / "²", "acme", "99")
    with caplog.at_level(logging.WARNING, "meterwatch.registry"):
        assert registry.refresh() == [] and registry.refresh() == []
    assert registry.resolve("acme", None).bundle.version == "acme@1"
    ignored = [r for r in caplog.records if "ignored" in r.getMessage()]
    assert len(ignored) == 1 and "ASCII decimal" in ignored[0].getMessage()  # logged once


def test_a_version_folder_linked_out_of_the_root_is_refused(root, tiny_bundle, tmp_path_factory,
                                                             caplog):
    registry = Registry(root)
    outside = tmp_path_factory.mktemp("outside") / "bundle"
    place(tiny_bundle, outside, "acme", "5")  # a valid bundle, but not the registry's
    (root / "acme" / "5").symlink_to(outside, target_is_directory=True)
    with caplog.at_level(logging.ERROR, "meterwatch.registry"):
        assert registry.refresh() == [] and registry.refresh() == []
    assert registry.resolve("acme", None).bundle.version == "acme@1"  # the old one serves
    assert "outside the registry root" in registry.refusals["acme"]
    assert len([r for r in caplog.records if "refused" in r.getMessage()]) == 1


def test_a_link_inside_the_root_serves(root):
    (root / "acme" / "3").symlink_to(root / "acme" / "1", target_is_directory=True)
    registry = Registry(root)
    assert registry.paths["acme"] == root / "acme" / "3"


def _drop_bytes(path):
    manifest = json.loads((path / MANIFEST).read_text())
    del manifest["files"]["forest.npz"]["bytes"]
    (path / MANIFEST).write_text(json.dumps(manifest))


@pytest.mark.parametrize("damage, why", [
    (_drop_bytes, "lacks field 'files[\"forest.npz\"].bytes'"),
    (lambda p: (p / MANIFEST).write_text("[" * 100_000 + "]" * 100_000), "nested more than"),
    (lambda p: (p / "forest.npz").write_bytes(b"broken"), "forest.npz does not match"),
])
def test_a_bad_new_version_is_refused_and_the_old_one_serves(root, tiny_bundle, damage, why):
    registry = Registry(root)
    place(tiny_bundle, root / "acme" / "2", "acme", "2")
    damage(root / "acme" / "2")
    assert registry.refresh() == []
    assert registry.resolve("acme", None).bundle.version == "acme@1"
    assert why in registry.refusals["acme"]


def test_a_bad_default_stops_the_start_with_the_reason(root):
    _drop_bytes(root / "default")
    with pytest.raises(BundleError, match=r"no 'default' bundle: .*lacks field") as info:
        Registry(root)
    assert "\n" not in str(info.value)
