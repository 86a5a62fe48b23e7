"""Reference fills for missing frames: linear and cubic-spline interpolation between anchors.

The baselines of InterRecon (paper Table 2) and of censored-frame filling (the ``fill`` job), as
fMRI scrubbing pipelines do it. Frames before the first / after the last observed frame take the
nearest observed frame (no extrapolation). Observed frames are returned unchanged.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.interpolate import CubicSpline
from torch import Tensor


def _check(x: Tensor, observed_mask: Tensor) -> None:
    if observed_mask.shape != x.shape[:2]:
        raise ValueError(f"observed_mask {tuple(observed_mask.shape)} does not match frames {tuple(x.shape[:2])}")
    if not bool(observed_mask.any(dim=1).all()):
        raise ValueError("every window needs at least one observed frame to interpolate from")


def linear_fill(x: Tensor, observed_mask: Tensor) -> Tensor:
    """x (B, K, V) with observed_mask (B, K) bool → missing frames linearly interpolated in time."""
    _check(x, observed_mask)
    B, K = observed_mask.shape
    k = torch.arange(K, device=x.device).expand(B, K)  # (B, K)
    big = torch.full_like(k, K * 4)
    # index of the previous and next observed frame of every frame (cummax / reversed cummin)
    prev = torch.where(observed_mask, k, torch.full_like(k, -1)).cummax(dim=1).values  # (B, K)
    nxt = torch.where(observed_mask, k, big).flip(1).cummin(dim=1).values.flip(1)  # (B, K)
    prev_ok, next_ok = prev >= 0, nxt < K
    prev = torch.where(prev_ok, prev, nxt)  # before the first anchor: hold the first
    nxt = torch.where(next_ok, nxt, prev)  # after the last anchor: hold the last
    span = (nxt - prev).clamp(min=1)
    w = ((k - prev).float() / span.float()).unsqueeze(-1)  # (B, K, 1) weight of the next anchor
    xp = torch.gather(x, 1, prev[..., None].expand_as(x))  # (B, K, V)
    xn = torch.gather(x, 1, nxt[..., None].expand_as(x))  # (B, K, V)
    out = (1 - w) * xp.float() + w * xn.float()
    return torch.where(observed_mask[..., None], x.float(), out)


def cubic_fill(x: Tensor, observed_mask: Tensor) -> Tensor:
    """Cubic-spline (not-a-knot; linear with two anchors) interpolation of the missing frames."""
    _check(x, observed_mask)
    xs = x.detach().float().cpu().numpy()  # (B, K, V)
    mask = observed_mask.cpu().numpy()
    out = xs.copy()
    for b in range(xs.shape[0]):
        obs = np.flatnonzero(mask[b])
        miss = np.flatnonzero(~mask[b])
        if len(miss) == 0:
            continue
        if len(obs) == 1:
            out[b, miss] = xs[b, obs[0]]
            continue
        inside = miss[(miss > obs[0]) & (miss < obs[-1])]
        if len(inside):
            out[b, inside] = CubicSpline(obs, xs[b, obs], axis=0)(inside)
        out[b, miss[miss < obs[0]]] = xs[b, obs[0]]
        out[b, miss[miss > obs[-1]]] = xs[b, obs[-1]]
    return torch.as_tensor(out, device=x.device)
