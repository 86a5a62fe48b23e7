"""The networks: shapes, adaLN-zero, frame order, CFG null token, latent normalisation, per-frame EEG."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from eeg2fmri.nn import DIT_CONFIGS, DiT, EEGEncoder, LinearAutoencoder
from eeg2fmri.nn.autoencoder import held_out_variance, principal_axes

D_LATENT, D_COND = 16, 8


def _dit(**kw) -> DiT:
    torch.manual_seed(0)
    return DiT(latent_dim=D_LATENT, cond_dim=D_COND, **{**DIT_CONFIGS["tiny"], **kw})


def _unzero(model: DiT) -> DiT:
    """Give the adaLN-zero layers random weights so the model computes something."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in [b.adaLN_modulation[-1] for b in model.blocks] + [
            model.final_layer.adaLN_modulation[-1],
            model.final_layer.linear,
        ]:
            m.weight.copy_(torch.randn(m.weight.shape, generator=g) * 0.1)
            m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    return model


def _inputs(B: int, K: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, K, D_LATENT, generator=g)
    t = torch.randint(0, 1000, (B,), generator=g)
    cond = torch.randn(B, K, D_COND, generator=g)
    return x, t, cond


# ----------------------------------------------------------------------------- DiT


@pytest.mark.parametrize("K", [3, 10])
@pytest.mark.parametrize("with_drop", [False, True])
def test_dit_shapes(K, with_drop):
    model = _unzero(_dit(n_frames=K))
    x, t, cond = _inputs(4, K)
    drop = torch.tensor([True, False, False, True]) if with_drop else None
    out = model(x, t, cond, drop)
    assert out.shape == (4, K, D_LATENT) and torch.isfinite(out).all()
    assert model(x, t, None).shape == (4, K, D_LATENT)


def test_dit_rejects_too_long_windows():
    model = _dit(n_frames=8, max_frames=8)
    with pytest.raises(ValueError, match="max_frames"):
        model(*_inputs(1, 9))
    with pytest.raises(ValueError, match="max_frames"):
        DiT(latent_dim=4, cond_dim=4, n_frames=9, max_frames=8, **DIT_CONFIGS["tiny"])


def test_dit_adaln_zero_then_learns():
    model = _dit()
    x, t, cond = _inputs(4, 5)
    out = model(x, t, cond)
    assert torch.equal(out, torch.zeros_like(out))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    F.mse_loss(out, torch.randn_like(out)).backward()
    opt.step()
    assert model(x, t, cond).abs().max() > 0


def test_dit_is_sensitive_to_frame_order():
    model = _unzero(_dit()).eval()
    x, t, cond = _inputs(2, 6)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    out = model(x, t, cond)
    out_perm = model(x[:, perm], t, cond[:, perm])
    assert not torch.allclose(out_perm, out[:, perm], atol=1e-4)
    # control: without the frame encoding attention is permutation-equivariant
    model.pos_embed.zero_()
    torch.testing.assert_close(model(x[:, perm], t, cond[:, perm]), model(x, t, cond)[:, perm])


def test_dit_null_token_and_timestep_types():
    model = _unzero(_dit()).eval()
    x, t, cond = _inputs(3, 4)
    other = torch.randn_like(cond)
    drop = torch.tensor([True, False, True])
    a, b = model(x, t, cond, drop), model(x, t, other, drop)
    assert torch.equal(a[drop], b[drop])  # dropped samples ignore their EEG
    assert not torch.allclose(a[~drop], b[~drop])
    torch.testing.assert_close(a[drop], model(x, t, None)[drop])
    torch.testing.assert_close(model(x, t.float(), cond), model(x, t, cond))
    assert model.null_cond.shape == (D_COND,) and model.null_cond.requires_grad


def test_dit_traces_without_graph_breaks():
    """No host syncs or data-dependent Python control flow: one graph (CUDA-graph capturable)."""
    model = _unzero(_dit()).eval()
    x, t, cond = _inputs(2, 4)
    drop = torch.tensor([True, False])
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(x, t, cond, drop), model(x, t, cond, drop))


