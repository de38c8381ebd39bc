"""Per-core speed of `dtw_batch` against dtaidistance's C implementation.

    python -m benchmarks.dtw_speed [--quick] [--no-write]

Same random pairs, window sizes 16, 24 and 96, without and with a Sakoe-Chiba band (size // 10,
at least 1; dtaidistance's window = band + 1). One thread everywhere, so the figures are per core:
Numba is limited with `numba.set_num_threads(1)` and dtaidistance runs with parallel=False.

Contenders, all with the squared-difference cost and no pruning:
- ours: `dtw_batch(x, y, band=..., normalise=False)`, one call for all pairs;
- per-pair: `dtaidistance.dtw.distance_fast(a, b)` called once per pair, as a pipeline would;
- matrix: `dtaidistance.dtw.distance_matrix_fast` over the stacked series with
  block=((0, m), (m, 2m)), its batched C path. It cannot compute only the n matching pairs, so it
  computes the full m x m block between X and Y; its pairs/s counts every pair it computed.
The results must agree (per-pair values and the block's diagonal) to 1e-9 before any figure is
printed. The table is appended, with a date header, to docs/BENCHMARKS.md unless --no-write.
The last line printed is `dtw_speedup_vs_dtaidistance: <ours / per-pair at window 96, no band>`.
"""

from __future__ import annotations

import time

import numba
import numpy as np

from benchmarks.report import arguments, header, machine, publish
from stream_app.core.dtw import dtw_batch

SIZES = (16, 24, 96)


def _best_rate(fn, pairs: int, repeats: int) -> float:
    """Pairs per second of the fastest of `repeats` runs (the least disturbed by other load)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return pairs / best


def _measure(size: int, band: int | None, quick: bool, rng: np.random.Generator) -> dict:
    from dtaidistance import dtw

    n_ours = 4096 if quick else 16384
    n_single = 1000 if quick else 4000
    n_block = 128 if quick and size == 96 else 256 if quick else 512
    x = rng.normal(size=(n_ours, size))
    y = rng.normal(size=(n_ours, size))
    window = None if band is None else band + 1
    opts = {"window": window, "use_pruning": False}

    ours = dtw_batch(x, y, band=band, normalise=False)
    single = np.array([dtw.distance_fast(x[k], y[k], **opts) for k in range(n_single)])
    stacked = np.vstack([x[:n_block], y[:n_block]])
    block = ((0, n_block), (n_block, 2 * n_block))
    matrix = dtw.distance_matrix_fast(stacked, block=block, parallel=False, **opts)
    np.testing.assert_allclose(single, ours[:n_single], rtol=1e-9)
    np.testing.assert_allclose(np.diag(matrix[:n_block, n_block:]), ours[:n_block], rtol=1e-9)

    def per_pair():
        for k in range(n_single):
            dtw.distance_fast(x[k], y[k], **opts)

    repeats = 3 if quick else 5
    return {
        "size": size,
        "band": band,
        "ours": _best_rate(lambda: dtw_batch(x, y, band=band, normalise=False), n_ours, repeats),
        "per_pair": _best_rate(per_pair, n_single, repeats),
        "matrix": _best_rate(
            lambda: dtw.distance_matrix_fast(stacked, block=block, parallel=False, **opts),
            n_block * n_block, max(1, repeats - 2)),
    }


def _table(rows: list[dict]) -> list[str]:
    lines = [
        (
            "| window | band | dtw_batch pairs/s | distance_fast per pair "
            "| distance_matrix_fast | x per pair | x matrix |"
        ),
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['size']} | {r['band'] if r['band'] is not None else '-'} | {r['ours']:,.0f} "
            f"| {r['per_pair']:,.0f} | {r['matrix']:,.0f} | {r['ours'] / r['per_pair']:.1f} "
            f"| {r['ours'] / r['matrix']:.1f} |"
        )
    return lines


def main(argv: list[str] | None = None) -> None:
    args = arguments(__doc__, "smaller batches, under a minute").parse_args(argv)
    import dtaidistance

    numba.set_num_threads(1)
    rng = np.random.default_rng(2024)
    dtw_batch(rng.normal(size=(40, 8)), rng.normal(size=(40, 8)))  # compile or load the cache
    rows = [
        _measure(size, band, args.quick, rng)
        for size in SIZES
        for band in (None, max(1, size // 10))
    ]
    title = header("DTW speed, one core: dtw_batch vs dtaidistance", args.quick)
    about = (
        f"{machine()}; numba "
        f"{numba.__version__}, dtaidistance {dtaidistance.__version__}, numpy {np.__version__}. "
        "distance_matrix_fast computes the full m x m block between X and Y (it cannot be limited "
        "to the n matching pairs); its pairs/s counts all pairs it computed."
    )
    lines = [title, "", about, "", *_table(rows), ""]
    publish(lines, not args.no_write)
    key = next(r for r in rows if r["size"] == 96 and r["band"] is None)
    print(f"dtw_speedup_vs_dtaidistance: {key['ours'] / key['per_pair']:.1f}")



if __name__ == "__main__":
    main()
