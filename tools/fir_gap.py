"""Numpy reference for the EEG-informed regressors on a prepared cache (notes/model.md, step 0).

Scores, on the frames of the cache's K-frame test windows (non-overlapping, as `eeg2fmri test`),
ridge regression from log band power of (a) the frame's own EEG window and (b) the windows of
frames k-8 ... k+2 of the same run of consecutive frames (an FIR hemodynamic model), with the
penalty chosen on the validation frames, beside the noise ceiling. Independent of the project's
LightningModules: numpy for the regression, the project's band-power function and metrics only.

    python tools/fir_gap.py data/demo/prepared/sub_0001.h5 [--lags -8 2] [--k 10]
"""

from __future__ import annotations

import argparse
from types import SimpleNamespace

import h5py
import numpy as np
import torch

from eeg2fmri.data.datamodule import window_starts
from eeg2fmri.data.regions import region_columns
from eeg2fmri.metrics import RegionMetrics
from eeg2fmri.nn.baselines.features import BandPower


def lagged(feat: np.ndarray, seg: np.ndarray, lags: range) -> np.ndarray:
    """(T, F) -> (T, F * n_lags): feature rows of frames k + lag within the same segment, 0 where
    the lag leaves it (features are standardised first, so 0 is the training mean) plus one
    missing-indicator column per lag."""
    T, F = feat.shape
    out = np.zeros((T, len(lags), F + 1))
    idx = np.arange(T)
    for j, lag in enumerate(lags):
        src = idx + lag
        ok = (src >= 0) & (src < T)
        ok[ok] &= seg[src[ok]] == seg[idx[ok]]
        out[ok, j, :F] = feat[src[ok]]
        out[~ok, j, F] = 1.0
    return out.reshape(T, -1)


def ridge_path(x_tr, y_tr, x_va, y_va, alphas, per_target=False):
    """Closed-form ridge for each alpha (standardised, centred features); the alpha with the least
    validation MSE, one for all targets or one per target (grayordinate)."""
    mx, my = x_tr.mean(0), y_tr.mean(0)
    sd = x_tr.std(0)
    sd[sd < 1e-12] = 1.0
    xs, xv = (x_tr - mx) / sd, (x_va - mx) / sd
    u, s, vt = np.linalg.svd(xs, full_matrices=False)
    uty = u.T @ (y_tr - my)  # (r, V)
    xvv = xv @ vt.T  # (n_val, r)
    mse = np.stack([np.mean((xvv @ ((s / (s**2 + a))[:, None] * uty) + my - y_va) ** 2, 0) for a in alphas])  # (n_a, V)
    best = mse.argmin(0) if per_target else np.full(mse.shape[1], mse.mean(1).argmin())  # (V,)
    shrink = (s[None, :] / (s[None, :] ** 2 + np.asarray(alphas)[best][:, None])).T  # (r, V)
    coef = shrink * uty  # (r, V)
    return np.asarray(alphas)[best], lambda x: (((x - mx) / sd) @ vt.T) @ coef + my


def load_cache(path: str) -> SimpleNamespace:
    """A prepared cache's frames and their EEG as these scripts use them: ``feat`` (T, 5C) log band
    power standardised on the training frames, ``fmri`` / ``clean`` (T, V) float64 (``clean`` None
    without the simulator's noise-free BOLD), ``split``, ``clip``, ``vol``, ``indices``, and ``seg``
    (T,) the run of consecutive volumes each frame belongs to."""
    with h5py.File(path, "r") as h5:
        eeg = torch.from_numpy(h5["eeg"][:].astype(np.float32))
        fmri = h5["fmri"][:].astype(np.float64)
        clean = h5["fmri_clean"][:].astype(np.float64) if "fmri_clean" in h5 else None
        split, clip, vol = h5["split"][:], h5["frame_clip"][:], h5["frame_volume"][:]
        indices = h5["indices"][:]
    feat = BandPower(n_times=eeg.shape[-1])(eeg).reshape(len(eeg), -1).double().numpy()  # (T, 5C) log band power
    feat = (feat - feat[split == 0].mean(0)) / feat[split == 0].std(0)
    brk = np.ones(len(clip), bool)
    brk[1:] = (clip[1:] != clip[:-1]) | (vol[1:] != vol[:-1] + 1)
    return SimpleNamespace(
        feat=feat, fmri=fmri, clean=clean, split=split, clip=clip, vol=vol, indices=indices, seg=np.cumsum(brk)
    )


