"""MI-FGSM: the L-infinity ball, determinism, the FGSM special case, and that it really attacks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stream_app.core.errors import ConfigError, InputError
from training.adversarial import mi_fgsm
from training.models import build_model
from training.train import TrainConfig, fit_autoencoder, reconstruct

WINDOW = 16


def sine_windows(n: int, seed: int, noise: float = 0.05) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(WINDOW) / WINDOW
    phase = rng.uniform(0, 2 * np.pi, size=(n, 1))
    return (np.sin(2 * np.pi * t + phase) + noise * rng.standard_normal((n, WINDOW))).astype(
        np.float32
    )


@pytest.fixture(scope="module")
def trained():
    """A small LSTM-AE that reconstructs noisy sines well (val MSE ~0.005)."""
    model = build_model("lstm", WINDOW, hidden=16, latent=4)
    cfg = TrainConfig(epochs=4, batch_size=32, lr=1e-2, seed=0)
    model, _ = fit_autoencoder(model, sine_windows(800, 1), sine_windows(150, 2), cfg)
    return model


def mse(model, x: np.ndarray, target: np.ndarray) -> np.ndarray:
    return ((reconstruct(model, x) - target) ** 2).mean(axis=1)


def fgsm(model, x: np.ndarray, eps: float) -> np.ndarray:
    """Plain one-step FGSM written out by hand: x + eps * sign(d MSE(model(x), x) / dx)."""
    xt = torch.tensor(x, requires_grad=True)
    loss = ((model(xt) - torch.tensor(x)) ** 2).mean(dim=1).sum()
    (grad,) = torch.autograd.grad(loss, xt)
    return (xt + eps * grad.sign()).detach().numpy()


@pytest.mark.parametrize("eps", [0.05, 0.25, 1.0])
def test_perturbation_stays_in_the_linf_ball(trained, eps):
    x = sine_windows(64, 3)
    adv = mi_fgsm(trained, x, epsilon=eps, steps=7)
    assert adv.shape == x.shape and adv.dtype == np.float32
    assert np.max(np.abs(adv - x)) <= eps + 1e-6
    # ten steps of eps/10 in a consistent direction reach the edge of the ball somewhere
    assert np.max(np.abs(adv - x)) > 0.5 * eps


def test_zero_epsilon_returns_the_input(trained):
    x = sine_windows(10, 4)
    np.testing.assert_array_equal(mi_fgsm(trained, x, epsilon=0.0), x)


def test_attack_raises_the_reconstruction_error(trained):
    x = sine_windows(200, 5)
    clean = mse(trained, x, x)
    adv = mi_fgsm(trained, x, epsilon=0.25, momentum=1.0, steps=10)
    attacked = mse(trained, adv, x)
    assert attacked.mean() > 3 * clean.mean()
    assert np.mean(attacked > clean) > 0.95
    # and it beats random sign noise of the same size, which is what makes it adversarial
    rng = np.random.default_rng(0)
    noisy = x + 0.25 * np.sign(rng.standard_normal(x.shape)).astype(np.float32)
    assert attacked.mean() > mse(trained, noisy, x).mean()


def test_deterministic_and_batch_independent(trained):
    x = sine_windows(50, 6)
    a = mi_fgsm(trained, x, seed=1)
    b = mi_fgsm(trained, x, seed=1)
    c = mi_fgsm(trained, x, seed=1, batch_size=7)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a, c, atol=1e-6)


def test_one_step_without_momentum_is_plain_fgsm(trained):
    x = sine_windows(40, 7)
    got = mi_fgsm(trained, x, epsilon=0.25, momentum=0.0, steps=1)
    np.testing.assert_allclose(got, fgsm(trained, x, 0.25), atol=1e-6)


def test_model_state_is_left_alone(trained):
    trained.train()
    trained.zero_grad(set_to_none=True)
    before = {k: v.clone() for k, v in trained.state_dict().items()}
    mi_fgsm(trained, sine_windows(8, 8), steps=3)
    assert trained.training  # mode restored
    assert all(p.grad is None for p in trained.parameters())
    for k, v in trained.state_dict().items():
        assert torch.equal(v, before[k])
    trained.eval()


def test_bad_arguments_raise(trained):
    x = sine_windows(4, 9)
    with pytest.raises(ConfigError):
        mi_fgsm(trained, x, epsilon=-0.1)
    with pytest.raises(ConfigError):
        mi_fgsm(trained, x, steps=0)
    with pytest.raises(ConfigError):
        mi_fgsm(trained, x, momentum=float("nan"))
    with pytest.raises(InputError):
        mi_fgsm(trained, x[0])
    x[0, 0] = np.inf
    with pytest.raises(InputError):
        mi_fgsm(trained, x)
