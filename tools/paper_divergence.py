"""Diagnose the as-published model's sampling at SCALE=small (notes/model.md): sample spread with the EMA
and the raw weights, and the ε-network's error at several noise levels.

    python tools/paper_divergence.py results/small/cells/sub1/K10/paper/checkpoints/last.ckpt data/prepared/small/sub_0001.h5
"""

import sys

import torch

from eeg2fmri.data.datamodule import EEGfMRIDataModule
from eeg2fmri.module import EEG2fMRIDiffusion

ck, cache = sys.argv[1:3]
c = torch.load(ck, map_location="cpu", weights_only=False)
m = EEG2fMRIDiffusion.load_from_checkpoint(ck, map_location="cpu").eval()
dm = EEGfMRIDataModule(cache, n_frames=10, batch_size=8, eeg_context=m.eeg_context)
dm.setup("test")
b = next(iter(dm.test_dataloader()))
with torch.no_grad():
    s = m.sample(b["eeg"], eeg_mask=b.get("eeg_mask"), num_inference_steps=50, seed=0)
    print("EMA: sample std", s.std().item())
    m.load_state_dict(c["current_model_state"])
    m.eval()
    s = m.sample(b["eeg"], eeg_mask=b.get("eeg_mask"), num_inference_steps=50, seed=0)
    print("raw: sample std", s.std().item(), "mse", ((s - b["fmri"]) ** 2).mean().item())
    z = m.autoencoder.encode(b["fmri"])
    print("raw AE z std", z.std().item())
    # eps-network quality at several t

    for n in (10, 100, 500, 900, 999):
        t = torch.full((z.shape[0],), n)
        e = torch.randn_like(z)
        a = m.alphas_cumprod[n]
        xt = a.sqrt() * z + (1 - a).sqrt() * e
        h, mu = m.encode_eeg(b["eeg"], b.get("eeg_mask"))
        eh = m._eps(xt, t, h, None, b.get("eeg_mask"), mu)
        print(n, "eps mse", ((eh - e) ** 2).mean().item(), "eps_hat std", eh.std().item())
