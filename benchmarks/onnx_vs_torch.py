"""Per-core speed of the shipped ONNX Runtime path against torch eager, same weights, same inputs.

    python -m benchmarks.onnx_vs_torch [--quick] [--no-write]

Why: the runtime never imports torch; this measures what that choice buys per core. Both
autoencoders are freshly built with `training.models.build_model` (default configs) for windows
96, 24 and 16 and exported with `training.export.export_onnx` into a temporary folder, so both
engines run identical weights (the export itself refuses a file that disagrees with torch).

- onnx: the production `Reconstructor` (CPU provider, one intra-op thread, sequential mode, full
  graph optimisation), one `reconstruct` call per batch;
- torch: the same module in eval mode under `torch.no_grad()`, `torch.set_num_threads(1)`.

Batches of 1, 32, 256 and 2048 windows (--quick: 1, 32, 256 and windows 96 and 16 only). Each
figure is the best of three timed blocks of repeated calls on the same input (the block least
disturbed by other load). ONNX with two intra-op threads at batch 256 is printed as context.
The outputs of both engines must agree to 1e-4 before any figure is printed. The table is
appended, with a date header, to docs/BENCHMARKS.md unless --no-write. The last line printed is
`onnx_speedup_vs_torch: <geometric mean over the two models of onnx/torch at batch 32, window 96>`.
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from benchmarks.report import arguments, header, machine, publish
from stream_app.core.inference import CPU, CPU_CHUNK_VALUES, Reconstructor
from stream_app.core.model_bundle import BundleLayout, onnx_name
from training.export import export_onnx
from training.models import build_model

MODELS = ("cnn_gru", "lstm")


def _best_rate(fn, batch: int, block_s: float) -> float:
    """Windows per second of the fastest of three blocks of repeated calls (>= block_s each)."""
    fn()  # warm-up: first-call allocations and graph caches
    best = 0.0
    for _ in range(3):
        calls = 0
        start = time.perf_counter()
        while True:
            fn()
            calls += 1
            elapsed = time.perf_counter() - start
            if elapsed >= block_s:
                break
        best = max(best, batch * calls / elapsed)
    return best


def _measure(folder: Path, windows: tuple[int, ...], batches: tuple[int, ...], block_s: float,
             rng: np.random.Generator) -> tuple[list[dict], list[dict]]:
    modules = {}
    for model in MODELS:
        for window in windows:
            module = build_model(model, window, seed=0).eval()
            check = rng.normal(size=(64, window)).astype(np.float32)
            export_onnx(module, window, folder / onnx_name(model, window), check)
            modules[(model, window)] = module
    layout = BundleLayout(folder, MODELS, windows)
    one = Reconstructor(layout, [CPU], threads=1)
    two = Reconstructor(layout, [CPU], threads=2)
    whole = Reconstructor(layout, [CPU], threads=1, chunk_values=None)
    rows, context = [], []
    for window in windows:
        for model in MODELS:
            module = modules[(model, window)]
            for batch in batches:
                x = rng.normal(size=(batch, window)).astype(np.float32)
                xt = torch.from_numpy(x)
                with torch.no_grad():
                    expected = module(xt).numpy()
                np.testing.assert_allclose(one.reconstruct(model, window, x), expected, atol=1e-4)

                def eager(xt=xt, module=module):
                    with torch.no_grad():
                        module(xt)

                rows.append({
                    "model": model, "window": window, "batch": batch,
                    "onnx": _best_rate(lambda x=x, m=model, w=window: one.reconstruct(m, w, x),
                                       batch, block_s),
                    "torch": _best_rate(eager, batch, block_s),
                })
            x = rng.normal(size=(256, window)).astype(np.float32)
            context.append({
                "model": model, "window": window,
                "t1": next(r["onnx"] for r in rows
                           if r["model"] == model and r["window"] == window and r["batch"] == 256),
                "t2": _best_rate(lambda x=x, m=model, w=window: two.reconstruct(m, w, x),
                                 256, block_s),
                "whole": _best_rate(lambda x=x, m=model, w=window: whole.reconstruct(m, w, x),
                                    256, block_s),
            })
    return rows, context


def _table(rows: list[dict]) -> list[str]:
    lines = [
        "| model | window | batch | ONNX Runtime windows/s | torch eager windows/s | onnx / torch |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['window']} | {r['batch']} | {r['onnx']:,.0f} "
            f"| {r['torch']:,.0f} | {r['onnx'] / r['torch']:.2f} |"
        )
    return lines


def _context_table(context: list[dict]) -> list[str]:
    lines = [
        ("| model | window | ONNX 1 thread windows/s | 2 threads | 2 / 1 "
         "| 1 thread, one call (no chunks) | chunked / one call |"),
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for c in context:
        lines.append(f"| {c['model']} | {c['window']} | {c['t1']:,.0f} | {c['t2']:,.0f} "
                     f"| {c['t2'] / c['t1']:.2f} | {c['whole']:,.0f} "
                     f"| {c['t1'] / c['whole']:.2f} |")
    return lines


def main(argv: list[str] | None = None) -> None:
    args = arguments(__doc__, "fewer sizes, under a minute").parse_args(argv)
    torch.set_num_threads(1)
    windows = (96, 16) if args.quick else (96, 24, 16)
    batches = (1, 32, 256) if args.quick else (1, 32, 256, 2048)
    block_s = 0.25 if args.quick else 0.6
    rng = np.random.default_rng(2024)
    with tempfile.TemporaryDirectory() as tmp:
        rows, context = _measure(Path(tmp), windows, batches, block_s, rng)
    title = header("Autoencoder inference, one core: ONNX Runtime vs torch eager", args.quick)
    about = (
        f"{machine()} (shared cores: "
        f"absolute figures vary between runs, the ratios are from one run); onnxruntime "
        f"{ort.__version__}, torch {torch.__version__}. Same freshly built weights (default "
        "configs) in both engines; ONNX via the production `Reconstructor` (CPU, 1 intra-op "
        "thread), torch eager with `set_num_threads(1)` under `no_grad`. Best of three blocks."
    )
    lines = [title, "", about, "", *_table(rows), "",
             (f"Context at batch 256: two intra-op threads, and the whole batch in one ONNX call "
              f"instead of the `Reconstructor`'s chunks of {CPU_CHUNK_VALUES:,} values."), "",
             *_context_table(context), ""]
    publish(lines, not args.no_write)
    key = [r["onnx"] / r["torch"] for r in rows if r["window"] == 96 and r["batch"] == 32]
    print(f"onnx_speedup_vs_torch: {math.exp(np.mean(np.log(key))):.2f}")



if __name__ == "__main__":
    main()
