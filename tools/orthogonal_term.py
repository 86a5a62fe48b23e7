"""D(mu) + g * (the FIR ridge's part orthogonal to the PCA basis), g per grayordinate chosen on the
validation frames, against the FIR ridge and its projection (notes/model.md, same section).

    python tools/orthogonal_term.py data/prepared/small/sub_0001.h5 256 3,10,30
"""

import sys

import numpy as np
import torch
from fir_gap import fir_ridge_frames, load_cache

from eeg2fmri.data.datamodule import window_starts
from eeg2fmri.data.regions import region_columns
from eeg2fmri.metrics import RegionMetrics

torch.set_num_threads(1)
cache, d = sys.argv[1], int(sys.argv[2])
ks = [int(k) for k in sys.argv[3].split(",")]
c = load_cache(cache)
fmri, clean, split, clip, vol, indices = c.fmri, c.clean, c.split, c.clip, c.vol, c.indices
tr, va = split == 0, split == 1
f = fir_ridge_frames(c)  # (T, V)
mean = fmri[tr].mean(0)
_, _, basis = np.linalg.svd(fmri[tr] - mean, full_matrices=False)
basis = basis[:d]
pf = (f - mean) @ basis.T @ basis + mean
orth = f - pf
gains = np.linspace(0, 1, 11)
mse = np.stack([np.mean((pf[va] + g * orth[va] - fmri[va]) ** 2, 0) for g in gains])
g = gains[mse.argmin(0)]
print("gain per grayordinate: median", np.median(g), "frac 0", np.mean(g == 0), "frac 1", np.mean(g == 1))
blend = pf + g * orth
# closed-form LS gain per grayordinate, clipped to [0,1]
num = ((fmri[va] - pf[va]) * orth[va]).sum(0)
den = (orth[va] ** 2).sum(0) + 1e-12
gls = np.clip(num / den, 0, 1)
blend_ls = pf + gls * orth
cols = {r: region_columns(r, indices) for r in ("whole", "V1", "V1+A1")}
for k in ks:
    starts = window_starts(clip, vol, split, k, k)
    starts = starts[split[starts] == 2]
    rows = starts[:, None] + np.arange(k)

    def score(pred, rows=rows):
        m = RegionMetrics(cols, fmri.shape[1], identification=False)
        m.update(torch.from_numpy(pred[rows]).float(), torch.from_numpy(fmri[rows]).float())
        return m.compute()

    print(f"K={k}  {'predictor':<34} {'V1 r':>7} {'V1+A1 r':>8} {'MSE':>7} {'whole tr':>8}")
    for name, p in (
        ("FIR ridge", f),
        (f"P{d} FIR (= D(mu) start)", pf),
        ("P + g*orth (grid on val)", blend),
        ("P + g*orth (LS on val)", blend_ls),
        ("ceiling", clean),
    ):
        m = score(p)
        print(
            f"      {name:<34} {m['V1/temporal_r_median']:>7.3f} {m['V1+A1/temporal_r_median']:>8.3f} {m['whole/mse']:>7.3f} {m['whole/temporal_r_median']:>8.3f}"
        )
