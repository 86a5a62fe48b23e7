"""InterRecon against answers known in closed form: the sampler on a correlated Gaussian prior with its
exact denoiser reaches the conditional mean and variance of the missing frames given the anchors
(so a missing per-step projection or a wrong update is seen), the module's residual wiring (y − μ)
on the same prior, and DDIM samples equal to ``ddim_step`` chained by hand (the timestep wiring)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from eeg2fmri import diffusion as D
from tests.test_module import batch, tiny_model

N = 1000
AC = D.alphas_cumprod(D.linear_beta_schedule(N))


def ar1_covariance(K: int, rho: float, dims: Tensor) -> Tensor:
    """Σ (K d, K d) float64, frame-major: AR(1) coupling rho^|i - j| across the K frames, ``dims``
    (d, d) across the latent dims of a frame (Kronecker product)."""
    k = torch.arange(K, dtype=torch.float64)
    return torch.kron(rho ** (k[:, None] - k[None]).abs(), dims.double())  # (K d, K d)


def gaussian_eps(sigma: Tensor, alphas_cumprod: Tensor):
    """The exact ε of data x0 ~ N(0, Σ): E[x0 | x_t] = sqrt(a) Σ (a Σ + (1 − a) I)^-1 x_t, and
    ε = (x_t − sqrt(a) E[x0 | x_t]) / sqrt(1 − a), a = ᾱ_t. Returns eps_fn(x_t (B, K, d), t (B,))."""
    eye = torch.eye(len(sigma), dtype=torch.float64)
    maps: dict[int, Tensor] = {}

    def eps_fn(x_t: Tensor, t: Tensor) -> Tensor:
        n = int(t[0])
        assert (t == n).all(), "one timestep per call"
        a = float(alphas_cumprod[n])
        if n not in maps:
            maps[n] = math.sqrt(a) * sigma @ torch.linalg.inv(a * sigma + (1 - a) * eye)  # (K d, K d)
        x = x_t.flatten(1).double()  # (B, K d)
        x0 = x @ maps[n].T  # (B, K d)
        return ((x - math.sqrt(a) * x0) / math.sqrt(1 - a)).float().view_as(x_t)  # (B, K, d)

    return eps_fn


def conditional(sigma: Tensor, y: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Mean (M d,) and variances (M d,) of the missing frames of N(0, Σ) given the observed ones:
    Σ_mo Σ_oo^-1 y_o and diag(Σ_mm − Σ_mo Σ_oo^-1 Σ_om). y (K, d), mask (K,) True = observed."""
    o = mask.repeat_interleave(y.shape[1])  # (K d,)
    s_mo, s_oo = sigma[~o][:, o], sigma[o][:, o]
    mean = s_mo @ torch.linalg.solve(s_oo, y.double().flatten()[o])  # (M d,)
    var = (sigma[~o][:, ~o] - s_mo @ torch.linalg.solve(s_oo, s_mo.T)).diag()  # (M d,)
    return mean, var


DIMS = torch.tensor([[1.0, 0.5], [0.5, 1.0]])  # two latent dims, correlated within a frame
WINDOWS = [  # (K, rho, observed frames): a gap between two anchor pairs, one anchor, sparse anchors
    (8, 0.9, [0, 1, 6, 7]),
    (6, 0.8, [2]),
    (8, 0.9, [0, 3, 7]),
]


def _window(K: int, rho: float, observed: list[int]):
    sigma = ar1_covariance(K, rho, DIMS)  # (K d, K d)
    mask = torch.zeros(K, dtype=torch.bool)
    mask[observed] = True
    y = 1.5 * torch.randn(K, 2, generator=torch.Generator().manual_seed(3))  # (K, d) anchors
    return sigma, mask, y


@pytest.mark.parametrize("K, rho, observed", WINDOWS)
def test_mean_of_interrecon_converges_to_the_conditional_mean(K, rho, observed):
    """With η = 0 and this linear denoiser the chain is linear in (x_T, y), so the mean over
    x_T ~ N(0, I) is the chain from x_T = 0, exactly: its distance to the conditional mean must
    fall as the steps grow and be small at 1000 (removing the per-step projection leaves the
    unconditional mean 0; re-deriving the anchors' noise from x0_hat stalls at ~0.3 of the way)."""
    sigma, mask, y = _window(K, rho, observed)
    want, _ = conditional(sigma, y, mask)  # (M d,)
    errors = []
    for steps in (50, 250, 1000):
        x = D.interrecon_sample(gaussian_eps(sigma, AC), y[None], mask[None], AC, steps, x_T=torch.zeros(1, K, 2))
        errors.append(float((x[0, ~mask].double().flatten() - want).abs().max() / want.abs().max()))
    assert errors[0] > errors[1] > errors[2], errors
    assert errors[2] < 0.06, errors


