"""The two autoencoders (shapes, configs, rebuild) and the training loop around them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from stream_app.core.errors import ConfigError, InputError
from training.models import (
    MODEL_KINDS,
    CnnGruAE,
    CnnGruConfig,
    LstmAE,
    LstmConfig,
    build_model,
    config_dict,
)
from training.train import TrainConfig, fit_autoencoder, reconstruct

TINY = {"cnn_gru": {"channels": 4, "hidden": 8, "latent": 4, "kernel": 3},
        "lstm": {"hidden": 8, "latent": 4}}


def sine_windows(n: int, window: int, seed: int = 0, noise: float = 0.05) -> np.ndarray:
    """Windows of a noisy sine with random phase: a learnable 'normal' shape."""
    rng = np.random.default_rng(seed)
    t = np.arange(window) / window
    phase = rng.uniform(0, 2 * np.pi, size=(n, 1))
    x = np.sin(2 * np.pi * t + phase) + noise * rng.standard_normal((n, window))
    return x.astype(np.float32)


# --- models -------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", sorted(MODEL_KINDS))
@pytest.mark.parametrize("window", [4, 16, 24, 96])
def test_shape_in_equals_shape_out(kind, window):
    model = build_model(kind, window).eval()
    with torch.no_grad():
        out = model(torch.randn(5, window))
    assert out.shape == (5, window) and out.dtype == torch.float32
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("kind", sorted(MODEL_KINDS))
def test_windows_are_reconstructed_independently_of_the_batch(kind):
    model = build_model(kind, 16).eval()
    x = torch.randn(7, 16)
    with torch.no_grad():
        together = model(x)
        alone = torch.cat([model(x[i:i + 1]) for i in range(7)])
    torch.testing.assert_close(together, alone, atol=1e-6, rtol=0)


def test_build_model_kinds_and_defaults():
    cnn = build_model("cnn_gru", 96)
    lstm = build_model("lstm", 24)
    assert isinstance(cnn, CnnGruAE) and cnn.cfg == CnnGruConfig(window=96)
    assert isinstance(lstm, LstmAE) and lstm.cfg == LstmConfig(window=24)
    # small enough to train on CPU in seconds
    assert sum(p.numel() for p in cnn.parameters()) < 50_000
    assert sum(p.numel() for p in lstm.parameters()) < 50_000


def test_same_seed_same_weights_and_global_rng_untouched():
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    a = build_model("cnn_gru", 16, seed=7)
    after = torch.rand(3)
    b = build_model("cnn_gru", 16, seed=7)
    c = build_model("cnn_gru", 16, seed=8)
    torch.testing.assert_close(before, after)
    for pa, pb in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb)
    assert not torch.equal(a.enc_gru.weight_ih_l0, c.enc_gru.weight_ih_l0)


@pytest.mark.parametrize("kind", sorted(MODEL_KINDS))
def test_config_dict_round_trips_through_json(kind):
    model = build_model(kind, 24, **TINY[kind])
    d = json.loads(json.dumps(config_dict(model)))
    assert d["kind"] == kind and d["window"] == 24
    rebuilt = build_model(**d)
    assert type(rebuilt) is type(model) and rebuilt.cfg == model.cfg


def test_unknown_kind_and_unknown_keys_are_errors():
    with pytest.raises(ConfigError, match="unknown model kind"):
        build_model("transformer", 16)
    with pytest.raises(ConfigError, match="unknown lstm config keys"):
        build_model("lstm", 16, channels=4)
    d = config_dict(build_model("cnn_gru", 16)) | {"dropout": 1}
    with pytest.raises(ConfigError, match="dropout"):
        build_model(**d)


@pytest.mark.parametrize("bad", [{"window": 3}, {"window": 16, "kernel": 4},
                                 {"window": 16, "latent": 0}, {"window": 16, "hidden": 2.5}])
def test_invalid_configs_are_rejected(bad):
    with pytest.raises(ConfigError):
        CnnGruConfig(**bad)


# --- training -----------------------------------------------------------------------------

FAST = TrainConfig(epochs=4, batch_size=32, lr=1e-2, patience=3, seed=0)


@pytest.mark.parametrize("kind", sorted(MODEL_KINDS))
def test_training_reduces_the_reconstruction_error(kind):
    train, val = sine_windows(800, 16, seed=1), sine_windows(150, 16, seed=2)
    model = build_model(kind, 16)
    before = float(np.mean((reconstruct(model, val) - val) ** 2))
    model, hist = fit_autoencoder(model, train, val, FAST, desc=kind)
    after = float(np.mean((reconstruct(model, val) - val) ** 2))
    # predicting the mean would leave the sine's variance, 0.5; the models learn the shape
    assert after < 0.1 < before
    assert not model.training
    assert set(hist) >= {"train_loss", "val_loss", "best_epoch", "epochs_run", "seconds"}
    assert hist["epochs_run"] == len(hist["train_loss"]) == len(hist["val_loss"])
    # the returned weights are the best epoch's: their validation loss is that epoch's
    assert after == pytest.approx(hist["val_loss"][hist["best_epoch"]], rel=1e-5)
    assert hist["val_loss"][hist["best_epoch"]] == min(hist["val_loss"])


def test_training_is_deterministic():
    train, val = sine_windows(300, 16, seed=3), sine_windows(60, 16, seed=4)
    cfg = TrainConfig(epochs=2, batch_size=64, seed=5)
    runs = [fit_autoencoder(build_model("lstm", 16, **TINY["lstm"]), train, val, cfg)
            for _ in range(2)]
    assert runs[0][1]["train_loss"] == runs[1][1]["train_loss"]
    np.testing.assert_array_equal(reconstruct(runs[0][0], val), reconstruct(runs[1][0], val))


def test_early_stopping_stops_and_restores_best():
    # lr so large that the loss cannot keep improving: patience must end the run early
    train, val = sine_windows(200, 8, seed=5), sine_windows(50, 8, seed=6)
    cfg = TrainConfig(epochs=40, batch_size=32, lr=1.0, patience=2, min_delta=0.0)
    model, hist = fit_autoencoder(build_model("lstm", 8, **TINY["lstm"]), train, val, cfg)
    assert hist["epochs_run"] < 40
    assert hist["epochs_run"] == hist["best_epoch"] + 1 + cfg.patience
    final = float(np.mean((reconstruct(model, val) - val) ** 2))
    assert final == pytest.approx(min(hist["val_loss"]), rel=1e-5)


def test_subsampling_caps_training_windows():
    train, val = sine_windows(500, 8), sine_windows(40, 8, seed=9)
    cfg = TrainConfig(epochs=1, max_train_windows=100)
    _, hist = fit_autoencoder(build_model("lstm", 8, **TINY["lstm"]), train, val, cfg)
    # every window is available, an epoch draws 100 of them afresh: one step of 256 or fewer
    assert hist["train_windows"] == 500 and hist["steps"] == 1


def test_reconstruct_matches_forward_in_batches():
    model = build_model("cnn_gru", 16, **TINY["cnn_gru"]).train()
    x = sine_windows(50, 16)
    got = reconstruct(model, x, batch_size=7)
    with torch.no_grad():
        expected = model.eval()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert reconstruct(model, np.empty((0, 16), np.float32)).shape == (0, 16)


def test_bad_inputs_and_configs_raise():
    model = build_model("lstm", 16, **TINY["lstm"])
    good = sine_windows(20, 16)
    with pytest.raises(InputError, match=r"shape \(n, 16\)"):
        fit_autoencoder(model, sine_windows(20, 8), good, FAST)
    with pytest.raises(InputError, match="empty"):
        fit_autoencoder(model, good, good[:0], FAST)
    bad = good.copy()
    bad[0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        fit_autoencoder(model, bad, good, FAST)
    with pytest.raises(ConfigError):
        TrainConfig(epochs=0)
    with pytest.raises(ConfigError):
        TrainConfig(lr=-1.0)
