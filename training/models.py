"""The two reconstruction autoencoders, each a dataclass config beside its nn.Module.

Both take a batch of normalised windows (the meter's readings as z-scores), shape (batch,
window) float32, and return their reconstruction of the same shape. Keeping the tensors 2-D at
the boundary gives the ONNX graphs one plain input "window" [batch, W] and one output
"reconstruction" [batch, W], which is all the torch-free runtime needs to know.

- `CnnGruAE` (the study's CNN-GRU with GELU): convolutions pick up local shapes (ramps, steps,
  spikes), a GRU reads them in time order and its last state is squeezed to a small latent vector;
  the decoder unrolls the latent over the window (a learned input per time step) with a second
  GRU and maps back to one channel through a GELU convolution.
- `LstmAE`: the classic sequence autoencoder, LSTM encoder -> latent -> LSTM decoder -> Linear.

The sizes are deliberately small: the models must train on CPU in well under a minute on
~20k windows, and a reconstruction model that is too large learns to copy anomalies too.

A model's config travels with it (`config_dict`) so a bundle can rebuild the exact architecture;
unknown keys are errors, never silently ignored.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import nn

from stream_app.core.errors import ConfigError

MIN_WINDOW = 4  # the shortest period `dominant_periods` may return


def _check_positive(cfg: object, names: tuple[str, ...]) -> None:
    for name in names:
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{type(cfg).__name__}.{name} must be a positive int, got {value!r}")
    if cfg.window < MIN_WINDOW:  # type: ignore[attr-defined]
        raise ConfigError(
            f"{type(cfg).__name__}.window must be >= {MIN_WINDOW}, got {cfg.window}"  # type: ignore[attr-defined]
        )


def _unroll(linear: nn.Linear, z: torch.Tensor, cfg) -> torch.Tensor:
    """Latent (B, latent) -> decoder inputs (B, W, latent), a different learned input per step.

    Feeding the same latent at every step (the textbook "repeat vector") leaves the decoder to
    find each sample's position from its own state alone; on 96-sample windows of a daily
    series both models then stalled at predicting the mean. A per-step linear map gives
    the decoder its position for ~latent*latent*W weights and lets both train.
    """
    return linear(z).view(z.shape[0], cfg.window, cfg.latent)


@dataclass(frozen=True)
class CnnGruConfig:
    window: int  # samples per window (a dominant period of the differenced series, by the FFT)
    channels: int = 16  # convolution channels: enough for ramps/steps/spikes, small enough for CPU
    hidden: int = 32  # GRU state size
    latent: int = 8  # bottleneck: narrow so anomalous shapes reconstruct badly
    kernel: int = 5  # odd, so symmetric padding keeps the length ("same" padding)

    def __post_init__(self) -> None:
        _check_positive(self, ("window", "channels", "hidden", "latent", "kernel"))
        if self.kernel % 2 == 0:
            raise ConfigError(f"CnnGruConfig.kernel must be odd, got {self.kernel}")


class CnnGruAE(nn.Module):
    """CNN-GRU autoencoder with GELU activations: (batch, window) -> (batch, window)."""

    def __init__(self, cfg: CnnGruConfig):
        super().__init__()
        self.cfg = cfg
        pad = cfg.kernel // 2
        self.enc_conv = nn.Sequential(
            nn.Conv1d(1, cfg.channels, cfg.kernel, padding=pad),
            nn.GELU(),
            nn.Conv1d(cfg.channels, cfg.channels, cfg.kernel, padding=pad),
            nn.GELU(),
        )
        self.enc_gru = nn.GRU(cfg.channels, cfg.hidden, batch_first=True)
        self.to_latent = nn.Linear(cfg.hidden, cfg.latent)
        self.latent_to_state = nn.Linear(cfg.latent, cfg.hidden)
        self.unroll = nn.Linear(cfg.latent, cfg.window * cfg.latent)
        self.dec_gru = nn.GRU(cfg.latent, cfg.hidden, batch_first=True)
        self.dec_conv = nn.Sequential(
            nn.Conv1d(cfg.hidden, cfg.channels, cfg.kernel, padding=pad),
            nn.GELU(),
            nn.Conv1d(cfg.channels, 1, 1),
        )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.enc_conv(x.unsqueeze(1))  # (B, C, W)
        _, h = self.enc_gru(feats.transpose(1, 2))  # h: (1, B, hidden)
        return self.to_latent(h[0])  # (B, latent)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        h0 = torch.tanh(self.latent_to_state(z)).unsqueeze(0)  # (1, B, hidden)
        out, _ = self.dec_gru(_unroll(self.unroll, z, self.cfg), h0)  # (B, W, hidden)
        return self.dec_conv(out.transpose(1, 2)).squeeze(1)  # (B, W)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


@dataclass(frozen=True)
class LstmConfig:
    window: int  # samples per window
    hidden: int = 32  # LSTM state size
    latent: int = 8  # bottleneck width

    def __post_init__(self) -> None:
        _check_positive(self, ("window", "hidden", "latent"))


class LstmAE(nn.Module):
    """LSTM autoencoder: (batch, window) -> (batch, window)."""

    def __init__(self, cfg: LstmConfig):
        super().__init__()
        self.cfg = cfg
        self.enc_lstm = nn.LSTM(1, cfg.hidden, batch_first=True)
        self.to_latent = nn.Linear(cfg.hidden, cfg.latent)
        self.latent_to_state = nn.Linear(cfg.latent, cfg.hidden)
        self.unroll = nn.Linear(cfg.latent, cfg.window * cfg.latent)
        self.dec_lstm = nn.LSTM(cfg.latent, cfg.hidden, batch_first=True)
        self.out = nn.Linear(cfg.hidden, 1)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        _, (h, _) = self.enc_lstm(x.unsqueeze(-1))  # h: (1, B, hidden)
        return self.to_latent(h[0])

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        h0 = torch.tanh(self.latent_to_state(z)).unsqueeze(0)
        c0 = torch.zeros_like(h0)
        out, _ = self.dec_lstm(_unroll(self.unroll, z, self.cfg), (h0, c0))  # (B, W, hidden)
        return self.out(out).squeeze(-1)  # (B, W)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


MODEL_KINDS: dict[str, tuple[type, type[nn.Module]]] = {
    "cnn_gru": (CnnGruConfig, CnnGruAE),
    "lstm": (LstmConfig, LstmAE),
}


def build_model(kind: str, window: int, *, seed: int | None = 0, **overrides: int) -> nn.Module:
    """A fresh model of `kind` for `window`-sample inputs; `overrides` are config fields.

    Weights are initialised under `seed` inside a forked RNG, so the same call gives the same
    model without disturbing the caller's global torch RNG (`seed=None` uses the global RNG).
    Unknown kinds and unknown config keys raise ConfigError.
    """
    if kind not in MODEL_KINDS:
        raise ConfigError(f"unknown model kind {kind!r}; known: {sorted(MODEL_KINDS)}")
    config_cls, model_cls = MODEL_KINDS[kind]
    known = {f.name for f in fields(config_cls)} - {"window"}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError(f"unknown {kind} config keys {unknown}; known: {sorted(known)}")
    cfg = config_cls(window=window, **overrides)
    if seed is None:
        return model_cls(cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return model_cls(cfg)


def model_kind(model: nn.Module) -> str:
    """The MODEL_KINDS key of `model`'s class."""
    for kind, (_, model_cls) in MODEL_KINDS.items():
        if type(model) is model_cls:
            return kind
    raise ConfigError(f"{type(model).__name__} is not a meterwatch autoencoder")


def config_dict(model: nn.Module) -> dict[str, object]:
    """{"kind": ..., "window": ..., <config fields>} — JSON-ready; `build_model(**d)` rebuilds it."""
    kind = model_kind(model)
    cfg: Any = model.cfg  # a config dataclass (nn.Module's attributes type as Tensor | Module)
    return {"kind": kind, **asdict(cfg)}
