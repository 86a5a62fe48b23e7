"""D(mu) + g * (the FIR ridge's part orthogonal to the PCA basis), g per grayordinate chosen on the
validation frames, against the FIR ridge and its projection (notes/model.md, same section).

    python tools/orthogonal_term.py data/prepared/small/sub_0001.h5 256 3,10,30
"""
import sys, h5py, numpy as np, torch
from fir_gap import lagged, ridge_path
from eeg2fmri.data.datamodule import window_starts
from eeg2fmri.data.regions import region_columns
from eeg2fmri.metrics import RegionMetrics
from eeg2fmri.nn.baselines.features import BandPower
torch.set_num_threads(1)
cache, d = sys.argv[1], int(sys.argv[2])
ks = [int(k) for k in sys.argv[3].split(",")]
with h5py.File(cache) as h5:
    eeg = torch.from_numpy(h5["eeg"][:].astype(np.float32)); fmri = h5["fmri"][:].astype(np.float64)
    clean = h5["fmri_clean"][:].astype(np.float64); split, clip, vol = h5["split"][:], h5["frame_clip"][:], h5["frame_volume"][:]
    indices = h5["indices"][:]
feat = BandPower(n_times=eeg.shape[-1])(eeg).reshape(len(eeg), -1).double().numpy()
feat = (feat - feat[split == 0].mean(0)) / feat[split == 0].std(0)
brk = np.ones(len(clip), bool); brk[1:] = (clip[1:] != clip[:-1]) | (vol[1:] != vol[:-1] + 1); seg = np.cumsum(brk)
tr, va = split == 0, split == 1
x = lagged(feat, seg, range(-8, 3))
alphas = np.logspace(0, 6, 25)
_, predict = ridge_path(x[tr], fmri[tr], x[va], fmri[va], alphas, True)
f = predict(x)
mean = fmri[tr].mean(0)
_, _, basis = np.linalg.svd(fmri[tr] - mean, full_matrices=False); basis = basis[:d]
pf = (f - mean) @ basis.T @ basis + mean
orth = f - pf
gains = np.linspace(0, 1, 11)
mse = np.stack([np.mean((pf[va] + g * orth[va] - fmri[va]) ** 2, 0) for g in gains])
g = gains[mse.argmin(0)]
print("gain per grayordinate: median", np.median(g), "frac 0", np.mean(g == 0), "frac 1", np.mean(g == 1))
blend = pf + g * orth
# closed-form LS gain per grayordinate, clipped to [0,1]
num = ((fmri[va] - pf[va]) * orth[va]).sum(0); den = (orth[va] ** 2).sum(0) + 1e-12
gls = np.clip(num / den, 0, 1); blend_ls = pf + gls * orth
cols = {r: region_columns(r, indices) for r in ("whole", "V1", "V1+A1")}
for k in ks:
    starts = window_starts(clip, vol, split, k, k); starts = starts[split[starts] == 2]
    rows = starts[:, None] + np.arange(k)
    def score(pred):
        m = RegionMetrics(cols, fmri.shape[1], identification=False)
        m.update(torch.from_numpy(pred[rows]).float(), torch.from_numpy(fmri[rows]).float()); return m.compute()
    print(f"K={k}  {'predictor':<34} {'V1 r':>7} {'V1+A1 r':>8} {'MSE':>7} {'whole tr':>8}")
    for name, p in (("FIR ridge", f), (f"P{d} FIR (= D(mu) start)", pf), ("P + g*orth (grid on val)", blend), ("P + g*orth (LS on val)", blend_ls), ("ceiling", clean)):
        m = score(p)
        print(f"      {name:<34} {m['V1/temporal_r_median']:>7.3f} {m['V1+A1/temporal_r_median']:>8.3f} {m['whole/mse']:>7.3f} {m['whole/temporal_r_median']:>8.3f}")
