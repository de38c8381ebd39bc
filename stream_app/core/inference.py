"""ONNX Runtime sessions for a bundle's autoencoders: one session per (model, window size).

Execution providers: CUDA first when the installed ONNX Runtime offers it (the `gpu` extra,
onnxruntime-gpu), CPU otherwise; `providers` overrides the choice (MW_ONNX_PROVIDERS). On CPU the
default is one intra-op thread per session: on shared cores one single-threaded process per core
with batches of 32-256 windows measured fastest, so scale out with more workers, not threads.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from stream_app.core.errors import BundleError, ConfigError

try:
    import onnxruntime as ort
except ImportError:  # pragma: no cover - depends on the installed extra
    ort = None

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
# On CPU a batch is run in chunks of about this many values (rows x window): 64 windows of 96
# ran faster per window than 256 at once (the recurrent layers' working set stays in cache;
# `python -m benchmarks.onnx_vs_torch` measures both); short windows are unaffected. A GPU
# takes the whole batch.
CPU_CHUNK_VALUES = 6144


def choose_providers(requested: Sequence[str] | None = None) -> list[str]:
    """Requested providers (validated), else CUDA then CPU when CUDA is there, else CPU."""
    if ort is None:
        raise ConfigError(
            "ONNX Runtime is not installed: pip install 'meterwatch[cpu]' (or '[gpu]' with CUDA)"
        )
    available = ort.get_available_providers()
    if requested:
        unknown = [p for p in requested if p not in available]
        if unknown:
            raise ConfigError(f"ONNX providers {unknown} are not available; have {available}")
        return list(requested)
    return [CUDA, CPU] if CUDA in available else [CPU]


class BundleFiles(Protocol):
    """What Reconstructor reads of a bundle: a loaded Bundle or a BundleLayout in training."""

    @property
    def models(self) -> tuple[str, ...]: ...

    @property
    def window_sizes(self) -> tuple[int, ...]: ...

    def onnx_path(self, model: str, window: int) -> Path: ...


class Reconstructor:
    """Runs every autoencoder of a bundle. reconstruct() takes (n, window) float32 windows."""

    def __init__(self, bundle: BundleFiles, providers: Sequence[str] | None = None,
                 threads: int = 1, chunk_values: int | None = CPU_CHUNK_VALUES) -> None:
        """`chunk_values`: on CPU, the values per ONNX call (None: the whole batch at once)."""
        self.providers = choose_providers(providers)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        # (model, window) -> (ONNX Runtime session, its input's name); ORT has no type hints.
        self._sessions: dict[tuple[str, int], tuple[Any, str]] = {}
        for model in bundle.models:
            for window in bundle.window_sizes:
                path = bundle.onnx_path(model, window)
                try:
                    session = ort.InferenceSession(str(path), options, providers=self.providers)
                except Exception as exc:  # noqa: BLE001 (ORT raises its own untyped errors)
                    raise BundleError(f"ONNX Runtime cannot load {path.name}: {exc}") from None
                shape = session.get_inputs()[0].shape
                if len(shape) != 2 or shape[1] != window:
                    raise BundleError(f"{path.name} takes input {shape}, expected [batch, {window}]")
                self._sessions[(model, window)] = (session, session.get_inputs()[0].name)
        on_cpu = self.active_provider == CPU
        self._chunk_values = chunk_values if on_cpu else None

    @property
    def active_provider(self) -> str:
        session, _ = next(iter(self._sessions.values()))
        provider: str = session.get_providers()[0]
        return provider

    def reconstruct(self, model: str, window: int, windows: np.ndarray) -> np.ndarray:
        session, name = self._sessions[(model, window)]
        if len(windows) == 0:
            return np.empty((0, window), dtype=np.float32)
        batch = np.ascontiguousarray(windows, dtype=np.float32)
        rows = max(1, self._chunk_values // window) if self._chunk_values else len(batch)
        if len(batch) <= rows:
            whole: np.ndarray = session.run(None, {name: batch})[0]
            return whole
        return np.concatenate([session.run(None, {name: batch[start:start + rows]})[0]
                               for start in range(0, len(batch), rows)])
