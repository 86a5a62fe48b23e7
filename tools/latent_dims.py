"""How many latent dims of the PCA start generalise, against training length (notes/model.md, 'The
latent dim of a paper-length subject').

For the first 1/12, 1/4, 1/2 and all of the cache's training frames (in recording order: a shorter
recording of the same subject), the PCA start as the model computes it (``principal_axes`` on up to
``--pca_frames`` of them, drawn as ``train_frames_sample`` draws), and, where there are more
training frames than that, on all of them. Prints the count ``held_out_variance`` finds (the fit's
latent-dim check), each dim's validation variance as a fraction of its training variance at some
dims, and the fraction of the validation frames' variance the top dims capture.

    python tools/latent_dims.py data/prepared/sub_0001.h5 [--pca_frames 4096] [--max_dim 1024]
"""

from __future__ import annotations

import argparse
import math
import time

import h5py
import numpy as np
import torch

from eeg2fmri.nn.autoencoder import held_out_variance, principal_axes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cache")
    ap.add_argument("--pca_frames", type=int, default=4096)
    ap.add_argument("--max_dim", type=int, default=1024)
    args = ap.parse_args()
    with h5py.File(args.cache) as h5:
        fmri = torch.from_numpy(h5["fmri"][:])  # (T, V) float16
        split = h5["split"][:]
    train, val = np.flatnonzero(split == 0), np.flatnonzero(split == 1)
    xv = fmri[val].float()  # (n_val, V)
    print(f"{args.cache}: {fmri.shape[1]} grayordinates, {len(train)} training and {len(val)} validation frames")
    marks = [m for m in (8, 16, 32, 64, 96, 128, 192, 256, 384, 512, 768, 1024) if m <= args.max_dim]
    for frac in (1 / 12, 1 / 4, 1 / 2, 1.0):
        tr = train[: int(round(frac * len(train)))]  # the recording's first training frames
        for n in sorted({min(args.pca_frames, len(tr)), len(tr)}):
            t0 = time.perf_counter()
            rows = np.sort(np.random.default_rng(0).choice(tr, size=n, replace=False))
            q = min(args.max_dim, n - 1)
            mean, s, v = principal_axes(fmri[rows], q)  # (V,), (q,), (V, q)
            scale = s / math.sqrt(n - 1)  # (q,) training std of each mode
            z = (xv - mean) @ v / scale  # (n_val, q) the validation frames' normalised latents
            ratio, k = held_out_variance(z)
            total = (xv - mean).square().sum(1).mean()
            captured = ((z * scale).square().mean(0)).cumsum(0) / total  # (q,) by the top j dims
            print(
                f"training frames {len(tr)} ({frac:.3f} of them), PCA on {n}: {k} dims generalise "
                f"[{time.perf_counter() - t0:.0f} s]\n"
                f"  validation / training variance at dim  "
                + " ".join(f"{m}:{ratio[m - 1]:.2f}" for m in marks if m <= q)
                + "\n  validation variance in the top dims    "
                + " ".join(f"{m}:{captured[m - 1]:.3f}" for m in marks if m <= q),
                flush=True,
            )


if __name__ == "__main__":
    main()
