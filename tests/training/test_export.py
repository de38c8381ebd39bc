"""ONNX export: parity with PyTorch, a dynamic batch axis, and refusal that leaves no file."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from stream_app.core.errors import MeterwatchError
from training.export import ExportError, export_onnx
from training.models import MODEL_KINDS, build_model


def random_windows(n: int, window: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, window)).astype(np.float32)


def torch_out(model, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model.eval()(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("kind", sorted(MODEL_KINDS))
@pytest.mark.parametrize("window", [16, 96])
def test_parity_and_report(tmp_path, kind, window):
    model = build_model(kind, window, seed=3)
    path = tmp_path / f"{kind}_{window}.onnx"
    report = export_onnx(model, window, path, random_windows(64, window))
    assert report["opset"] == 17
    assert report["inputs"] == ["window"] and report["outputs"] == ["reconstruction"]
    assert 0 <= report["max_abs_diff"] <= 1e-4
    assert report["bytes"] == path.stat().st_size > 0
    assert len(report["sha256"]) == 64
    assert not list(tmp_path.glob(".*partial"))

    # independent check on windows the export never saw
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = random_windows(50, window, seed=1)
    got = session.run(["reconstruction"], {"window": x})[0]
    np.testing.assert_allclose(got, torch_out(model, x), atol=1e-4, rtol=0)


@pytest.mark.parametrize("kind", sorted(MODEL_KINDS))
def test_batch_axis_is_dynamic(tmp_path, kind):
    model = build_model(kind, 16)
    path = tmp_path / "m.onnx"
    export_onnx(model, 16, path, random_windows(8, 16))
    graph = onnx.load(str(path)).graph
    for value in (graph.input[0], graph.output[0]):
        dims = value.type.tensor_type.shape.dim
        assert dims[0].dim_param == "batch" and dims[1].dim_value == 16
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 300):
        x = random_windows(batch, 16, seed=batch)
        got = session.run(None, {"window": x})[0]
        assert got.shape == (batch, 16)
        np.testing.assert_allclose(got, torch_out(model, x), atol=1e-4, rtol=0)


def test_failed_parity_raises_and_leaves_no_file(tmp_path):
    path = tmp_path / "m.onnx"
    with pytest.raises(ExportError, match="differs from PyTorch") as info:
        export_onnx(build_model("lstm", 16), 16, path, random_windows(4, 16), atol=-1.0)
    assert isinstance(info.value, MeterwatchError)
    assert list(tmp_path.iterdir()) == []


def test_failed_export_keeps_an_existing_file(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"previous bundle file")
    with pytest.raises(ExportError):
        export_onnx(build_model("lstm", 16), 16, path, random_windows(4, 16), atol=-1.0)
    assert path.read_bytes() == b"previous bundle file"
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]


def test_same_model_same_bytes(tmp_path):
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    check = random_windows(4, 24)
    ra = export_onnx(build_model("cnn_gru", 24, seed=5), 24, a, check)
    rb = export_onnx(build_model("cnn_gru", 24, seed=5), 24, b, check)
    assert ra["sha256"] == rb["sha256"] and a.read_bytes() == b.read_bytes()


def test_other_opset_is_recorded(tmp_path):
    report = export_onnx(build_model("lstm", 8), 8, tmp_path / "m.onnx", random_windows(3, 8),
                         opset=18)
    assert report["opset"] == 18
    imports = {op.domain: op.version for op in onnx.load(str(tmp_path / "m.onnx")).opset_import}
    assert imports[""] == 18


def test_mismatched_window_or_check_windows_raise(tmp_path):
    model = build_model("lstm", 16)
    with pytest.raises(ExportError, match="16 samples"):
        export_onnx(model, 24, tmp_path / "m.onnx", random_windows(4, 24))
    with pytest.raises(ExportError, match="check_windows"):
        export_onnx(model, 16, tmp_path / "m.onnx", random_windows(4, 8))
    with pytest.raises(ExportError, match="check_windows"):
        export_onnx(model, 16, tmp_path / "m.onnx", random_windows(0, 16))
    assert list(tmp_path.iterdir()) == []


def test_training_mode_is_restored(tmp_path):
    model = build_model("cnn_gru", 16).train()
    export_onnx(model, 16, tmp_path / "m.onnx", random_windows(4, 16))
    assert model.training
