"""Model bundles: verified loading, refusal of bad bundles, identical scores after reload."""

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from stream_app.core.errors import BundleError
from stream_app.core.manifest import MAX_BYTES
from stream_app.core.model_bundle import Bundle, read_manifest, write_manifest
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
    assert m.window_sizes == (24, 16)
    assert m.feature_order == ("cnn_gru/24", "lstm/24", "cnn_gru/16", "lstm/16")
    assert set(m.decision.limits) == {"industrial", "general", "late_night", "agricultural"}
    assert m.decision.limits["industrial"] == 3.0  # metal profile: the study's values
    for name, entry in m.files.items():
        assert len(entry.sha256) == 64, name
        if entry.role == "autoencoder":
            assert entry.opset >= 17 and entry.parity_max_abs_diff <= 1e-4
    written = json.loads((tiny_bundle.path / "manifest.json").read_text())
    assert json.loads(m.to_json()) == written  # training writes what the Manifest holds


def test_a_bundle_trained_without_evidence_says_so(sim_series, tmp_path):
    """The reconstruction-only ablation: an evidence section with no profile branch."""
    from stream_app.core.profiles import load_profile
    from training.pipeline import TrainOptions, train_bundle
    from training.train import TrainConfig

    options = TrainOptions(window_sizes=(16,), models=("lstm",), n_estimators=10, version="t",
                           evidence=False, train=TrainConfig(epochs=1, max_train_windows=200))
    bundle = train_bundle(sim_series[0][:1], tmp_path / "plain", load_profile("metal"), options)
    assert bundle.manifest.evidence.profile_limit is None
    assert dict(bundle.manifest.evidence.meters) == {} and len(bundle.profiles) == 0
    assert Detector(bundle).profile_limit == np.inf


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
        decisions[adversarial] = bundle.manifest.decision
    assert decisions[None].calibration in ("usage_ratios", "normal_quantile")
    assert 1.5 <= decisions[None].base_limit <= 3.0
    assert (decisions[None].base_limit == 3.0) == (decisions[None].calibration == "usage_ratios")
    assert decisions[True].calibration == "mi_fgsm_f1"
    assert 1.5 <= decisions[True].base_limit <= 6.0


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


# --- a bundle is confined to its folder; each refusal is one line --------------------------

SHIPPED = Path(__file__).resolve().parents[2] / "onnx_models" / "default"


@pytest.fixture
def shipped_copy(tmp_path):
    """The shipped default bundle, copied: a valid bundle that needs no training."""
    path = tmp_path / "bundle"
    shutil.copytree(SHIPPED, path)
    return path


def _list_file(path, name, content=None):
    """List a file under `name` with the real SHA-256 and size of `content` (a file the
    manifest names with its true hash is still refused when it is not a plain name)."""
    manifest = json.loads((path / "manifest.json").read_text())
    data = content if content is not None else b"x"
    entry = dict(manifest["files"]["forest.npz"], sha256=hashlib.sha256(data).hexdigest(),
                 bytes=len(data))
    manifest["files"][name] = entry
    (path / "manifest.json").write_text(json.dumps(manifest))


def _link_manifest_outside(path):
    outside = path.parent / "elsewhere.json"
    (path / "manifest.json").rename(outside)
    (path / "manifest.json").symlink_to(outside)


def _link_onnx_outside(path):
    outside = path.parent / "model.onnx"
    (path / "lstm_w16.onnx").rename(outside)
    (path / "lstm_w16.onnx").symlink_to(outside)


def _drop_bytes(path):
    _edit_manifest(path, lambda m: m["files"]["forest.npz"].pop("bytes"))


def _deep(path):
    (path / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)


def _huge(path):
    with open(path / "manifest.json", "r+b") as fh:  # sparse: no 64 MiB written
        fh.truncate(MAX_BYTES + 1)


def _nan_normalisation(path):
    text = (path / "manifest.json").read_text()
    (path / "manifest.json").write_text(text.replace('"std": 33.44390247316456', '"std": NaN'))


def _broken_forest_with_its_hash(path):
    (path / "forest.npz").write_bytes(b"PK\x03\x04 not a zip archive")
    write_manifest(path, read_manifest(path))  # listed with its true hash


def _one_category(path):
    _edit_manifest(path, lambda m: m["decision"].update(limits={"industrial": 3.0}))


@pytest.mark.parametrize("damage, message", [
    (lambda p: _list_file(p, "../../../../etc/passwd", Path("/etc/passwd").read_bytes()),
     "is not a plain file name inside the bundle"),
    (lambda p: _list_file(p, "/etc/passwd", Path("/etc/passwd").read_bytes()),
     "is not a plain file name inside the bundle"),
    (lambda p: _edit_manifest(p, lambda m: m.update(models=["../outside/models/cnn_gru", "lstm"])),
     "'models' must be distinct kinds of cnn_gru, lstm"),
    (_link_manifest_outside, "manifest.json is a symbolic link"),
    (_link_onnx_outside, "holds symbolic links: ['lstm_w16.onnx']"),
    (lambda p: (p / "notes.txt").symlink_to("/etc/passwd"), "holds symbolic links"),
    (_drop_bytes, """lacks field 'files["forest.npz"].bytes'"""),
    (_deep, "nested more than"),
    (_huge, "more than the 67108864 a manifest may have"),
    (_nan_normalisation, "NaN is not a number a manifest may hold"),
    (_one_category, "no limit for category 'general'"),
    (_broken_forest_with_its_hash, "is incompatible"),
])
def test_a_bundle_is_confined_and_every_refusal_is_one_line(shipped_copy, damage, message):
    damage(shipped_copy)
    with pytest.raises(BundleError) as info:
        Bundle.load(shipped_copy)
    assert message in str(info.value) and "\n" not in str(info.value), str(info.value)




def test_score_with_a_bad_bundle_exits_2_with_one_line(shipped_copy, capsys, tmp_path):
    from stream_app.cli import main

    _drop_bytes(shipped_copy)
    csv = tmp_path / "m.csv"
    csv.write_text("timestamp,meter_id,kwh\n2024-01-01T00:00:00Z,m,1.0\n")
    code = main(["score", "--input", str(csv), "--out", str(tmp_path / "o.csv"),
                 "--model", str(shipped_copy)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("meterwatch score: error:") and "bytes" in err


def test_write_manifest_keeps_the_shipped_values(shipped_copy):
    before = json.loads((shipped_copy / "manifest.json").read_text())
    write_manifest(shipped_copy, read_manifest(shipped_copy))
    assert json.loads((shipped_copy / "manifest.json").read_text()) == before
    assert Bundle.load(shipped_copy).version == "default@2"
