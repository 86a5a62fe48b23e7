"""The default model's posterior mean is the FIR ridge projected on the leading PCA modes: compare the
two in numpy at several latent sizes d, with a paired bootstrap over the test windows (notes/model.md,
"The V1+A1 gap at K = 10 is inside the test set's noise").

    python tools/projection_bootstrap.py data/prepared/small/sub_0001.h5
"""

import sys

import numpy as np
import torch
from fir_gap import fir_ridge_frames, load_cache

from eeg2fmri.data.datamodule import window_starts
from eeg2fmri.data.regions import region_columns

torch.set_num_threads(1)
cache = sys.argv[1]
c = load_cache(cache)
fmri, clean, split, clip, vol, indices = c.fmri, c.clean, c.split, c.clip, c.vol, c.indices
tr, va = split == 0, split == 1
f = fir_ridge_frames(c)  # (T, V)
mean = fmri[tr].mean(0)
_, _, basis = np.linalg.svd(fmri[tr] - mean, full_matrices=False)
print("training frames", tr.sum(), "val", va.sum(), "test", (split == 2).sum())
cols = {r: region_columns(r, indices) for r in ("V1", "V1+A1")}


def tr_r(p, y):  # (n, V) -> (V,) temporal Pearson r
    p = p - p.mean(0)
    y = y - y.mean(0)
    return (p * y).sum(0) / np.sqrt((p * p).sum(0) * (y * y).sum(0) + 1e-30)


preds = {
    "FIR": f,
    **{f"P{d}": (f - mean) @ basis[:d].T @ basis[:d] + mean for d in (128, 256, 384, 512, 768)},
    "ceiling": clean,
}
rng = np.random.default_rng(0)
for k in (3, 10, 30):
    starts = window_starts(clip, vol, split, k, k)
    starts = starts[split[starts] == 2]
    rows = starts[:, None] + np.arange(k)  # (N, K)
    boots = [rng.integers(0, len(rows), len(rows)) for _ in range(300)]
    print(f"K={k}: {len(rows)} test windows")
    for region, c in cols.items():
        y = fmri[:, c]
        line = []
        base = None
        for name, p in preds.items():
            fr = rows.reshape(-1)
            med = np.median(tr_r(p[fr][:, c], y[fr]))
            bs = np.array([np.median(tr_r(p[rows[b].reshape(-1)][:, c], y[rows[b].reshape(-1)])) for b in boots])
            if name == "FIR":
                base = bs
                line.append(f"{name} {med:.3f}")
            else:
                dd = bs - base
                line.append(
                    f"{name} {med:.3f} (d {np.mean(dd):+.3f}, 90% [{np.quantile(dd, 0.05):+.3f},{np.quantile(dd, 0.95):+.3f}])"
                )
        print(f"  {region:6s} " + "; ".join(line))
    for name, p in preds.items():
        fr = rows.reshape(-1)
        print(f"  MSE {name} {np.mean((p[fr] - fmri[fr]) ** 2):.4f}", end="")
    print()