def test_dit_default_is_paper_size():
    with torch.device("meta"):
        model = DiT()
    assert sum(p.numel() for p in model.parameters()) == 163_458_560
    paper = DIT_CONFIGS["paper"]
    assert model.blocks[0].attn.num_heads == paper["num_heads"] and len(model.blocks) == paper["depth"]
    assert model.x_embedder.out_features == paper["hidden_size"]


# ----------------------------------------------------------------------------- autoencoder


def _low_rank(B: int, K: int, V: int, rank: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    basis = torch.randn(rank, V, generator=g)
    return torch.randn(B, K, rank, generator=g) @ basis + 0.5  # (B, K, V)


def test_autoencoder_shapes_and_unit_latents():
    torch.manual_seed(0)
    ae = LinearAutoencoder(n_vertices=50, latent_dim=12)
    x = _low_rank(8, 4, 50, rank=20) * 3
    z, x_hat = ae(x)
    assert z.shape == (8, 4, 12) and x_hat.shape == (8, 4, 50)
    flat = z.reshape(-1, 12)
    torch.testing.assert_close(flat.mean(0), torch.zeros(12), atol=1e-5, rtol=0)
    torch.testing.assert_close(flat.var(0, unbiased=False), torch.ones(12), atol=1e-3, rtol=0)


def test_autoencoder_latents_cannot_shrink():
    """The collapse guard: rescaling the encoder does not change the normalised latents."""
    torch.manual_seed(0)
    ae = LinearAutoencoder(n_vertices=50, latent_dim=12)
    x = torch.randn(8, 4, 50)
    z = ae.encode(x)
    with torch.no_grad():
        ae.encoder.weight.mul_(10.0)
    torch.testing.assert_close(ae.encode(x), z, atol=1e-4, rtol=1e-4)
    with torch.no_grad():
        ae.encoder.weight.mul_(1e-2)  # 10x smaller than at init: variance 1e-2 >> BatchNorm's eps
    torch.testing.assert_close(ae.encode(x), z, atol=2e-3, rtol=2e-3)


def test_autoencoder_decode_is_the_same_function_in_both_modes():
    torch.manual_seed(0)
    ae = LinearAutoencoder(n_vertices=30, latent_dim=6)
    ae(torch.randn(16, 30) * 4 + 1)  # moves the running statistics
    z = torch.randn(5, 6)
    x_train = ae.decode(z)
    torch.testing.assert_close(ae.eval().decode(z), x_train)


def test_held_out_variance_finds_the_dims_of_the_signal():
    """Rank-6 signal in isotropic noise, fewer training frames than grayordinates: the PCA start's
    first 6 latent dims keep most of their variance on new frames, the noise axes after them keep a small
    fraction (their in-sample variance is inflated), and the suggested d is 6."""
    g = torch.Generator().manual_seed(0)
    V, rank, d = 2000, 6, 40
    basis = torch.linalg.qr(torch.randn(V, rank, generator=g))[0].T  # (rank, V) orthonormal

    def frames(n):
        return torch.randn(n, rank, generator=g) * 10.0 @ basis + torch.randn(n, V, generator=g)  # (n, V)

    ae = LinearAutoencoder(n_vertices=V, latent_dim=d)
    ae.init_from_data(frames(150))
    ae.eval()
    with torch.no_grad():
        ratio, suggested = held_out_variance(ae.encode(frames(400)))
    assert ratio.shape == (d,)
    assert torch.all((ratio[:rank] > 0.5) & (ratio[:rank] < 1.5)), ratio[:rank]
    assert ratio[rank:].max() < 0.25, ratio[rank:]
    assert suggested == rank
    # every dim generalising: the whole latent is kept
    assert held_out_variance(torch.randn(500, 12, generator=g))[1] == 12


def test_principal_axes_in_blocks_are_svd_lowrank_of_the_centred_frames():
    """The PCA start reads float16 frames a block of columns at a time; it is torch.svd_lowrank of
    the whole centred float32 matrix (same seed and steps) to float rounding, each axis's sign fixed
    (its largest loading positive), and the autoencoder starts from it."""
    g = torch.Generator().manual_seed(0)
    x = (
        torch.randn(120, 8, generator=g) * 5 @ torch.randn(8, 900, generator=g) + torch.randn(120, 900, generator=g)
    ).half()
    mean, s, v = principal_axes(x, 20, seed=3, block=128)  # (V,), (q,), (V, q): 8 blocks, the last partial
    xc = x.float() - x.float().mean(0)
    with torch.random.fork_rng():
        torch.manual_seed(3)
        _, s_ref, v_ref = torch.svd_lowrank(xc, q=20, niter=4)
    torch.testing.assert_close(mean, x.float().mean(0))
    torch.testing.assert_close(s, s_ref, rtol=1e-5, atol=1e-4)
    sign = torch.sign((v * v_ref).sum(0))  # (q,)
    torch.testing.assert_close(v, v_ref * sign, rtol=0, atol=1e-4)
    assert torch.all(v.gather(0, v.abs().argmax(0, keepdim=True)) > 0)
    ae = LinearAutoencoder(n_vertices=900, latent_dim=20)
    ae.init_from_data(x, seed=3, block=128)
    torch.testing.assert_close(ae.encoder.weight, v.T)
    torch.testing.assert_close(ae.norm.running_var, s**2 / 119)


def test_autoencoder_learns_low_rank_reconstruction():
    torch.manual_seed(0)
    V, d = 64, 8
    ae = LinearAutoencoder(n_vertices=V, latent_dim=d)
    x = _low_rank(32, 8, V, rank=4)

    def eval_error() -> float:
        ae.eval()
        with torch.no_grad():
            err = F.mse_loss(ae.decode(ae.encode(x)), x).item()
        ae.train()
        return err

    before = eval_error()
    opt = torch.optim.Adam(ae.parameters(), lr=1e-2)
    for _ in range(200):
        opt.zero_grad()
        F.mse_loss(ae(x)[1], x).backward()
        opt.step()
    after = eval_error()
    assert after < 0.05 * before, (before, after)


# ----------------------------------------------------------------------------- EEG encoder


@pytest.mark.parametrize("K", [3, 10])
def test_eeg_encoder_shapes(K):
    enc = EEGEncoder(n_chans=4, n_times=64, embed_dim=D_COND, n_blocks=2, channels=8, kernel_size=5)
    out = enc(torch.randn(2, K, 4, 64))
    assert out.shape == (2, K, D_COND)
    with pytest.raises(ValueError, match="n_chans x n_times"):
        enc(torch.randn(2, K, 4, 32))


def test_eeg_encoder_is_per_frame():
    torch.manual_seed(0)
    enc = EEGEncoder(n_chans=4, n_times=64, embed_dim=D_COND, n_blocks=3, channels=8).eval()
    eeg = torch.randn(2, 5, 4, 64)
    changed = eeg.clone()
    changed[:, 2] = torch.randn(2, 4, 64)
    a, b = enc(eeg), enc(changed)
    keep = [0, 1, 3, 4]
    torch.testing.assert_close(a[:, keep], b[:, keep], atol=1e-6, rtol=1e-6)
    assert (a[:, 2] - b[:, 2]).abs().max() > 1e-3


def test_eeg_encoder_default_size():
    enc = EEGEncoder()
    assert enc(torch.randn(1, 2, 64, 800)).shape == (1, 2, 512)


# ----------------------------------------------------------------------------- bf16 autocast


def test_bf16_autocast_forward_and_backward():
    torch.manual_seed(0)
    ae = LinearAutoencoder(n_vertices=40, latent_dim=D_LATENT)
    enc = EEGEncoder(n_chans=4, n_times=64, embed_dim=D_COND, n_blocks=2, channels=8)
    dit = _unzero(_dit())
    x, eeg = torch.randn(2, 3, 40), torch.randn(2, 3, 4, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z, x_hat = ae(x)
        tokens = enc(eeg)
        eps = dit(z, torch.tensor([10, 900]), tokens, torch.tensor([False, True]))
        loss = F.mse_loss(eps.float(), torch.randn(2, 3, D_LATENT)) + F.mse_loss(x_hat.float(), x)
    assert z.dtype == torch.float32  # latent statistics in float32
    assert x_hat.shape == x.shape and tokens.shape == (2, 3, D_COND) and eps.shape == (2, 3, D_LATENT)
    loss.backward()
    for module in (ae, enc, dit):
        assert all(torch.isfinite(p.grad).all() for p in module.parameters() if p.grad is not None)
    assert isinstance(ae.norm, nn.BatchNorm1d) and not ae.norm.affine
