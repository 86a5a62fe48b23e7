"""LightningModules: the shared contract of every EEG→fMRI model, and the paper's diffusion model.

Every model (the diffusion model and each baseline) is an :class:`EEGfMRIModule`: it takes the
data facts ``n_vertices``, ``n_chans``, ``n_times``, ``n_frames`` (linked from the DataModule by
the CLI), trains on batches of the DataModule, and answers ``predict_frames(batch, **sampling)``
with (B, K, V) predictions in the cache's z-scored units. Sampling settings (steps, η, guidance)
come from the :class:`~eeg2fmri.callbacks.Evaluator` callback, never from the model's
hyperparameters. The evaluation, InterRecon and CIFTI writing live in callbacks.
"""

from __future__ import annotations

import logging
import os
from typing import Literal

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor

from eeg2fmri import __version__
from eeg2fmri import diffusion as D
from eeg2fmri.errors import EEG2fMRIError
from eeg2fmri.nn.autoencoder import LinearAutoencoder
from eeg2fmri.nn.dit import DiT
from eeg2fmri.nn.eeg_encoder import EEGEncoder

log = logging.getLogger(__name__)


CHECKPOINT_FORMAT = 1  # bump when a checkpoint of the previous format can no longer be loaded


class CheckpointVersionError(EEG2fMRIError):
    """A checkpoint written by an incompatible version of eeg2fmri (or by another program)."""


def check_checkpoint_file(path) -> dict:
    """A clear error for a checkpoint path that is missing or not a readable checkpoint, before
    Lightning or torch meet it; returns the checkpoint (memory-mapped) when it is one."""
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:
        raise CheckpointVersionError(
            f"{path}: not a readable eeg2fmri checkpoint (truncated, corrupt, or another program's file): "
            f"{str(e).splitlines()[0][:200]}"
        ) from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointVersionError(f"{path}: holds no state_dict; expected a checkpoint written by `eeg2fmri fit`")
    return ckpt


class LayoutMismatchError(EEG2fMRIError):
    """A checkpoint applied to data of another grayordinate layout, channel count or window."""


