"""The diffusion model's training losses as plain functions of its networks (no Lightning).

:func:`training_losses` is the one definition of what ``EEG2fMRIDiffusion`` trains: the module's
training, validation and test steps call it with its own networks and hyperparameters, and
``eeg2fmri bench``'s bare-PyTorch reference calls it with networks it built itself, so the two
cannot measure different losses. :func:`encode_eeg` and :func:`denoiser_eps` are its two steps
that the sampler shares (EEG tokens and the regression stage's μ; ε from the DiT's output).

Layering: these compose the plain networks of ``nn/`` with the tensor math of ``diffusion.py``;
``module.py`` (the LightningModule) and the bench import them, nothing here imports Lightning.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from eeg2fmri import diffusion as D
from eeg2fmri import gaussian as G
from eeg2fmri.nn.autoencoder import LinearAutoencoder
from eeg2fmri.nn.dit import DiT
from eeg2fmri.nn.eeg_encoder import BandPowerEncoder, EEGEncoder
from eeg2fmri.nn.regression import FIRHead


def encode_eeg(
    eeg_encoder: BandPowerEncoder | EEGEncoder,
    regression_head: FIRHead | None,
    eeg: Tensor,
    eeg_mask: Tensor | None,
    hp: Mapping[str, Any],
) -> tuple[Tensor, Tensor | None]:
    """EEG windows (B, N, C, W) -> tokens h (B, N, E) and the regression stage's latents μ
    (B, K, d), or None without a regression stage. N = P + K + F.

    ``hp["eeg_features"]``: ``bandpower`` (``eeg_encoder`` is a BandPowerEncoder: features, then
    tokens) or ``conv`` (an EEGEncoder, whose tokens are also the regression stage's features).
    """
    if eeg_mask is None:
        eeg_mask = torch.ones(eeg.shape[:2], dtype=torch.bool, device=eeg.device)  # (B, N)
    if hp["eeg_features"] == "bandpower":
        features = eeg_encoder.features(eeg, eeg_mask)  # (B, N, Fe)
        h = eeg_encoder.tokens(features)  # (B, N, E)
    else:
        h = features = eeg_encoder(eeg)  # (B, N, E)
    mu = None if regression_head is None else regression_head(features.float(), eeg_mask)  # (B, K, d)
    return h, mu


def denoiser_eps(
    dit: DiT,
    alphas_cumprod: Tensor,
    x_t: Tensor,
    t: Tensor,
    h: Tensor | None,
    drop: Tensor | None,
    eeg_mask: Tensor | None,
    mu: Tensor | None,
    hp: Mapping[str, Any],
    gauss: tuple[Tensor, Tensor] | None = None,
) -> Tensor:
    """ε_θ(x_t, t, h_EEG[, μ]) (B, K, d) float32, from the DiT's output per
    ``hp["parameterization"]`` (``eps``: the output itself; ``v``: ε from v,
    :func:`~eeg2fmri.diffusion.eps_from_v`); ``hp["cond_drop_prob"] >= 1``: an unconditional DiT.

    ``gauss`` (mean (d,), autocovariance (d, L)): the DiT's output is added to that of the exact
    denoiser of the stationary Gaussian model (:func:`eeg2fmri.gaussian.denoise`), in the same
    parameterization, so the network learns a correction to it (at its zero initialisation the
    prior is that Gaussian model: EEG2fMRIDiffusion's ``gaussian_prior``)."""
    mu = mu if dit.latent_cond_embedder is not None else None
    if hp["cond_drop_prob"] >= 1.0:
        h = None  # an unconditional prior saw only the null token in training: sample with it too
    out = dit(x_t, t, h, drop_cond=drop, cond_mask=eeg_mask, x_cond=mu)  # (B, K, d)
    if gauss is not None:
        a = alphas_cumprod[t].double().view(-1, 1, 1)  # (B, 1, 1)
        x0 = G.denoise(x_t, a.flatten(), *gauss)  # (B, K, d) float64
        eps = (x_t.double() - a.sqrt() * x0) / (1.0 - a).sqrt()  # (B, K, d) its ε
        skip = eps if hp["parameterization"] == "eps" else a.sqrt() * eps - (1.0 - a).sqrt() * x0  # its ε or v
        out = out.float() + skip.float()  # (B, K, d)
    if hp["parameterization"] == "v":
        return D.eps_from_v(x_t, out, alphas_cumprod[t])
    return out.float()


def training_losses(
    autoencoder: LinearAutoencoder,
    eeg_encoder: BandPowerEncoder | EEGEncoder,
    dit: DiT,
    regression_head: FIRHead | None,
    alphas_cumprod: Tensor,
    batch: dict,
    hp: Mapping[str, Any],
    *,
    training: bool = True,
    generator: torch.Generator | None = None,
    stats: dict | None = None,
    gauss: tuple[Tensor, Tensor] | None = None,
) -> dict[str, Tensor]:
    """The losses of one batch: ``loss`` (what the optimizer minimises) and its parts ``diffusion``,
    ``recon`` and, with a regression stage, ``regression`` (EEG2fMRIDiffusion's docstring).

    Args:
        autoencoder, eeg_encoder, dit, regression_head: the model's networks (``regression_head``
            None: no regression stage; the DiT then diffuses z itself, not z − μ).
        alphas_cumprod: (N,) ᾱ of the training schedule.
        batch: ``fmri`` (B, K, V), ``eeg`` (B, N, C, W) and optionally ``eeg_mask`` (B, N).
        hp: EEG2fMRIDiffusion's hyperparameters; reads ``eeg_features``, ``cond_drop_prob``,
            ``parameterization``, ``loss_weighting``, ``recon_weight`` and ``regression_weight``.
        training: draw the classifier-free guidance dropout of the EEG condition.
        generator: the random draws, in this order: timesteps, noise, condition dropout.
        stats: if given, receives ``target_absmax`` (d,), the largest |value| per latent dim of what
            the DiT generates in this batch (the sampler's x̂₀ bound, EEG2fMRIDiffusion.x0_bound).
        gauss: the Gaussian model the DiT corrects (:func:`denoiser_eps`), or None.
    """
    x, eeg, eeg_mask = batch["fmri"], batch["eeg"], batch.get("eeg_mask")  # (B, K, V), (B, N, C, W), (B, N)
    B = x.shape[0]
    z, x_hat = autoencoder(x)  # (B, K, d), (B, K, V)
    t = torch.randint(0, len(alphas_cumprod), (B,), device=x.device, generator=generator)  # (B,)
    noise = torch.randn(z.shape, device=z.device, generator=generator)  # (B, K, d)
    h, mu = encode_eeg(eeg_encoder, regression_head, eeg, eeg_mask, hp)  # (B, N, E), (B, K, d) or None
    target = z if mu is None else z - mu.detach()  # what the DiT generates: z, or the residual
    if stats is not None:
        stats["target_absmax"] = target.detach().abs().amax(dim=(0, 1)).float()  # (d,)
    z_t = D.q_sample(target, t, noise, alphas_cumprod)  # (B, K, d)
    drop = None
    if training and hp["cond_drop_prob"] > 0:
        drop = torch.rand(B, device=x.device, generator=generator) < hp["cond_drop_prob"]  # (B,)
    mu_cond = None if mu is None else mu.detach()  # μ as the DiT's condition: no gradient through it
    eps = denoiser_eps(dit, alphas_cumprod, z_t, t, h, drop, eeg_mask, mu_cond, hp, gauss)  # (B, K, d)
    if hp["loss_weighting"] == "v":
        # |v - v_hat|^2 = |eps - eps_hat|^2 / alpha_bar_t: the same objective re-weighted
        # towards high noise, where the coarse content of a window (what EEG can tell) is decided
        a = alphas_cumprod[t].view(B, 1, 1)  # (B, 1, 1)
        diff = (((eps - noise) ** 2) / a).mean()
    else:
        diff = D.diffusion_loss(eps, noise)
    recon = F.mse_loss(x_hat.float(), x.float())
    losses = {"diffusion": diff, "recon": recon}
    loss = diff + hp["recon_weight"] * recon
    if mu is not None:
        dec = autoencoder.decoder
        x_mu = F.linear(mu, dec.weight.detach(), dec.bias.detach())  # (B, K, V) D(μ), D held fixed
        losses["regression"] = F.mse_loss(x_mu.float(), x.float())
        loss = loss + hp["regression_weight"] * losses["regression"]
    return {"loss": loss, **losses}
