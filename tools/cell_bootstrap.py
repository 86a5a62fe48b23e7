"""Two finished Table 1 cells compared on the same test windows, with a paired bootstrap over the
windows: is B's temporal r (median over a region's grayordinates) or whole-brain MSE different from
A's beyond what the test set's sampling gives? (notes/model.md; e.g. the conditioned DiT's mean
against the default's D(μ), or the default against the FIR ridge.)

    python tools/cell_bootstrap.py CACHE CELL_A CELL_B [--n 300] [--seed 0]

CELL_*: a cell folder (``results/<scale>/cells/sub1/K10/<method>``) or its ``test_predictions.npz``.
Both must score the same windows (``frame_index``). Prints, per region, A's and B's figures, the
mean of B − A over the bootstrap resamples and its 90 % interval.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import h5py
import numpy as np

from eeg2fmri.data.regions import region_columns


def temporal_r(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(n, V), (n, V) -> (V,) Pearson r of each column over the rows."""
    p = p - p.mean(0)
    y = y - y.mean(0)
    return (p * y).sum(0) / np.sqrt((p * p).sum(0) * (y * y).sum(0) + 1e-30)


def load_predictions(cell: str) -> tuple[np.ndarray, np.ndarray]:
    path = Path(cell)
    path = path / "test_predictions.npz" if path.is_dir() else path
    z = np.load(path)
    return z["pred"].astype(np.float32), z["frame_index"]  # (N, K, V), (N, K)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cache")
    ap.add_argument("cell_a")
    ap.add_argument("cell_b")
    ap.add_argument("--n", type=int, default=300, help="bootstrap resamples of the test windows")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    pa, fa = load_predictions(args.cell_a)
    pb, fb = load_predictions(args.cell_b)
    if fa.shape != fb.shape or not np.array_equal(fa, fb):
        raise SystemExit(f"{args.cell_a} and {args.cell_b} score different test windows (frame_index differs)")
    with h5py.File(args.cache) as h5:
        rows = np.unique(fa)
        y = h5["fmri"][rows.tolist()].astype(np.float32)  # (n_rows, V) z-scored (training statistics), as scored
        indices = h5["indices"][:]  # (V,) standard grayordinate index of each column
    if y.shape[1] != pa.shape[-1]:
        raise SystemExit(f"{args.cache}: {y.shape[1]} grayordinates, the cells predict {pa.shape[-1]}")
    y = y[np.searchsorted(rows, fa)]  # (N, K, V)
    n = len(fa)
    rng = np.random.default_rng(args.seed)
    boots = [rng.integers(0, n, n) for _ in range(args.n)]
    print(f"{n} test windows of {fa.shape[1]} frames; A = {args.cell_a}; B = {args.cell_b}")
    regions = {r: region_columns(r, indices) for r in ("V1", "V1+A1")} | {"whole": np.arange(y.shape[-1])}
    for region, cols in regions.items():

        def score(w: np.ndarray, p: np.ndarray, cols=cols) -> float:
            return float(
                np.median(temporal_r(p[w][..., cols].reshape(-1, len(cols)), y[w][..., cols].reshape(-1, len(cols))))
            )

        every = np.arange(n)
        a, b = score(every, pa), score(every, pb)
        diff = np.array([score(w, pb) - score(w, pa) for w in boots])
        print(
            f"  {region:6s} temporal r  A {a:.4f}  B {b:.4f}  B - A {diff.mean():+.4f}  "
            f"90% [{np.quantile(diff, 0.05):+.4f}, {np.quantile(diff, 0.95):+.4f}]"
        )
    ea = ((pa - y) ** 2).mean(axis=(1, 2))  # (N,) each window's whole-brain MSE
    eb = ((pb - y) ** 2).mean(axis=(1, 2))
    diff = np.array([eb[w].mean() - ea[w].mean() for w in boots])
    print(
        f"  whole  MSE          A {ea.mean():.4f}  B {eb.mean():.4f}  B - A {diff.mean():+.4f}  "
        f"90% [{np.quantile(diff, 0.05):+.4f}, {np.quantile(diff, 0.95):+.4f}]"
    )


if __name__ == "__main__":
    main()
