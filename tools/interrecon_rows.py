"""Table 2's rows (whole MSE / whole r on the filled frames; K=10, frames 0 and 9 observed) for any
checkpoint of the default model, the autoencoder's own reconstruction of those frames (the floor of
any estimate inside the latent span), plus the lag-1 frame coupling of the prior's samples and of the test
residuals in its latent (notes/model.md, "One change: latent d = 48 at SCALE=small").

InterRecon's estimate is scored as the mean of N null-space samples for every N in ``--n`` (one
pass: the running mean is scored at each N), so how far averaging goes toward the posterior mean can be
read off; ``--steps`` and ``--time-travel`` set the sampler (notes/model.md, "Table 2's gap").

    python tools/interrecon_rows.py CKPT data/prepared/small/sub_0001.h5 [--n 1,4,16] [--steps 50] [--time-travel 0]
"""

import argparse

import torch

from eeg2fmri.callbacks import anchor_mask
from eeg2fmri.data.datamodule import EEGfMRIDataModule
from eeg2fmri.interpolate import linear_fill
from eeg2fmri.metrics import RegionMetrics
from eeg2fmri.module import EEG2fMRIDiffusion

ap = argparse.ArgumentParser()
ap.add_argument("ckpt")
ap.add_argument("cache")
ap.add_argument("--n", default="1,4", help="numbers of samples averaged, comma-separated")
ap.add_argument("--steps", type=int, default=50)
ap.add_argument("--time-travel", type=int, default=0)
ap.add_argument("--no-prior", action="store_true", help="skip the unconditional prior samples (lag-1 line)")
a = ap.parse_args()
ns, k = sorted(int(n) for n in a.n.split(",")), 10
model = EEG2fMRIDiffusion.load_from_checkpoint(a.ckpt, map_location="cpu").eval()
dm = EEGfMRIDataModule(a.cache, n_frames=k, batch_size=16, eeg_context=model.eeg_context)
dm.setup("test")
new = lambda: RegionMetrics({"whole": None}, dm.n_vertices, identification=False)  # noqa: E731
met = {
    "Linear": new(),
    "EEG only (D(mu))": new(),
    "Autoencoder D(E x) (sees the frames)": new(),
    **{f"With null space (mean of {n})": new() for n in ns},
}
pr, te = [], []
with torch.no_grad():
    for b in dm.test_dataloader():
        x, eeg, em = b["fmri"], b["eeg"], b["eeg_mask"]
        mask = anchor_mask(x.shape[0], k)
        met["Linear"].update(linear_fill(x, mask), x, frame_mask=~mask)
        met["EEG only (D(mu))"].update(model.predict_frames(b, estimator="mean", num_samples=1), x, frame_mask=~mask)
        met["Autoencoder D(E x) (sees the frames)"].update(
            model.autoencoder.decode(model.autoencoder.encode(x)).float(), x, frame_mask=~mask
        )
        acc = torch.zeros_like(x)
        for i in range(1, ns[-1] + 1):
            acc += model.sample(
                eeg,
                num_inference_steps=a.steps,
                observed=x,
                observed_mask=mask,
                seed=i - 1,
                eeg_mask=em,
                time_travel=a.time_travel,
            )
            if i in ns:
                met[f"With null space (mean of {i})"].update(acc / i, x, frame_mask=~mask)
        if not a.no_prior:
            p = model.sample(eeg, num_inference_steps=a.steps, eeg_mask=em, seed=0)
            _, mu = model.encode_eeg(eeg, em)
            pr.append(model.autoencoder.encode(p) - mu)
            te.append(model.autoencoder.encode(x) - mu)
print(f"steps {a.steps}, time travel {a.time_travel}")
for name, m in met.items():
    v = m.compute()
    print(f"{name:<36} whole MSE {v['whole/mse']:.3f}  whole r {v['whole/r']:.3f}", flush=True)


def lag1(r):
    r = r - r.mean((0, 1))
    return float((r[:, :-1] * r[:, 1:]).sum() / torch.sqrt((r[:, :-1] ** 2).sum() * (r[:, 1:] ** 2).sum()))


if pr:
    pr, te = torch.cat(pr), torch.cat(te)
    print(
        f"lag-1 corr of residual latents: test data {lag1(te):.2f}, prior samples {lag1(pr):.2f}; rms test {float(te.pow(2).mean().sqrt()):.3f}, prior {float(pr.pow(2).mean().sqrt()):.3f}"
    )
