"""Score the parts of a diffusion checkpoint on its test windows (notes/model.md): the regression
stage alone, D(μ), beside the posterior mean D(μ + r̂₀) and one sample.

    python tools/score_parts.py CKPT CACHE
"""

from __future__ import annotations

import sys

import torch

from eeg2fmri.data.datamodule import EEGfMRIDataModule
from eeg2fmri.data.regions import region_columns
from eeg2fmri.metrics import RegionMetrics
from eeg2fmri.module import EEG2fMRIDiffusion


def main(ckpt: str, cache: str) -> None:
    model = EEG2fMRIDiffusion.load_from_checkpoint(ckpt, map_location="cpu").eval()
    dm = EEGfMRIDataModule(cache, n_frames=model.n_frames, batch_size=16, eeg_context=model.eeg_context)
    dm.setup("test")
    cols = {r: region_columns(r, dm.indices) for r in ("whole", "V1", "V1+A1")}
    parts = {
        "regression D(mu)": RegionMetrics(cols, dm.n_vertices, identification=False),
        "posterior mean": RegionMetrics(cols, dm.n_vertices, identification=False),
    }
    with torch.no_grad():
        for b in dm.test_dataloader():
            _, mu = model.encode_eeg(b["eeg"], b["eeg_mask"])
            if mu is not None:
                parts["regression D(mu)"].update(model.autoencoder.decode(mu), b["fmri"])
            parts["posterior mean"].update(model.predict_frames(b, estimator="mean", num_samples=1), b["fmri"])
    print(f"{'part':<20} {'V1 temporal r':>14} {'V1+A1 temporal r':>17} {'whole MSE':>10} {'whole r':>8}")
    for name, m in parts.items():
        if name.startswith("regression") and model.regression_head is None:
            continue
        v = m.compute()
        print(
            f"{name:<20} {v['V1/temporal_r_median']:>14.3f} {v['V1+A1/temporal_r_median']:>17.3f} {v['whole/mse']:>10.3f} {v['whole/r']:>8.3f}"
        )


if __name__ == "__main__":
    main(*sys.argv[1:3])
