"""The DiT as a correction to the Gaussian model (``gaussian_prior``): the exact denoiser of the
stationary Gaussian model against its dense closed form, and the model at the DiT's zero
initialisation: its ε is that denoiser's, and InterRecon's chain from x_T = 0 then reaches the
Gaussian conditional fill (the same conditional mean, by sampling)."""

from __future__ import annotations

import math

import torch

from eeg2fmri import diffusion as D
from eeg2fmri import gaussian as G
from tests.test_gaussian_fill import ar1_acov
from tests.test_module import batch, tiny_model


def _dense_x0(x_t, a, mean, acov):
    """E[x0 | x_t] per dim from the dense (K, K) Toeplitz matrix, float64 (B, K, d)."""
    B, K, d = x_t.shape
    k = torch.arange(K)
    out = torch.empty(B, K, d, dtype=torch.float64)
    for j in range(d):
        sigma = acov[j, (k[:, None] - k[None]).abs()]  # (K, K)
        for b in range(B):
            ab = float(a[b])
            gain = math.sqrt(ab) * sigma @ torch.linalg.inv(ab * sigma + (1 - ab) * torch.eye(K, dtype=torch.float64))
            out[b, :, j] = mean[j] + gain @ (x_t[b, :, j].double() - math.sqrt(ab) * mean[j])
    return out


def test_denoise_is_the_dense_conditional_mean():
    K, d = 6, 3
    acov = torch.cat([ar1_acov(phi, s2, 8) for phi, s2 in ((0.9, 1.0), (0.5, 2.0), (0.0, 0.5))])  # (d, L)
    mean = torch.tensor([0.3, -1.0, 0.0], dtype=torch.float64)
    x_t = torch.randn(4, K, d, generator=torch.Generator().manual_seed(0))
    a = torch.tensor([0.999, 0.5, 0.05, 4e-5])
    torch.testing.assert_close(G.denoise(x_t, a, mean, acov), _dense_x0(x_t, a, mean, acov), atol=1e-10, rtol=0)


def test_a_window_longer_than_the_estimated_lags_takes_the_rest_as_zero():
    """Short training clips leave fewer lags than a window has frames: the rest are 0, made positive
    definite; the known lags barely move and the denoiser is that of the extended sequence."""
    acov = ar1_acov(0.5, 1.0, 8, 2).clone()
    acov[:, 3:] = float("nan")
    ext = G.window_acov(acov, 6)  # (d, 6)
    assert torch.isfinite(ext).all() and ext.shape == (2, 6)
    torch.testing.assert_close(ext[:, :3], acov[:, :3], atol=0.05, rtol=0)
    k = torch.arange(6)
    assert torch.linalg.eigvalsh(ext[0, (k[:, None] - k[None]).abs()]).min() > 0
    x_t = torch.randn(2, 6, 2, generator=torch.Generator().manual_seed(2))
    a = torch.tensor([0.9, 0.2])
    torch.testing.assert_close(G.denoise(x_t, a, torch.zeros(2), acov), _dense_x0(x_t, a, torch.zeros(2), ext))


def _gaussian_model(K=6, phi=0.85, **kw):
    """A tiny default model (regression stage, DiT at its zero initialisation) whose residual's
    statistics are AR(1) ``phi`` with unit variance in every dim."""
    m = tiny_model(n_frames=K, **kw).eval()
    d = m.hparams.latent_dim
    with torch.no_grad():
        for name in ("z", "r"):
            getattr(m, f"gauss_{name}_mean").zero_()
            getattr(m, f"gauss_{name}_acov").copy_(ar1_acov(phi, 1.0, G.N_LAGS, d))
    return m


def test_at_the_dits_zero_init_the_prior_is_the_gaussian_model():
    m = _gaussian_model(gaussian_prior=True)
    B, K, d = 3, 6, m.hparams.latent_dim
    x_t = torch.randn(B, K, d, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([999, 500, 3])
    a = m.alphas_cumprod[t]
    want = D.predict_eps(x_t.double(), _dense_x0(x_t, a, m.gauss_r_mean, m.gauss_r_acov), a.double().view(-1, 1, 1))
    b = batch(B=B, K=K)
    h, mu = m.encode_eeg(b["eeg"])
    torch.testing.assert_close(m._eps(x_t, t, h, None, None, mu).double(), want.double(), atol=2e-4, rtol=1e-4)


def test_interrecon_from_zero_noise_reaches_the_gaussian_fill():
    """Frames 0 and K−1 observed: the chain from x_T = 0 of the Gaussian prior (DiT at zero) gives the
    missing frames' conditional mean, which ``gaussian_fill`` computes in closed form; without
    ``gaussian_prior`` the zero DiT's prior is white noise and the fill is D(μ) instead."""
    K = 6
    b = batch(B=2, K=K, seed=3)
    mask = torch.zeros(2, K, dtype=torch.bool)
    mask[:, [0, K - 1]] = True
    errors = {}
    for prior in (True, False):
        m = _gaussian_model(K=K, gaussian_prior=prior)
        with torch.no_grad():
            want = m.gaussian_fill(b["fmri"], mask, b["eeg"])  # (B, K, V)
            got = m.sample(
                b["eeg"],
                num_inference_steps=1000,
                observed=b["fmri"],
                observed_mask=mask,
                zero_noise=True,
                clip_x0=False,
            )  # (B, K, V)
            _, mu = m.encode_eeg(b["eeg"])
            d_mu = m.autoencoder.decode(mu).float()  # (B, K, V)
        miss = ~mask
        scale = (want[miss] - d_mu[miss]).abs().max()  # how far the conditional mean moves from D(μ)
        errors[prior] = float((got[miss] - want[miss]).abs().max() / scale)
    assert errors[True] < 0.05 and errors[False] > 0.5, errors
