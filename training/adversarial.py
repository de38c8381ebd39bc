"""MI-FGSM (Dong et al., 2018): adversarial windows for the scarce anomaly class.

Starting from a normal window x, each step moves x_adv along the sign of a momentum-accumulated,
L1-normalised gradient of the autoencoder's reconstruction loss, and projects back into the
L-infinity ball of radius epsilon around x:

    g_0 = 0,  x_0 = x
    grad_t  = d L(x_t) / d x_t,     L(x_t) = mean_w (model(x_t) - x)^2   (per window)
    g_{t+1} = mu * g_t + grad_t / (||grad_t||_1 + tiny)                  (per window)
    x_{t+1} = clip_{|. - x| <= eps}(x_t + alpha * sign(g_{t+1})),  alpha = eps / steps

The loss target is the CLEAN window x, not x_adv: we want inputs the model maps far from the
normal shape they came from, i.e. small distortions of normal behaviour that the autoencoder
does not reconstruct — the kind of sample the decision stage must learn to flag. (Targeting
x_adv itself would instead search for inputs the model cannot copy, which drifts towards
generic noise.) Windows are independent: the batch loss is the sum of the per-window losses, so
one window's gradient never depends on its neighbours in the batch.

Epsilon is in the units of the windows: normalised readings (z-scores with the meter's mean and
std). The study's eps = 0.25 is thus a quarter of a standard deviation of the meter's readings.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from stream_app.core.errors import ConfigError, InputError

_L1_TINY = 1e-12  # keeps the normalisation finite where the gradient vanishes


def mi_fgsm(
    model: nn.Module,
    windows: np.ndarray,
    *,
    epsilon: float = 0.25,
    momentum: float = 1.0,
    steps: int = 10,
    seed: int = 0,
    batch_size: int = 4096,
) -> np.ndarray:
    """Adversarial copies of `windows` (float32, same shape), |x_adv - x| <= epsilon everywhere.

    The model is run in eval mode and its parameters receive no gradients; its training mode
    is restored afterwards. The attack itself is deterministic; `seed` fixes torch's RNG inside
    a forked RNG state for any stochastic layer a model may carry, leaving the caller's untouched.
    """
    if not (np.isfinite(epsilon) and epsilon >= 0):
        raise ConfigError(f"epsilon must be a finite number >= 0, got {epsilon!r}")
    if not (np.isfinite(momentum) and momentum >= 0):
        raise ConfigError(f"momentum must be a finite number >= 0, got {momentum!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"steps must be a positive int, got {steps!r}")
    x = np.ascontiguousarray(windows, dtype=np.float32)
    if x.ndim != 2:
        raise InputError(f"windows must be 2-D (n, window), got shape {x.shape}")
    if not np.isfinite(x).all():
        raise InputError("windows contain NaN or inf")
    if epsilon == 0 or len(x) == 0:
        return x.copy()

    was_training = model.training
    model.eval()
    out = np.empty_like(x)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for lo in range(0, len(x), batch_size):
                batch = torch.from_numpy(x[lo:lo + batch_size])
                out[lo:lo + batch_size] = _mi_fgsm_batch(
                    model, batch, float(epsilon), float(momentum), steps
                ).numpy()
    finally:
        model.train(was_training)
    return out


def _mi_fgsm_batch(model: nn.Module, x: torch.Tensor, eps: float, mu: float,
                   steps: int) -> torch.Tensor:
    alpha = eps / steps
    g = torch.zeros_like(x)
    x_adv = x.clone()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        per_window = ((model(x_adv) - x) ** 2).mean(dim=1)
        # autograd.grad w.r.t. x_adv only: no .grad is accumulated on the parameters.
        (grad,) = torch.autograd.grad(per_window.sum(), x_adv)
        with torch.no_grad():
            g = mu * g + grad / (grad.abs().sum(dim=1, keepdim=True) + _L1_TINY)
            x_adv = x_adv + alpha * torch.sign(g)
            x_adv = torch.clamp(x_adv, x - eps, x + eps)
    return x_adv.detach()
