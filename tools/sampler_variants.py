"""Sampler variants on a trained diffusion checkpoint (notes/model.md, "The paper's model as published"):
whole MSE of the z-scored frames for the mean of N samples and one sample, beside the training-mean frame,
and the latent std of the samples, for DDIM's spacing, step count and the x̂₀ clip.

    python tools/sampler_variants.py CKPT CACHE [STEPS] [VARIANTS] [SPLIT]

VARIANTS: comma-separated of base, trailing, clip (x̂₀ clipped to the training latents' largest |value|
per dim), noclip, steps100, n16 (clipped, mean of 16). SPLIT: test (default), val or train.
"""

import sys
import time

import torch

from eeg2fmri import diffusion as D
from eeg2fmri.data.datamodule import EEGfMRIDataModule
from eeg2fmri.module import EEG2fMRIDiffusion

ck, cache = sys.argv[1:3]
steps = int(sys.argv[3]) if len(sys.argv) > 3 else 20
variants = sys.argv[4].split(",") if len(sys.argv) > 4 else ["noclip", "trailing", "clip"]
split = sys.argv[5] if len(sys.argv) > 5 else "test"
m = EEG2fMRIDiffusion.load_from_checkpoint(ck, map_location="cpu").eval()
K, d = m.hparams.n_frames, m.hparams.latent_dim
dm = EEGfMRIDataModule(cache, n_frames=K, batch_size=64, eeg_context=m.eeg_context)
dm.setup("test")
with torch.no_grad():
    frames = list(dm.iter_frames("train"))
    z_train = torch.cat([m.autoencoder.encode(b["fmri"][:, 0]) for b in frames])  # (N, d)
    mean_frame = torch.cat([b["fmri"][:, 0].float() for b in frames]).mean(0)  # (V,)
bound = z_train.abs().amax(0)  # (d,)
print(f"training latents: std {z_train.std():.3f}; largest |z| per dim: median {bound.median():.2f}")
loader = {"test": dm.test_dataloader, "val": dm.val_dataloader}.get(split, lambda: dm._loader("train", False))
batches = [b for _, b in zip(range(8), loader())]


def run(name: str, spacing: str = "leading", clip: bool = False, n: int = 4, n_steps: int = steps) -> None:
    t0, se_mean, se_one, se_tm, count, spread = time.time(), 0.0, 0.0, 0.0, 0, 0.0
    for i, b in enumerate(batches):
        with torch.no_grad():
            h, mu = m.encode_eeg(b["eeg"], b.get("eeg_mask"))
            eps_fn = m._eps_fn(h, 1.0, b.get("eeg_mask"), mu)
            if clip:
                eps_fn = D.clip_x0(eps_fn, bound, m.alphas_cumprod)
            xs = []
            for s in range(n):
                g = torch.Generator().manual_seed(1000 * i + s)
                z = D.ddim_sample(
                    eps_fn, (b["eeg"].shape[0], K, d), m.alphas_cumprod, n_steps, generator=g, spacing=spacing
                )  # (B, K, d)
                spread += float(z.std()) / (n * len(batches))
                xs.append(m.autoencoder.decode(z if mu is None else z + mu).float())  # (B, K, V)
        x = b["fmri"].float()
        se_mean += float(((torch.stack(xs).mean(0) - x) ** 2).sum())
        se_one += float(((xs[0] - x) ** 2).sum())
        se_tm += float(((mean_frame - x) ** 2).sum())
        count += x.numel()
    print(
        f"{name:32s} mean of {n}: {se_mean / count:.3f}  one sample: {se_one / count:.3f}  "
        f"training-mean frame: {se_tm / count:.3f}  sample latent std {spread:.2f}  ({time.time() - t0:.0f} s)",
        flush=True,
    )


for v in variants:
    if v in ("base", "noclip"):
        run("leading spacing, no clip")
    elif v == "trailing":
        run("trailing spacing", spacing="trailing")
    elif v == "clip":
        run("x0 clipped", clip=True)
    elif v == "steps100":
        run("100 steps", n_steps=100)
    elif v == "n16":
        run("x0 clipped, mean of 16", clip=True, n=16)