@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize("K, rho, observed", WINDOWS)
def test_interrecon_samples_the_gaussian_posterior(K, rho, observed, eta):
    """2000 InterRecon samples (random x_T, and η noise) of a correlated Gaussian prior: their mean
    and variance match the missing frames' conditional mean and variance given the anchors."""
    sigma, mask, y = _window(K, rho, observed)
    want_mean, want_var = conditional(sigma, y, mask)  # (M d,), (M d,)
    B = 2000
    x = D.interrecon_sample(
        gaussian_eps(sigma, AC),
        y.expand(B, K, 2),
        mask.expand(B, K),
        AC,
        num_inference_steps=1000,
        eta=eta,
        generator=torch.Generator().manual_seed(1),
    )  # (B, K, d)
    assert torch.equal(x[:, mask], y[mask].expand(B, -1, -1))
    filled = x[:, ~mask].double().flatten(1)  # (B, M d)
    err = (filled.mean(0) - want_mean).abs().max() / want_mean.abs().max()
    assert err < 0.08, float(err)  # the Monte-Carlo error is ~0.01 here
    ratio = filled.var(0) / want_var  # (M d,)
    assert 0.85 < ratio.min() and ratio.max() < 1.2, ratio.tolist()


# ------------------------------------------------------------------------------------------------
# The module: the residual y − μ under a regression stage
# ------------------------------------------------------------------------------------------------


def _model_with_gaussian_residual(rho: float = 0.9):
    """The tiny diffusion model with a regression stage whose μ is far from 0 and differs by frame,
    and its DiT's ε replaced by the exact ε of a Gaussian residual prior N(0, Σ) (AR(1) across the
    K = 4 frames, independent latent dims). Returns (model, Σ, decoded latents recorded per call)."""
    m = tiny_model().eval()
    K, d = m.n_frames, m.hparams.latent_dim
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        m.regression_head.fir.bias.copy_(2.0 * torch.randn(d, generator=g))
        m.regression_head.fir.weight.copy_(0.05 * torch.randn(m.regression_head.fir.weight.shape, generator=g))
    sigma = ar1_covariance(K, rho, torch.eye(d))  # (K d, K d)
    eps_fn = gaussian_eps(sigma, m.alphas_cumprod)
    m._eps = lambda x_t, t, h, drop, eeg_mask, mu: eps_fn(x_t, t)  # the module's sampler calls self._eps
    decoded: list[Tensor] = []
    decode = m.autoencoder.decode

    def recording_decode(z: Tensor) -> Tensor:
        decoded.append(z.detach().clone())  # the chain's latents before the observed frames are pasted
        return decode(z)

    m.autoencoder.decode = recording_decode
    return m, sigma, decoded


def test_module_interrecon_imposes_the_observed_residual():
    """sample(observed=...) with a regression stage: the chain runs on r = z − μ with anchors y − μ,
    so the latents it decodes equal y at the observed frames (before the final paste) and, at the
    missing frames, μ + the conditional mean of the residual given y − μ at the anchors."""
    m, sigma, decoded = _model_with_gaussian_residual()
    B, K = 1000, m.n_frames
    b = batch(B=1, K=K)
    eeg, fmri = b["eeg"].expand(B, -1, -1, -1), b["fmri"].expand(B, -1, -1)  # one window, B samples
    mask = torch.tensor([True, False, False, True]).expand(B, K)  # (B, K)
    _, mu = m.encode_eeg(b["eeg"])  # (1, K, d)
    y = m.autoencoder.encode(b["fmri"])  # (1, K, d)
    assert mu.abs().mean() > 1.0 and (mu[0, 0] - mu[0, 3]).abs().max() > 0.1  # μ matters and moves

    out = m.sample(eeg, num_inference_steps=1000, observed=fmri, observed_mask=mask, seed=0)  # (B, K, V)
    z = decoded[-1]  # (B, K, d)
    torch.testing.assert_close(z[:, mask[0]], y[:, mask[0]].expand(B, -1, -1), atol=1e-5, rtol=0)
    r_mean, _ = conditional(sigma, (y - mu)[0], mask[0])  # (M d,)
    want = mu[0, ~mask[0]].double().flatten() + r_mean  # (M d,)
    got = z[:, ~mask[0]].double().mean(0).flatten()  # (M d,)
    err = (got - want).abs().max() / (want - mu[0, ~mask[0]].double().flatten()).abs().max()
    assert err < 0.08, float(err)
    assert torch.equal(out[mask], fmri[mask])
    torch.testing.assert_close(out[~mask], m.autoencoder.decode(z)[~mask])


# ------------------------------------------------------------------------------------------------
# The timestep wiring: samples equal to ddim_step chained by hand
# ------------------------------------------------------------------------------------------------