class EEGfMRIModule(pl.LightningModule):
    """Base of every model: data facts, grayordinate bookkeeping, optimizer, layout checks.

    Args:
        n_vertices: V, grayordinates per frame (linked from the data).
        n_chans: EEG channels (linked from the data).
        n_times: EEG samples per frame window (linked from the data; 800 = TR 0.8 s at 1000 Hz).
        n_frames: K, frames per window (linked from the data).
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        optimizer: another optimizer (overrides lr / weight_decay), e.g. ``torch.optim.SGD``.
    """

    def __init__(
        self,
        n_vertices: int = 91_282,
        n_chans: int = 64,
        n_times: int = 800,
        n_frames: int = 10,
        lr: float = 1e-4,
        weight_decay: float = 0.0,
        optimizer: OptimizerCallable | None = None,
    ):
        super().__init__()
        self.n_vertices, self.n_chans, self.n_times, self.n_frames = n_vertices, n_chans, n_times, n_frames
        self.optimizer_fn = optimizer
        # standard (91,282) index of each modelled grayordinate; set from the data at fit time and
        # saved in checkpoints, so predictions map back to the whole brain and a checkpoint cannot be
        # applied to another layout by accident
        self.register_buffer("grayordinates", torch.full((n_vertices,), -1, dtype=torch.long))

    # ------------------------------------------------------------------ data contract
    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is None:
            return
        facts = {"n_vertices": dm.n_vertices, "n_chans": dm.n_chans, "n_times": dm.n_times}
        mine = {k: getattr(self, k) for k in facts}
        if facts != mine:
            raise LayoutMismatchError(
                f"the model expects {mine} but {dm.data_path} gives {facts}; a checkpoint only applies "
                "to data of the layout, channel count and window it was trained on"
            )
        indices = torch.as_tensor(dm.indices, dtype=torch.long)
        if stage == "fit" and int(self.grayordinates[0]) == -1:
            self.grayordinates.copy_(indices)
        elif int(self.grayordinates[0]) != -1 and not torch.equal(self.grayordinates.cpu(), indices):
            raise LayoutMismatchError(
                f"the model was trained on other grayordinates than {dm.data_path} holds (same count "
                f"{dm.n_vertices}, different vertices: region {dm.hparams.region!r} of another layout?)"
            )

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Keep the data's preprocessing with the weights, so a checkpoint alone can process new
        recordings (``eeg2fmri fill``): filter and shift options, EEG scaling, channel names,
        training fMRI statistics of the modelled grayordinates. And the format version."""
        checkpoint["eeg2fmri_format"] = CHECKPOINT_FORMAT
        checkpoint["eeg2fmri_version"] = __version__
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is not None and hasattr(dm, "preprocessing"):
            checkpoint["eeg2fmri_data"] = dm.preprocessing()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        fmt = checkpoint.get("eeg2fmri_format")
        if fmt != CHECKPOINT_FORMAT:
            raise CheckpointVersionError(
                f"checkpoint format {fmt} (written by eeg2fmri {checkpoint.get('eeg2fmri_version', 'unknown')}); "
                f"this eeg2fmri {__version__} reads format {CHECKPOINT_FORMAT}. Retrain, or load it with the "
                "version that wrote it."
            )
        saved = checkpoint.get("state_dict", {}).get("grayordinates")
        hp = checkpoint.get("hyper_parameters", {})
        theirs = {k: hp.get(k) for k in ("n_vertices", "n_chans", "n_times")}
        mine = {k: getattr(self, k) for k in theirs}
        if any(v is not None and v != mine[k] for k, v in theirs.items()) or (
            saved is not None and saved.shape[0] != self.n_vertices
        ):
            raise LayoutMismatchError(
                f"checkpoint was trained on {theirs} but this run's data gives {mine}; use a checkpoint "
                "trained on this grayordinate layout and EEG montage"
            )

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        if self.optimizer_fn is not None:
            return self.optimizer_fn(params)
        fused = self.device.type == "cuda"
        return torch.optim.AdamW(params, lr=self.hparams.lr, betas=(0.9, 0.999), weight_decay=self.hparams.weight_decay, fused=fused)

    # ------------------------------------------------------------------ what callbacks call
    @torch.no_grad()
    def predict_frames(self, batch: dict, **sampling) -> Tensor:
        """(B, K, V) prediction of ``batch["fmri"]`` from ``batch["eeg"]``."""
        raise NotImplementedError

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        sampling = getattr(self, "sampling", {})
        return {"pred": self.predict_frames(batch, **sampling), "frame_index": batch["frame_index"]}


class EEG2fMRIDiffusion(EEGfMRIModule):
    """The paper's model: linear fMRI autoencoder + EEG encoder + DiT, trained with ε-prediction.

    Loss = ‖ε − ε_θ(z_n, n, h_EEG)‖² on the autoencoder's normalised latents z (unit variance per
    dim, see LinearAutoencoder) + ``recon_weight`` · ‖x − D(z)‖². Latent collapse is prevented in
    two ways: the non-affine BatchNorm on z divides out any rescaling of the encoder (shrinking z
    cannot make ε-prediction trivial), and the reconstruction loss forces z to keep the frame's
    content.

    Args:
        n_vertices, n_chans, n_times, n_frames, lr, weight_decay, optimizer: see EEGfMRIModule.
        latent_dim: d, the autoencoder's latent size per frame (paper: 1024; ablation 512/2048).
        eeg_embed_dim: size of one EEG token (paper: 512).
        eeg_blocks: stride-2 convolution blocks of the EEG encoder.
        eeg_channels: feature channels of the EEG encoder's convolutions.
        hidden_size: DiT width (paper: 1024).
        depth: DiT blocks (paper: 6).
        num_heads: attention heads (paper: 8).
        mlp_ratio: DiT MLP width / hidden_size.
        num_train_timesteps: diffusion steps N (paper: 1000).
        beta_start: β_1 of the linear schedule.
        beta_end: β_N of the linear schedule.
        recon_weight: weight of the autoencoder reconstruction loss.
        cond_drop_prob: probability of replacing a window's EEG by the null token in training
            (classifier-free guidance; 0 disables it).
        loss_weighting: ``eps``: the paper's ‖ε − ε_θ‖², uniform over n. ``v``: the same error
            divided by ᾱ_n, i.e. ‖v − v_θ‖² (with ``parameterization="v"``), which weights the
            high-noise steps, where the ε-loss barely depends on the window's content, so the EEG
            conditioning is learned in fewer steps.
        init_pca: start the autoencoder at the PCA of up to ``pca_frames`` training frames
            (LinearAutoencoder.init_from_data) instead of a random projection.
        pca_frames: training frames used for the PCA start.
        parameterization: what the DiT outputs. ``eps``: ε directly (the paper). ``v``: v, from
            which ε = sqrt(1 − ᾱ)·x_n + sqrt(ᾱ)·v (a skip connection; same ε-loss). With ``eps`` a
            briefly trained DiT's ε-error at high noise is amplified 1/sqrt(ᾱ) ≈ 100× into x̂₀
            and DDIM samples drift far off the data (seen on the simulator: latent std 22 for
            unit-variance data after 300 steps); ``v`` keeps x̂₀ bounded (0 at initialisation).
    """

    def __init__(
        self,
        n_vertices: int = 91_282,
        n_chans: int = 64,
        n_times: int = 800,
        n_frames: int = 10,
        latent_dim: int = 1024,
        eeg_embed_dim: int = 512,
        eeg_blocks: int = 4,
        eeg_channels: int = 128,
        hidden_size: int = 1024,
        depth: int = 6,
        num_heads: int = 8,
        mlp_ratio: float = 4.0,
        num_train_timesteps: int = 1000,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        recon_weight: float = 1.0,
        cond_drop_prob: float = 0.1,
        parameterization: Literal["eps", "v"] = "v",
        loss_weighting: Literal["eps", "v"] = "eps",
        init_pca: bool = True,
        pca_frames: int = 4096,
        lr: float = 1e-4,
        weight_decay: float = 0.0,
        optimizer: OptimizerCallable | None = None,
    ):
        super().__init__(n_vertices, n_chans, n_times, n_frames, lr, weight_decay, optimizer)
        self.save_hyperparameters(ignore=["optimizer"])
        self.autoencoder = LinearAutoencoder(n_vertices, latent_dim)
        self.eeg_encoder = EEGEncoder(n_chans, n_times, eeg_embed_dim, eeg_blocks, eeg_channels)
        self.dit = DiT(latent_dim, eeg_embed_dim, n_frames, hidden_size, depth, num_heads, mlp_ratio)
        betas = D.linear_beta_schedule(num_train_timesteps, beta_start, beta_end)
        self.register_buffer("alphas_cumprod", D.alphas_cumprod(betas).float(), persistent=False)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if stage == "fit" and self.hparams.init_pca and dm is not None and getattr(dm, "store", None) is not None:
            # same seeded frames on every rank, so DDP replicas start identical (a resumed run then
            # loads its checkpoint over this start)
            train = np.flatnonzero(dm.split == 0)
            g = np.random.default_rng(0)
            rows = np.sort(g.choice(train, size=min(len(train), self.hparams.pca_frames), replace=False))
            x = dm.store["fmri"][torch.as_tensor(rows, device=dm.store["fmri"].device)]  # (N, V)
            self.autoencoder.init_from_data(x.to(self.trainer.strategy.root_device))  # PCA on the accelerator

    # ------------------------------------------------------------------ training
    def _losses(self, batch: dict, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        x, eeg = batch["fmri"], batch["eeg"]  # (B, K, V), (B, K, C, W)
        B = x.shape[0]
        z, x_hat = self.autoencoder(x)  # (B, K, d), (B, K, V)
        t = torch.randint(0, len(self.alphas_cumprod), (B,), device=x.device, generator=generator)  # (B,)
        noise = torch.randn(z.shape, device=z.device, generator=generator)  # (B, K, d)
        z_t = D.q_sample(z, t, noise, self.alphas_cumprod)  # (B, K, d)
        h = self.eeg_encoder(eeg)  # (B, K, E)
        drop = None
        if self.training and self.hparams.cond_drop_prob > 0:
            drop = torch.rand(B, device=x.device, generator=generator) < self.hparams.cond_drop_prob  # (B,)
        eps = self._eps(z_t, t, h, drop)  # (B, K, d)
        diff = D.diffusion_loss(eps, noise)
        if self.hparams.loss_weighting == "v":
            # |v - v_hat|^2 = |eps - eps_hat|^2 / alpha_bar_t: the same objective re-weighted
            # towards high noise, where the coarse content of a window (what EEG can tell) is decided
            a = self.alphas_cumprod[t].view(B, 1, 1)  # (B, 1, 1)
            diff = (((eps - noise) ** 2) / a).mean()
        recon = F.mse_loss(x_hat.float(), x.float())
        return {"loss": diff + self.hparams.recon_weight * recon, "diffusion": diff, "recon": recon}

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        # the step's randomness (timesteps, noise, condition dropout) is drawn from (seed, step)
        # alone, so a run resumed from a checkpoint continues exactly as an uninterrupted one would
        seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
        g = torch.Generator(device=self.device).manual_seed(seed * 1_000_003 + self.global_step)
        losses = self._losses(batch, generator=g)
        if self._logs_this_step():
            self.log_dict({f"train/{k}": v for k, v in losses.items()}, prog_bar=False, batch_size=batch["fmri"].shape[0])
            self.log("loss", losses["loss"], prog_bar=True, logger=False, batch_size=batch["fmri"].shape[0])
        return losses["loss"]

    def _logs_this_step(self) -> bool:
        """Whether Lightning writes this step's training metrics (every ``log_every_n_steps``).

        Each ``self.log`` call costs host time (Lightning moves its result-metric object to the
        value's device on every call: ~0.15 ms a call on a slow CPU core, bench/NOTES.md), so the
        losses are handed over only on the steps that are written.
        """
        trainer = self._trainer
        connector = getattr(trainer, "_logger_connector", None) if trainer is not None else None
        return True if connector is None else bool(connector.should_update_logs)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        # a fixed generator per batch: the validation loss is comparable across epochs
        g = torch.Generator(device=self.device).manual_seed(batch_idx)
        losses = self._losses(batch, generator=g)
        self.log_dict({f"val/{k}": v for k, v in losses.items()}, sync_dist=True, batch_size=batch["fmri"].shape[0])

    def test_step(self, batch: dict, batch_idx: int) -> None:
        g = torch.Generator(device=self.device).manual_seed(batch_idx)
        losses = self._losses(batch, generator=g)
        self.log_dict({f"test/{k}": v for k, v in losses.items()}, sync_dist=True, batch_size=batch["fmri"].shape[0])

    def _eps(self, x_t: Tensor, t: Tensor, h: Tensor, drop: Tensor | None = None) -> Tensor:
        """ε_θ(x_t, t, h_EEG) (B, K, d) float32, from the DiT's output per ``parameterization``."""
        out = self.dit(x_t, t, h, drop_cond=drop)  # (B, K, d)
        if self.hparams.parameterization == "v":
            return D.eps_from_v(x_t, out, self.alphas_cumprod[t])
        return out.float()

    # ------------------------------------------------------------------ sampling
    def _eps_fn(self, h: Tensor, guidance_scale: float):
        """ε(x_t, t) for the sampler: EEG-conditioned, with classifier-free guidance if scale != 1."""
        if guidance_scale == 1.0:
            return lambda x_t, t: self._eps(x_t, t, h)

        def guided(x_t: Tensor, t: Tensor) -> Tensor:
            B = x_t.shape[0]
            drop = torch.arange(2 * B, device=x_t.device) >= B  # (2B,) second half unconditional
            eps = self._eps(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([h, h]), drop)  # (2B, K, d)
            return D.cfg_eps(eps[:B], eps[B:], guidance_scale)  # (B, K, d)

        return guided

    @torch.no_grad()
    def sample(
        self,
        eeg: Tensor,
        num_inference_steps: int = 50,
        eta: float = 0.0,
        guidance_scale: float = 1.0,
        observed: Tensor | None = None,
        observed_mask: Tensor | None = None,
        null_space: bool = True,
        time_travel: int = 0,
        time_travel_repeat: int = 1,
        seed: int | None = 0,
    ) -> Tensor:
        """DDIM sampling of (B, K, V) frames from EEG (B, K, C, W).

        With ``observed`` (B, K, V) and ``observed_mask`` (B, K): InterRecon. Observed frames are
        encoded (y = E x_obs) and imposed on x̂₀ at every step by the null-space projection; in the
        output they are the observed data exactly. ``null_space=False`` samples without the
        projection and only pastes the observed frames into the output (the "without null space"
        row of the paper's Table 2).
        """
        B, K = eeg.shape[:2]
        h = self.eeg_encoder(eeg)  # (B, K, E)
        g = None if seed is None else torch.Generator(device=eeg.device).manual_seed(seed)
        shape = (B, K, self.hparams.latent_dim)
        eps_fn = self._eps_fn(h, guidance_scale)
        common = dict(num_inference_steps=num_inference_steps, eta=eta, generator=g)
        if observed is not None and null_space:
            y = self.autoencoder.encode(observed)  # (B, K, d)
            z = D.interrecon_sample(
                eps_fn, y, observed_mask, self.alphas_cumprod, time_travel=time_travel,
                time_travel_repeat=time_travel_repeat, **common,
            )  # fmt: skip
        else:
            z = D.ddim_sample(eps_fn, shape, self.alphas_cumprod, device=eeg.device, **common)  # (B, K, d)
        x = self.autoencoder.decode(z).float()  # (B, K, V)
        if observed is not None:
            x = torch.where(observed_mask[..., None], observed.float(), x)  # observed frames exact
        return x

    @torch.no_grad()
    def predict_frames(self, batch: dict, num_samples: int = 1, **sampling) -> Tensor:
        """One DDIM sample per window, or the mean of ``num_samples`` (seeds seed, seed + 1, ...)."""
        if num_samples == 1:
            return self.sample(batch["eeg"], **sampling)
        seed = sampling.pop("seed", 0) or 0
        total = None
        for i in range(num_samples):
            x = self.sample(batch["eeg"], seed=seed + i, **sampling)  # (B, K, V)
            total = x if total is None else total + x
        return total / num_samples