def fir_ridge_frames(c: SimpleNamespace, lags: range = range(-8, 3)) -> np.ndarray:
    """(T, V) predictions of the FIR ridge (lagged band power, one penalty per grayordinate chosen
    on the validation frames) for every frame of ``load_cache``'s ``c``."""
    x = lagged(c.feat, c.seg, lags)
    tr, va = c.split == 0, c.split == 1
    _, predict = ridge_path(x[tr], c.fmri[tr], x[va], c.fmri[va], np.logspace(0, 6, 25), True)
    return predict(x)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("cache")
    ap.add_argument("--lags", type=int, nargs=2, default=(-8, 2))
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--per_target", action="store_true", help="one penalty per grayordinate (else one for all)")
    ap.add_argument(
        "--latent", type=int, default=0, help="also: the FIR ridge on the top-d PCA scores of the training frames"
    )
    args = ap.parse_args()
    c = load_cache(args.cache)
    feat, fmri, clean, split, clip, vol, indices, seg = (
        c.feat,
        c.fmri,
        c.clean,
        c.split,
        c.clip,
        c.vol,
        c.indices,
        c.seg,
    )
    starts = window_starts(clip, vol, split, args.k, args.k)
    starts = starts[split[starts] == 2]
    rows = starts[:, None] + np.arange(args.k)  # (N, K) test frames as `eeg2fmri test` scores them
    cols = {r: region_columns(r, indices) for r in ("whole", "V1", "V1+A1")}
    alphas = np.logspace(0, 6, 25)
    tr, va = split == 0, split == 1

    def score(pred: np.ndarray) -> dict:
        m = RegionMetrics(cols, fmri.shape[1], identification=False)
        m.update(torch.from_numpy(pred[rows]).float(), torch.from_numpy(fmri[rows]).float())
        return m.compute()

    table = {"training mean (0)": score(np.zeros_like(fmri))}
    for name, lags in (("Ridge (own window)", range(0, 1)), ("FIR ridge", range(args.lags[0], args.lags[1] + 1))):
        x = lagged(feat, seg, lags)
        a, predict = ridge_path(x[tr], fmri[tr], x[va], fmri[va], alphas, args.per_target)
        table[f"{name}, alpha {np.median(a):.3g}"] = score(predict(x))
    if args.latent:  # reduced rank: regress the leading PCA scores, decode with the PCA basis
        mean = fmri[tr].mean(0)
        _, sv, basis = np.linalg.svd(fmri[tr] - mean, full_matrices=False)
        basis = basis[: args.latent]  # (d, V)
        scores = (fmri - mean) @ basis.T  # (T, d)
        x = lagged(feat, seg, range(args.lags[0], args.lags[1] + 1))
        a, predict = ridge_path(x[tr], scores[tr], x[va], scores[va], alphas, True)
        table[f"FIR ridge on {args.latent} PCs, per PC"] = score(predict(x) @ basis + mean)
    if clean is not None:
        table["noise ceiling"] = score(clean)
    print(f"{'predictor':<36} {'V1 temporal r':>14} {'V1+A1 temporal r':>17} {'whole MSE':>10} {'whole r':>8}")
    for name, m in table.items():
        print(
            f"{name:<36} {m['V1/temporal_r_median']:>14.3f} {m['V1+A1/temporal_r_median']:>17.3f} "
            f"{m['whole/mse']:>10.3f} {m['whole/r']:>8.3f}"
        )


if __name__ == "__main__":
    main()
