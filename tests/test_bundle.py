"""Model bundles: verified loading, refusal of bad bundles, identical scores after reload."""

import json
import shutil

import numpy as np
import pytest

from stream_app.errors import BundleError
from stream_app.model_bundle import Bundle
from stream_app.offline import score_series
from stream_app.scoring import Detector


@pytest.fixture
def bundle_copy(tiny_bundle, tmp_path):
    path = tmp_path / "copy"
    shutil.copytree(tiny_bundle.path, path)
    return path


def _edit_manifest(path, change):
    manifest = json.loads((path / "manifest.json").read_text())
    change(manifest)
    (path / "manifest.json").write_text(json.dumps(manifest))


def test_bundle_carries_what_the_worker_needs(tiny_bundle):
    m = tiny_bundle.manifest
    assert m["window_sizes"] == [24, 16]
    assert m["feature_order"] == ["cnn_gru/24", "lstm/24", "cnn_gru/16", "lstm/16"]
    assert set(m["decision"]["limits"]) == {"industrial", "general", "late_night", "agricultural"}
    assert m["decision"]["limits"]["industrial"] == 3.0  # metal profile: the study's values
    for name, entry in m["files"].items():
        assert len(entry["sha256"]) == 64, name
        if entry["role"] == "autoencoder":
            assert entry["opset"] >= 17 and entry["parity_max_abs_diff"] <= 1e-4


def test_reload_gives_identical_scores(tiny_bundle, sim_series):
    series = sim_series[0][0]
    first = score_series(Detector(tiny_bundle), series)
    again = score_series(Detector(Bundle.load(tiny_bundle.path)), series)
    np.testing.assert_array_equal(first.score, again.score)
    np.testing.assert_array_equal(first.flagged, again.flagged)
    assert np.isfinite(first.score).sum() > len(series.values) // 2


@pytest.mark.parametrize("tamper, message", [
    (lambda p: (p / "lstm_w24.onnx").write_bytes(b"\0" + (p / "lstm_w24.onnx").read_bytes()),
     "was modified"),
    (lambda p: (p / "forest.npz").unlink(), "forest.npz is missing"),
    (lambda p: (p / "extra.bin").write_bytes(b"x"), "does not list"),
    (lambda p: _edit_manifest(p, lambda m: m.update(surprise=1)), "unknown field 'surprise'"),
    (lambda p: _edit_manifest(p, lambda m: m["dtw"].update(bandwidth=3)),
     "unknown field 'dtw.bandwidth'"),
    (lambda p: _edit_manifest(p, lambda m: m.update(schema_version=99)), "schema_version 99"),
    (lambda p: _edit_manifest(p, lambda m: m.update(window_sizes="24")), "wrong type"),
    (lambda p: (p / "manifest.json").write_text("{not json"), "not valid JSON"),
    (lambda p: (p / "manifest.json").unlink(), "manifest.json is missing"),
])
def test_bad_bundle_is_refused_with_one_clear_message(bundle_copy, tamper, message):
    tamper(bundle_copy)
    with pytest.raises(BundleError, match=message):
        Bundle.load(bundle_copy)


def test_forest_is_loaded_without_pickle(tiny_bundle):
    with np.load(tiny_bundle.path / "forest.npz", allow_pickle=False) as arrays:
        assert all(a.dtype != object for a in arrays.values())
