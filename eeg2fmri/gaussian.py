"""A stationary Gaussian model of the frame latents: its statistics, and the conditional-mean fill.

The statistical reference for filling missing frames (issue 23): each latent dim of the frames is a
stationary Gaussian process in time, independent of the other dims, with a mean and an
autocovariance γ(k) at lags k = 0 .. L − 1 estimated on the training split's consecutive frames.
The missing frames' conditional mean given the observed ones is then kriging in time:

    E[x_M | x_O] = m_M + Σ_MO Σ_OO⁻¹ (x_O − m_O),   Σ_ij = γ(|t_i − t_j|)  (a Toeplitz matrix)

per dim. With the EEG's regression stage the process is the residual r = z − μ(EEG) and the mean of
each frame is its μ, so the fill is μ_M + Σ_MO Σ_OO⁻¹ (z_O − μ_O). Where linear interpolation draws
a straight line between the two nearest anchors, this weighs every anchor within L − 1 frames by the
data's own coupling and pulls towards the mean (or μ) as the anchors grow distant.

Plain tensor functions: the LightningModule estimates the statistics at fit, ``eeg2fmri fill`` and
the experiments apply them.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

N_LAGS = 64  # L: lags of the autocovariance kept (64 frames = 51 s at TR 0.8 s: past the BOLD's memory)


# --------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------


def autocovariance(x: Tensor, segment: Tensor, n_lags: int = N_LAGS) -> tuple[Tensor, Tensor]:
    """(mean (d,), autocovariance (d, n_lags)) of frames ``x`` (N, d) in time order, float64.

    ``segment`` (N,): the id of each frame's stretch of consecutive frames; frames of one stretch
    are contiguous rows, one frame apart in time. Lag k's value averages the products of the centred
    frames t and t + k of the same stretch (never across a clip's or split's edge) over those pairs.
    Only lags at which at least half of the frames have a partner are kept; the others are NaN: in
    clips of S frames lag k has about N (1 − k/S) pairs, and the few pairs of the longest lags give
    estimates noisy enough to dominate the positive definite repair below (at SCALE=small, clips of
    37-75 frames, keeping all 64 lags raised some dims' variance by 22 %; with this rule by < 1 %).
    The estimate is then made positive definite (:func:`positive_definite`), so that every
    window's Toeplitz matrix can be solved."""
    x = x.double()
    mean = x.mean(0)  # (d,)
    xc = x - mean  # (N, d)
    acov = torch.full((x.shape[1], n_lags), float("nan"), dtype=torch.float64, device=x.device)  # (d, L)
    for k in range(min(n_lags, len(x))):
        same = segment[k:] == segment[: len(x) - k]  # (N - k,) pairs within one stretch
        n = int(same.sum())
        if 2 * n < len(x):
            break
        acov[:, k] = (xc[k:][same] * xc[: len(x) - k][same]).sum(0) / n
    return mean, positive_definite(acov)


def positive_definite(acov: Tensor, floor: float = 1e-6) -> Tensor:
    """``acov`` (d, L) with its finite lags (a prefix of length L') made a positive definite sequence.

    A lag-by-lag estimate (each lag averaged over its own pairs) need not be positive definite, and a
    Toeplitz matrix of it can then have negative eigenvalues. The lags 0 .. L' − 1, mirrored into a
    circulant of size 2L' − 1, have a real spectrum; negative values there are raised to ``floor`` ×
    its largest. The result is a sum of cosines with positive weights, so every Toeplitz matrix of
    up to L' frames is positive definite (a principal block of that circulant), with its smallest
    eigenvalue at least the floor."""
    n = int(torch.isfinite(acov[0]).sum()) if acov.shape[0] else 0
    if n == 0:
        return acov
    g = acov[:, :n]  # (d, L')
    circ = torch.cat([g, g[:, 1:].flip(1)], dim=1)  # (d, 2L' - 1) symmetric
    spec = torch.fft.fft(circ, dim=1).real  # (d, 2L' - 1)
    spec = torch.maximum(spec, floor * spec.amax(1, keepdim=True).clamp(min=0))
    out = acov.clone()
    out[:, :n] = torch.fft.ifft(spec, dim=1).real[:, :n]
    return out


def valid_lags(acov: Tensor) -> int:
    """The number of leading lags of ``acov`` (d, L) that hold an estimate (the rest are NaN)."""
    return int(torch.isfinite(acov[0]).sum()) if acov.shape[0] else 0


# --------------------------------------------------------------------------------------------
# The conditional mean
# --------------------------------------------------------------------------------------------


def conditional_mean(x: Tensor, observed: Tensor, acov: Tensor, mean: Tensor) -> Tensor:
    """The missing frames' conditional mean given the observed ones, per dim, under the stationary
    Gaussian model (module docstring): (B, T, d) float64 with the observed frames as given.

    Args:
        x: (B, T, d) sequences of latents; the values at missing frames are not used.
        observed: (B, T) bool, True where the frame is observed.
        acov: (d, L) autocovariance at lags 0 .. L − 1 (trailing NaN lags are not used).
        mean: (d,) the process's mean, or (B, T, d) a mean per frame (the regression stage's μ).

    Each run of missing frames is filled from the observed frames around it, the window of at most
    L frames centred on it (lags beyond L − 1 are unknown): runs longer than L − 2 frames are cut
    into pieces that each get such a window, and a piece whose window holds no observed frame gets
    the mean. The solve of a window depends only on where its observed and missing frames lie, so
    windows of the same pattern share one (cached) set of weights.
    """
    B, T, d = x.shape
    L = valid_lags(acov)
    if L < 3:
        raise ValueError(f"the autocovariance holds {L} lags; the conditional mean needs at least 3")
    acov = acov[:, :L].double()  # (d, L)
    x = x.double()
    m = mean.double().expand(B, T, d)  # (B, T, d)
    out = torch.where(observed[..., None], x, m)  # (B, T, d) missing frames at the mean until filled
    obs_np = observed.cpu().numpy()
    weights: dict[tuple, Tensor] = {}
    for b in range(B):
        for a, e in _pieces(obs_np[b], L - 2):
            side = (L - (e - a)) // 2  # the window [a - side, e + side) spans at most L frames
            lo, hi = max(0, a - side), min(T, e + side)
            obs = lo + np.flatnonzero(obs_np[b, lo:hi])  # (n_O,) observed frames of the window
            if len(obs) == 0:
                continue  # no anchor within reach: the mean
            key = (e - a, tuple(obs - a))
            if key not in weights:
                weights[key] = _weights(acov, np.arange(e - a), obs - a)  # (d, n_M, n_O)
            idx = torch.as_tensor(obs, device=x.device)
            centred = x[b, idx] - m[b, idx]  # (n_O, d)
            out[b, a:e] = m[b, a:e] + torch.einsum("dmo,od->md", weights[key], centred)  # (n_M, d)
    return out


def _pieces(observed: np.ndarray, longest: int) -> list[tuple[int, int]]:
    """The runs of missing frames [a, e) of one sequence, those longer than ``longest`` cut into
    pieces of at most ``longest`` frames."""
    miss = np.flatnonzero(~observed)
    if len(miss) == 0:
        return []
    cut = np.flatnonzero(np.diff(miss) != 1) + 1
    out = []
    for run in np.split(miss, cut):
        for p in range(0, len(run), longest):
            out.append((int(run[p]), int(run[min(p + longest, len(run)) - 1]) + 1))
    return out


def _weights(acov: Tensor, missing: np.ndarray, observed: np.ndarray) -> Tensor:
    """Kriging weights Σ_MO Σ_OO⁻¹ per dim, (d, n_M, n_O) float64, for frames at ``missing`` and
    ``observed`` positions (their lags all below L)."""
    lag_oo = torch.as_tensor(np.abs(observed[:, None] - observed[None, :]), device=acov.device)  # (n_O, n_O)
    lag_mo = torch.as_tensor(np.abs(missing[:, None] - observed[None, :]), device=acov.device)  # (n_M, n_O)
    s_oo = acov[:, lag_oo]  # (d, n_O, n_O) symmetric positive definite
    s_mo = acov[:, lag_mo]  # (d, n_M, n_O)
    chol, info = torch.linalg.cholesky_ex(s_oo)
    if bool((info != 0).any()):  # not positive definite (a hand-made autocovariance): least squares
        return torch.linalg.lstsq(s_oo, s_mo.transpose(1, 2)).solution.transpose(1, 2)
    return torch.cholesky_solve(s_mo.transpose(1, 2), chol).transpose(1, 2)  # (d, n_M, n_O)


# --------------------------------------------------------------------------------------------
# The exact denoiser of the model
# --------------------------------------------------------------------------------------------


def denoise(x_t: Tensor, alpha_bar: Tensor, mean: Tensor, acov: Tensor) -> Tensor:
    """E[x₀ | x_t] (B, K, d) float64 under the stationary Gaussian model of K-frame windows, where
    x_t = √ᾱ x₀ + √(1 − ᾱ) ε: per dim, m + √ᾱ Σ (ᾱ Σ + (1 − ᾱ) I)⁻¹ (x_t − √ᾱ m), Σ the (K, K)
    Toeplitz matrix of its autocovariance. The DiT with ``gaussian_prior`` learns its correction
    (a denoiser that starts as this one couples a window's frames as the training data do).

    Args:
        x_t: (B, K, d) noisy windows.
        alpha_bar: (B,) ᾱ of each window's timestep (or a scalar).
        mean: (d,) the process's mean.
        acov: (d, L) autocovariance; :func:`window_acov` extends it when it holds fewer than K lags.

    Σ = U diag(λ) Uᵀ per dim, so the solve is a gain √ᾱ λ / (ᾱ λ + 1 − ᾱ) on each eigenvector.
    """
    B, K, d = x_t.shape
    lag = (torch.arange(K)[:, None] - torch.arange(K)[None]).abs().to(acov.device)  # (K, K)
    lam, U = torch.linalg.eigh(window_acov(acov, K)[:, lag])  # (d, K), (d, K, K) columns = eigenvectors
    a = torch.as_tensor(alpha_bar, dtype=torch.float64, device=x_t.device).reshape(-1, 1, 1)  # (B, 1, 1)
    m = mean.double()  # (d,)
    u = torch.einsum("bkd,dkl->bld", x_t.double() - a.sqrt() * m, U)  # (B, K, d) on the eigenvectors
    gain = a.sqrt() * lam.T / (a * lam.T + 1.0 - a)  # (B, K, d)
    return m + torch.einsum("bld,dkl->bkd", gain * u, U)  # (B, K, d)


def window_acov(acov: Tensor, n: int) -> Tensor:
    """The first ``n`` lags of ``acov`` (d, L) float64, for the Toeplitz matrix of an n-frame window.
    Training clips shorter than about 2n frames leave fewer than n lags estimated
    (:func:`autocovariance`); the missing ones are taken as 0 (no coupling known at that distance)
    and the sequence is made positive definite again (:func:`positive_definite`)."""
    n_valid = valid_lags(acov)
    if n_valid < 1:
        raise ValueError("the autocovariance holds no estimated lag")
    if n_valid >= n:
        return acov[:, :n].double()
    padded = torch.zeros(acov.shape[0], n, dtype=torch.float64, device=acov.device)  # (d, n)
    padded[:, :n_valid] = acov[:, :n_valid].double()
    return positive_definite(padded)