def _t_dependent_eps(K: int, d: int):
    """A nonlinear ε that depends on the timestep, so that a step given the wrong t or ᾱ differs."""
    W = torch.randn(K * d, K * d, generator=torch.Generator().manual_seed(12)) / math.sqrt(K * d)

    def eps_fn(x_t: Tensor, t: Tensor) -> Tensor:
        return torch.tanh((x_t.flatten(1) @ W).view_as(x_t)) + (t.float() / N)[:, None, None]  # (B, K, d)

    return eps_fn


def _by_hand(eps_fn, x: Tensor, ac: Tensor, steps: int, eta: float, g, y=None, mask=None) -> Tensor:
    """DDIM (and InterRecon's projection) from ``x`` = x_T: ddim_step at the timesteps of
    ddim_timesteps, ᾱ_prev = 1 after the last, η noise drawn from ``g`` after x_T."""
    ts, prev = D.ddim_timesteps(len(ac), steps)
    for t, t_prev in zip(ts.tolist(), prev.tolist()):
        a_t, a_prev = ac[t], (ac[t_prev] if t_prev >= 0 else torch.tensor(1.0))
        eps = eps_fn(x, torch.full((x.shape[0],), t))  # (B, K, d)
        x0 = None if y is None else torch.where(mask[..., None], y, D.predict_x0(x, eps, a_t))  # (B, K, d)
        noise = torch.randn(x.shape, generator=g) if eta > 0 else None
        x, _ = D.ddim_step(x, eps, a_t, a_prev, eta, noise=noise, x0=x0)  # (B, K, d)
    return x


@pytest.mark.parametrize("steps", [2, 3])
@pytest.mark.parametrize("eta", [0.0, 0.7])
@pytest.mark.parametrize("interrecon", [False, True])
def test_ddim_sample_is_ddim_step_chained_by_hand(steps, eta, interrecon):
    B, K, d = 3, 5, 2
    eps_fn = _t_dependent_eps(K, d)
    ac = AC.float()
    y = torch.randn(B, K, d, generator=torch.Generator().manual_seed(13)) if interrecon else None
    mask = torch.tensor([[1, 0, 0, 0, 1], [0, 1, 0, 0, 0], [1, 1, 0, 1, 0]], dtype=torch.bool) if interrecon else None
    got = D.ddim_sample(
        eps_fn, (B, K, d), AC, steps, eta, generator=torch.Generator().manual_seed(14), y=y, observed_mask=mask
    )  # (B, K, d)
    g = torch.Generator().manual_seed(14)
    x_T = torch.randn(B, K, d, generator=g)  # the sampler draws x_T first
    want = _by_hand(eps_fn, x_T, ac, steps, eta, g, y, mask)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)


@pytest.mark.parametrize("steps", [2, 3])
@pytest.mark.parametrize("interrecon", [False, True])
@pytest.mark.parametrize("zero_noise", [False, True])
def test_module_sample_is_ddim_step_chained_by_hand(steps, interrecon, zero_noise):
    """EEG2fMRIDiffusion.sample: x_T from the seed (or 0 with ``zero_noise``), the DDIM chain on the
    residual, + μ, decoded."""
    m = tiny_model().eval()
    with torch.no_grad():
        m.regression_head.fir.bias.normal_(0, 1.0, generator=torch.Generator().manual_seed(15))
    B, K, d = 2, m.n_frames, m.hparams.latent_dim
    eps_fn = _t_dependent_eps(K, d)
    m._eps = lambda x_t, t, h, drop, eeg_mask, mu: eps_fn(x_t, t)
    b = batch(B=B, K=K)
    mask = torch.tensor([[1, 0, 0, 1], [0, 0, 1, 0]], dtype=torch.bool) if interrecon else None
    observed = b["fmri"] if interrecon else None
    got = m.sample(
        b["eeg"], num_inference_steps=steps, observed=observed, observed_mask=mask, seed=7, zero_noise=zero_noise
    )  # (B, K, V)

    _, mu = m.encode_eeg(b["eeg"])  # (B, K, d)
    y = m.autoencoder.encode(b["fmri"]) - mu if interrecon else None  # (B, K, d) the observed residual
    g = torch.Generator().manual_seed(7)
    x_T = torch.zeros(B, K, d) if zero_noise else torch.randn(B, K, d, generator=g)
    r = _by_hand(eps_fn, x_T, m.alphas_cumprod, steps, 0.0, g, y, mask)  # (B, K, d)
    if interrecon:
        r = torch.where(mask[..., None], y, r)
    want = m.autoencoder.decode(r + mu)  # (B, K, V)
    if interrecon:
        want = torch.where(mask[..., None], b["fmri"], want)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
