"""Export an autoencoder to ONNX and refuse the file unless ONNX Runtime agrees with PyTorch.

The runtime never imports torch, so the .onnx file IS the model in production. An export is only
kept when onnx.checker accepts it and ONNX Runtime (CPU) reproduces the eager PyTorch output on
held-out windows within `atol`, at the caller's batch size, at batch 1 and at a third size — the
last two prove the batch axis really is dynamic. Anything else raises ExportError and leaves no
file behind.

We use the TorchScript-based exporter (`dynamo=False`): it writes opset 17 directly, exports our
GRU/LSTM graphs in a fraction of a second and gives byte-identical files for identical weights.
The torch.export-based exporter also handles these models but only emits opset >= 18 and then
down-converts, taking seconds per model.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from stream_app.core.errors import MeterwatchError

INPUT_NAME = "window"
OUTPUT_NAME = "reconstruction"
BATCH_AXIS = "batch"


class ExportError(MeterwatchError):
    """An ONNX export failed the checker or does not match PyTorch; no file was kept."""


def export_onnx(
    model: nn.Module,
    window: int,
    path: Path,
    check_windows: np.ndarray,
    *,
    atol: float = 1e-4,
    opset: int = 17,
) -> dict:
    """Write `model` to `path` as ONNX (input "window" [batch, window], output "reconstruction"
    [batch, window]) and verify it; returns {opset, max_abs_diff, inputs, outputs, bytes, sha256}.
    """
    path = Path(path)
    cfg_window = getattr(getattr(model, "cfg", None), "window", None)
    if cfg_window is not None and cfg_window != window:
        raise ExportError(f"model expects windows of {cfg_window} samples, export asked for {window}")
    check = np.ascontiguousarray(check_windows, dtype=np.float32)
    if check.ndim != 2 or check.shape[1] != window or len(check) == 0:
        raise ExportError(f"check_windows must have shape (n>0, {window}), got {check.shape}")

    tmp = path.with_name(f".{path.name}.partial")
    try:
        _torch_export(model, window, tmp, opset)
        info = _verify(model, tmp, check, atol, opset)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, ExportError):
            raise
        if isinstance(exc, Exception):
            raise ExportError(f"ONNX export of {type(model).__name__} failed: {exc}") from exc
        raise
    os.replace(tmp, path)
    data = path.read_bytes()
    return {**info, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _torch_export(model: nn.Module, window: int, path: Path, opset: int) -> None:
    was_training = model.training
    model.eval()
    example = torch.zeros(2, window)  # batch 2, not 1, so no size-1 broadcast gets baked in
    try:
        with warnings.catch_warnings():
            # The TorchScript exporter warns about its own deprecation and about tracing RNNs
            # with a batch size; the parity check below is what proves the graph is right.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (example,),
                str(path),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: BATCH_AXIS}, OUTPUT_NAME: {0: BATCH_AXIS}},
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )
    finally:
        model.train(was_training)


def _verify(model: nn.Module, path: Path, check: np.ndarray, atol: float, opset: int) -> dict:
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    inputs = [i.name for i in proto.graph.input]
    outputs = [o.name for o in proto.graph.output]
    if inputs != [INPUT_NAME] or outputs != [OUTPUT_NAME]:
        raise ExportError(f"unexpected graph I/O: inputs {inputs}, outputs {outputs}")
    recorded = max(op.version for op in proto.opset_import if op.domain in ("", "ai.onnx"))
    if recorded != opset:
        raise ExportError(f"graph declares opset {recorded}, asked for {opset}")

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    n = len(check)
    batches = [check, check[:1], check[np.arange(n + 3) % n]]  # caller's size, 1, another size
    worst = 0.0
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in batches:
                expected = model(torch.from_numpy(batch)).numpy()
                got = session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]
                if got.shape != expected.shape:
                    raise ExportError(f"ONNX output shape {got.shape} != PyTorch {expected.shape}")
                diff = float(np.max(np.abs(got - expected)))
                worst = max(worst, diff if np.isfinite(diff) else float("inf"))
    finally:
        model.train(was_training)
    if not worst <= atol:
        raise ExportError(
            f"ONNX Runtime differs from PyTorch by {worst:.3g} (max abs), more than atol={atol:g}"
        )
    return {"opset": recorded, "max_abs_diff": worst, "inputs": inputs, "outputs": outputs}
