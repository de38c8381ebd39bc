"""Model bundles: verified loading, refusal of bad bundles, identical scores after reload."""

import json
import shutil

import numpy as np
import pytest

from stream_app.core.errors import BundleError
from stream_app.core.model_bundle import Bundle
from stream_app.core.offline import score_series
from stream_app.core.scoring import Detector


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
    (lambda p: _edit_manifest(p, lambda m: m["dtw"].update(measure="mae")), "'dtw' or 'mse'"),
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


def test_the_mse_ablation_measures_the_mean_squared_reconstruction_error(tiny_bundle, sim_series):
    from stream_app.core.scoring import reconstruction_errors

    detector = Detector(tiny_bundle)
    rows = sim_series[0][0].values[:200]
    rows = np.lib.stride_tricks.sliding_window_view((rows - rows.mean()) / rows.std(), 24)
    windows = detector.trailing_windows(rows)
    mse, recons = reconstruction_errors(detector.reconstructor, tiny_bundle.models, windows,
                                        None, True, measure="mse")
    errors, _ = detector.errors(windows)
    pairs = len(detector.feature_order)
    dtw, recent = errors[:, :pairs], errors[:, pairs:]
    assert recent.shape == dtw.shape  # the bundle also scores its newest readings' error
    for i, feature in enumerate(detector.feature_order):
        model, w = feature.split("/")
        squared = (windows[int(w)] - recons[(model, int(w))]) ** 2
        np.testing.assert_allclose(mse[:, i], squared.mean(axis=1), rtol=1e-5)
        np.testing.assert_allclose(recent[:, i], squared[:, -detector.recent:].mean(axis=1),
                                   rtol=1e-5)
    assert (dtw <= mse * 24 + 1e-9).all() and not np.allclose(dtw, mse)  # DTW warps: not the same


@pytest.mark.slow
def test_mi_fgsm_calibration_follows_the_profile_unless_told(sim_series, tmp_path):
    """`generic` has no explicit limits and augmentation off: its base limit is the profile's
    3.0, or the 99.5th percentile of held-out normal z-scores if lower; asked for MI-FGSM, the
    base limit is chosen on adversarial rows instead."""
    from stream_app.core.profiles import load_profile
    from training.pipeline import TrainOptions, train_bundle
    from training.train import TrainConfig

    small = TrainConfig(epochs=1, max_train_windows=300)
    decisions = {}
    for adversarial in (None, True):
        options = TrainOptions(window_sizes=(16,), models=("lstm",), train=small,
                               n_estimators=20, adversarial=adversarial, version="t")
        bundle = train_bundle(sim_series[0][:2], tmp_path / str(adversarial),
                              load_profile("generic"), options)
        decisions[adversarial] = bundle.manifest["decision"]
    assert decisions[None]["calibration"] in ("usage_ratios", "normal_quantile")
    assert 1.5 <= decisions[None]["base_limit"] <= 3.0
    assert (decisions[None]["base_limit"] == 3.0) == (decisions[None]["calibration"] == "usage_ratios")
    assert decisions[True]["calibration"] == "mi_fgsm_f1"
    assert 1.5 <= decisions[True]["base_limit"] <= 6.0


def test_a_large_batch_is_reconstructed_in_cpu_chunks_with_the_same_result(tiny_bundle):
    from stream_app.core import inference

    reconstructor = Detector(tiny_bundle).reconstructor
    windows = np.random.default_rng(3).normal(size=(1000, 24)).astype(np.float32)
    assert 1000 > inference.CPU_CHUNK_VALUES // 24  # this batch is split
    for model in tiny_bundle.models:
        whole = reconstructor.reconstruct(model, 24, windows)
        one_by_one = np.concatenate([reconstructor.reconstruct(model, 24, windows[i:i + 1])
                                     for i in range(len(windows))])
        assert whole.shape == (1000, 24)
        np.testing.assert_allclose(whole, one_by_one, rtol=1e-5, atol=1e-6)
