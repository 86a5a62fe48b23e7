"""Table 2's rows (whole MSE / whole r on the filled frames; K=10, frames 0 and 9 observed) for any
checkpoint of the default model, plus the lag-1 frame coupling of the prior's samples and of the test
residuals in its latent (notes/model.md, "One change: latent d = 48 at SCALE=small").

    python tools/interrecon_rows.py results/exp/K10_d48/checkpoints/last.ckpt data/prepared/small/sub_0001.h5
"""
import sys, numpy as np, torch
from eeg2fmri.callbacks import anchor_mask
from eeg2fmri.data.datamodule import EEGfMRIDataModule
from eeg2fmri.interpolate import linear_fill
from eeg2fmri.metrics import RegionMetrics
from eeg2fmri.module import EEG2fMRIDiffusion
ckpt, cache, k = sys.argv[1], sys.argv[2], 10
model = EEG2fMRIDiffusion.load_from_checkpoint(ckpt, map_location="cpu").eval()
dm = EEGfMRIDataModule(cache, n_frames=k, batch_size=16, eeg_context=model.eeg_context); dm.setup("test")
rows = ["Linear", "EEG only (D(mu))", "With null space (one sample)", "With null space (mean of 4)", "one sample, no anchors"]
res = {}
pr, te = [], []
with torch.no_grad():
    for name in rows:
        m = RegionMetrics({"whole": None}, dm.n_vertices, identification=False)
        for b in dm.test_dataloader():
            x, eeg, em = b["fmri"], b["eeg"], b["eeg_mask"]; mask = anchor_mask(x.shape[0], k)
            if name == "Linear": p = linear_fill(x, mask)
            elif name.startswith("EEG only"): p = model.predict_frames(b, estimator="mean", num_samples=1)
            elif name.startswith("one sample"):
                p = model.sample(eeg, num_inference_steps=50, eeg_mask=em, seed=0)
                _, mu = model.encode_eeg(eeg, em); pr.append(model.autoencoder.encode(p) - mu); te.append(model.autoencoder.encode(x) - mu)
            else:
                n = 4 if "mean of" in name else 1
                p = sum(model.sample(eeg, num_inference_steps=50, observed=x, observed_mask=mask, seed=i, eeg_mask=em) for i in range(n)) / n
            m.update(p, x, frame_mask=~mask if not name.startswith("one sample") else None)
        v = m.compute(); print(f"{name:<32} whole MSE {v['whole/mse']:.3f}  whole r {v['whole/r']:.3f}", flush=True)
def lag1(r):
    r = r - r.mean((0, 1)); return float((r[:, :-1] * r[:, 1:]).sum() / torch.sqrt((r[:, :-1] ** 2).sum() * (r[:, 1:] ** 2).sum()))
pr, te = torch.cat(pr), torch.cat(te)
print(f"lag-1 corr of residual latents: test data {lag1(te):.2f}, prior samples {lag1(pr):.2f}; rms test {float(te.pow(2).mean().sqrt()):.3f}, prior {float(pr.pow(2).mean().sqrt()):.3f}")
