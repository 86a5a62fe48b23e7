"""The sampler's x̂₀ clipping (diffusion.clip_x0, EEG2fMRIDiffusion.x0_bound): hand-computed values,
the bound learned in training and kept in the checkpoint, and the chain held inside it."""

from __future__ import annotations

import math

import torch

from eeg2fmri import diffusion as D
from tests.test_module import batch, tiny_model

AC = D.alphas_cumprod(D.linear_beta_schedule(1000)).float()


def test_clip_x0_by_hand():
    """x_t = 1, ε̂ = −2 at t = 999: x̂₀ = (1 + 2 sqrt(1 − ᾱ)) / sqrt(ᾱ) ≈ 456, clipped to the bound 3;
    the returned ε is (x_t − sqrt(ᾱ) · 3) / sqrt(1 − ᾱ), so the DDIM step's x̂₀ is exactly 3."""
    a = float(AC[999])
    x_t = torch.ones(1, 2, 3)  # (B, K, d)
    bound = torch.tensor([3.0, 1e6, 0.5])  # (d,)
    eps = D.clip_x0(lambda x, t: torch.full_like(x, -2.0), bound, AC)(x_t, torch.tensor([999]))
    x0_raw = (1 + 2 * math.sqrt(1 - a)) / math.sqrt(a)
    want_x0 = torch.tensor([3.0, x0_raw, 0.5])
    want_eps = (1 - math.sqrt(a) * want_x0) / math.sqrt(1 - a)
    torch.testing.assert_close(eps, want_eps.expand(1, 2, 3), rtol=1e-5, atol=1e-5)
    _, x0 = D.ddim_step(x_t, eps, AC[999], AC[979], 0.0)
    torch.testing.assert_close(x0, want_x0.expand(1, 2, 3), rtol=1e-4, atol=1e-4)


def test_an_exploding_eps_network_samples_inside_the_bound():
    """A network whose x̂₀ is ~100× the data's: without the clip the chain ends far outside the
    training range; with it every latent of the sample is inside the bound."""
    bound = torch.tensor([1.0, 2.0])  # (d,)

    def eps_fn(x, t):
        return -x  # x̂₀ = x_t (1 + sqrt(1 − ᾱ)) / sqrt(ᾱ): ~2 / sqrt(ᾱ) times x_t

    g = torch.Generator().manual_seed(0)
    free = D.ddim_sample(eps_fn, (64, 4, 2), AC, 20, generator=g)
    g = torch.Generator().manual_seed(0)
    held = D.ddim_sample(D.clip_x0(eps_fn, bound, AC), (64, 4, 2), AC, 20, generator=g)
    assert free.abs().amax() > 10
    assert (held.abs() <= bound + 1e-5).all()


def test_training_learns_the_bound_and_the_checkpoint_keeps_it(tmp_path):
    m = tiny_model().train()
    b = batch()
    assert m.x0_bound is None
    losses = m._losses(b)
    assert torch.isfinite(losses["loss"])
    with torch.no_grad():
        z = m.autoencoder.encode(b["fmri"])  # (B, K, d)
        _, mu = m.encode_eeg(b["eeg"])
        want = (z - mu).abs().amax(dim=(0, 1))  # (d,) the residual the DiT generates
    m.on_train_epoch_end()
    torch.testing.assert_close(m.x0_bound, want)
    ckpt = {"state_dict": m.state_dict()}
    m.on_save_checkpoint(ckpt)
    other = tiny_model()
    other.on_load_checkpoint(ckpt)
    torch.testing.assert_close(other.x0_bound, want)
    del ckpt["eeg2fmri_x0_bound"]  # a checkpoint from before the bound: sampling is unclipped
    other.on_load_checkpoint(ckpt)
    assert other.x0_bound is None


def test_module_sample_clips_the_residual_chain():
    m = tiny_model().eval()
    d = m.hparams.latent_dim
    m._eps = lambda x_t, t, h, drop, eeg_mask, mu: -x_t  # an exploding x̂₀
    seen: list[torch.Tensor] = []
    decode = m.autoencoder.decode
    m.autoencoder.decode = lambda z: (seen.append(z.detach().clone()), decode(z))[1]
    b = batch()
    _, mu = m.encode_eeg(b["eeg"])
    m.x0_bound = torch.full((d,), 0.25)
    m.sample(b["eeg"], num_inference_steps=5)
    assert ((seen[-1] - mu).abs() <= 0.25 + 1e-5).all()  # the residual inside the bound
    m.sample(b["eeg"], num_inference_steps=5, clip_x0=False)
    assert (seen[-1] - mu).abs().amax() > 1.0
