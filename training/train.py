"""Fit one autoencoder on normal windows: seeded, early-stopped, with a progress bar.

The caller supplies both sets. It splits by TIME (the last 20% of windows validate), because a
random split leaks: overlapping windows one sample apart would sit on both sides and the
validation loss would say nothing about unseen days.

Reads top to bottom: `TrainConfig` holds every knob; `fit_autoencoder` subsamples, then loops
epochs of `_train_epoch` / `_mean_loss`, keeps the best weights on validation loss and stops when
it has not improved by `min_delta` for `patience` epochs.
"""

from __future__ import annotations

import copy
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from stream_app.core.errors import ConfigError, InputError


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 30  # upper bound; early stopping usually ends sooner
    batch_size: int = 256  # small enough for many updates per epoch on ~20k windows
    lr: float = 2e-3  # Adam; small recurrent models tolerate a brisk rate
    patience: int = 4  # epochs without validation improvement before stopping
    min_delta: float = 1e-4  # improvement smaller than this does not count (z-score units^2)
    seed: int = 0  # shuffling and subsampling
    max_train_windows: int = 20000  # windows per epoch, drawn afresh from all every epoch
    threads: int | None = None  # torch intra-op threads; None leaves torch's default

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "patience", "max_train_windows"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"TrainConfig.{name} must be a positive int, got {value!r}")
        if not self.lr > 0:
            raise ConfigError(f"TrainConfig.lr must be > 0, got {self.lr!r}")
        if not self.min_delta >= 0:
            raise ConfigError(f"TrainConfig.min_delta must be >= 0, got {self.min_delta!r}")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ConfigError(f"TrainConfig.threads must be None or >= 1, got {self.threads!r}")


def fit_autoencoder(
    model: nn.Module,
    train_windows: np.ndarray,
    val_windows: np.ndarray,
    cfg: TrainConfig,
    *,
    desc: str = "",
) -> tuple[nn.Module, dict]:
    """Train `model` in place to reconstruct `train_windows`; returns (model with best weights,
    history {train_loss, val_loss, best_epoch, epochs_run, seconds, train_windows}).

    Losses are mean squared errors per element. `best_epoch` is 0-based; the returned weights
    are those of that epoch, in eval mode.
    """
    window = _model_window(model)
    train = _as_windows(train_windows, window, "train_windows")
    val = _as_windows(val_windows, window, "val_windows")
    history: dict = {"train_loss": [], "val_loss": [], "train_windows": len(train),
                     "steps": 0}
    draw = np.random.default_rng(cfg.seed)
    start = time.perf_counter()
    with _threads(cfg.threads):
        torch.manual_seed(cfg.seed)
        gen = torch.Generator().manual_seed(cfg.seed)
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        x_train, x_val = torch.from_numpy(train), torch.from_numpy(val)

        best_loss, best_epoch, best_state, waited = float("inf"), 0, None, 0
        bar = tqdm(range(cfg.epochs), desc=desc or type(model).__name__, unit="epoch")
        for epoch in bar:
            epoch_x = x_train
            if len(x_train) > cfg.max_train_windows:  # a fresh subset: every shape gets seen
                pick = draw.choice(len(x_train), cfg.max_train_windows, replace=False)
                epoch_x = x_train[torch.from_numpy(np.sort(pick))]
            history["train_loss"].append(_train_epoch(model, opt, epoch_x, cfg.batch_size, gen))
            history["steps"] += -(-len(epoch_x) // cfg.batch_size)
            val_loss = _mean_loss(model, x_val)
            history["val_loss"].append(val_loss)
            if val_loss < best_loss - cfg.min_delta or best_state is None:
                best_loss, best_epoch, waited = val_loss, epoch, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                waited += 1
            bar.set_postfix(train=f"{history['train_loss'][-1]:.4f}", val=f"{val_loss:.4f}",
                            best=f"{best_loss:.4f}")
            if waited >= cfg.patience:
                break
        bar.close()
        opt.zero_grad(set_to_none=True)  # the model leaves without stale gradients
        # cfg.epochs >= 1 (TrainConfig checks it), so the first epoch has set best_state.
        model.load_state_dict(cast(dict[str, Any], best_state))
    model.eval()
    history.update(best_epoch=best_epoch, epochs_run=len(history["val_loss"]),
                   seconds=time.perf_counter() - start)
    return model, history


def reconstruct(model: nn.Module, windows: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """The model's reconstruction of `windows`, float32 (n, window), computed in eval mode."""
    x = _as_windows(windows, _model_window(model), "windows", allow_empty=True)
    was_training = model.training
    model.eval()
    out = np.empty_like(x)
    with torch.no_grad():
        for lo in range(0, len(x), batch_size):
            out[lo:lo + batch_size] = model(torch.from_numpy(x[lo:lo + batch_size])).numpy()
    model.train(was_training)
    return out


def _train_epoch(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor,
                 batch_size: int, gen: torch.Generator) -> float:
    """One shuffled pass; returns the mean per-element MSE over the epoch."""
    model.train()
    total = 0.0
    for idx in torch.randperm(len(x), generator=gen).split(batch_size):
        batch = x[idx]
        loss = nn.functional.mse_loss(model(batch), batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += loss.item() * len(idx)
    return total / len(x)


def _mean_loss(model: nn.Module, x: torch.Tensor, batch_size: int = 4096) -> float:
    model.eval()
    total = 0.0
    with torch.no_grad():
        for batch in x.split(batch_size):
            total += nn.functional.mse_loss(model(batch), batch, reduction="sum").item()
    return total / x.numel()


def _as_windows(windows: np.ndarray, window: int, name: str, *, allow_empty: bool = False
                ) -> np.ndarray:
    x = np.ascontiguousarray(windows, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != window:
        raise InputError(f"{name} must have shape (n, {window}), got {np.shape(windows)}")
    if len(x) == 0 and not allow_empty:
        raise InputError(f"{name} is empty")
    if not np.isfinite(x).all():
        raise InputError(f"{name} contains NaN or inf")
    return x


def _model_window(model: nn.Module) -> int:
    cfg = getattr(model, "cfg", None)
    if cfg is None or not hasattr(cfg, "window"):
        raise ConfigError(f"{type(model).__name__} has no config with a window size")
    return int(cfg.window)


@contextmanager
def _threads(n: int | None):
    """Set torch's intra-op thread count for the duration, then restore it."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
