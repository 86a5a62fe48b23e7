"""The network baselines, each predicting a frame from that frame's EEG window alone (K is folded
into the batch): CNN-TC, CNN-TAG, E2fNet and E2fGAN. Their networks are plain modules in
``eeg2fmri.nn.baselines``; this file wires losses, steps and optimizers.

- :class:`CNNTC` (Liu & Sajda 2019), :class:`CNNTAG` (Calhas & Henriques 2022): MSE.
- :class:`E2fNet`, :class:`E2fGAN` (Roos et al. 2025): 0.5 (1 - spatial r) + 0.5 MSE, and for the GAN
  a five-layer convolutional discriminator with a BCE-with-logits adversarial loss.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor

from eeg2fmri.module import EEGfMRIModule
from eeg2fmri.nn.baselines.cnn_tag import CNNTAGNet
from eeg2fmri.nn.baselines.cnn_tc import CNNTCNet
from eeg2fmri.nn.baselines.e2fnet import E2fNetGenerator, FrameDiscriminator

# ---------------------------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------------------------


def spatial_correlation(pred: Tensor, target: Tensor, eps: float = 1e-8) -> Tensor:
    """Pearson r across grayordinates of each frame: (..., V), (..., V) -> (...). Differentiable."""
    p = pred - pred.mean(dim=-1, keepdim=True)
    t = target - target.mean(dim=-1, keepdim=True)
    return (p * t).sum(-1) / (p.norm(dim=-1) * t.norm(dim=-1) + eps)


def r_mse_loss(pred: Tensor, target: Tensor, r_weight: float = 0.5, mse_weight: float = 0.5) -> Tensor:
    """E2fNet's reconstruction loss on grayordinate frames: r_weight (1 - r_spatial) + mse_weight MSE.

    The original is 0.5 (1 - SSIM) + 0.5 MSE on volumes scaled to [0, 1]. SSIM multiplies a
    luminance, a contrast and a structure term computed in local image windows; frames on the
    cortical surface have no image grid, and in z-scored units luminance and contrast are what MSE
    already measures. What remains of SSIM is its structure term, a correlation between prediction
    and truth; the spatial Pearson r over the region's grayordinates is that term taken over the
    whole frame, and it is the spatial metric the tables report.
    """
    pred, target = pred.float(), target.float()
    r = spatial_correlation(pred, target).mean()
    return r_weight * (1.0 - r) + mse_weight * F.mse_loss(pred, target)


def _warmup_cosine(step: int, warmup: int, total: int) -> float:
    """LR factor: linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


# ---------------------------------------------------------------------------------------------
# Frame-wise regression networks (CNN-TC, CNN-TAG, E2fNet)
# ---------------------------------------------------------------------------------------------


class FramewiseRegression(EEGfMRIModule):
    """Shared steps of the network baselines: ``self.net`` maps one EEG window (N, C, W) to one
    frame (N, V); K is folded into N, so frames never see each other. Subclasses build ``net``."""

    net: torch.nn.Module

    def forward(self, eeg: Tensor) -> Tensor:
        eeg = self.frame_eeg(eeg)  # (B, K, C, W): each frame's own window (context is not used)
        B, K, C, W = eeg.shape
        if (C, W) != (self.n_chans, self.n_times):
            raise ValueError(
                f"EEG windows have {C} channels x {W} samples; {type(self).__name__} was built for "
                f"{self.n_chans} x {self.n_times} (n_chans x n_times)"
            )
        return self.net(eeg.reshape(B * K, C, W)).reshape(B, K, -1)  # (B, K, V)

    def loss_fn(self, pred: Tensor, target: Tensor) -> Tensor:
        return F.mse_loss(pred.float(), target.float())

    def _shared_step(self, batch: dict, stage: str) -> Tensor:
        loss = self.loss_fn(self(batch["eeg"]), batch["fmri"])
        self.log(f"{stage}/loss", loss, sync_dist=stage != "train", batch_size=batch["fmri"].shape[0])
        return loss

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        loss = self._shared_step(batch, "train")
        self.log("loss", loss, prog_bar=True, logger=False, batch_size=batch["fmri"].shape[0])
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._shared_step(batch, "test")

    @torch.no_grad()
    def predict_frames(self, batch: dict, **sampling) -> Tensor:
        return self(batch["eeg"]).float()  # (B, K, V); sampling settings do not apply


class CNNTC(FramewiseRegression):
    """CNN-TC (Liu & Sajda 2019): temporal Conv1d encoder -> latent -> transposed Conv3d decoder.

    Adapted: one frame per TR window (n_chans x n_times) instead of a volume time series; the
    transposed convolutions emit a ``grid``³ volume that a linear head maps to the V grayordinates
    (their decoder emits the scanner's voxel grid); loss MSE. See ``eeg2fmri.nn.baselines.cnn_tc``.

    Args:
        n_vertices, n_chans, n_times, n_frames, lr, weight_decay, optimizer: see EEGfMRIModule.
        channels: feature maps of the temporal convolutions.
        n_blocks: stride-2 temporal convolution blocks.
        kernel_size: temporal kernel size (odd).
        latent_dim: the latent between encoder and decoder.
        decoder_channels: feature maps of the decoder's 2³ seed volume (halved per upsampling).
        grid: side of the decoded volume (power of two); grid³ values feed the linear head.
    """

    def __init__(
        self,
        n_vertices: int = 91_282,
        n_chans: int = 64,
        n_times: int = 800,
        n_frames: int = 10,
        eeg_context: tuple[int, int] = (0, 0),
        channels: int = 64,
        n_blocks: int = 5,
        kernel_size: int = 7,
        latent_dim: int = 256,
        decoder_channels: int = 64,
        grid: int = 8,
        lr: float = 1e-4,
        weight_decay: float = 0.0,
        optimizer: OptimizerCallable | None = None,
    ):
        super().__init__(n_vertices, n_chans, n_times, n_frames, lr, weight_decay, optimizer, eeg_context=eeg_context)
        self.save_hyperparameters(ignore=["optimizer"])
        self.net = CNNTCNet(
            n_vertices, n_chans, n_times, channels, n_blocks, kernel_size, latent_dim, decoder_channels, grid
        )


class CNNTAG(FramewiseRegression):
    """CNN-TAG (Calhas & Henriques 2022): STFT -> topographical attention across electrodes ->
    residual Conv3d encoder -> random Fourier features x attention-graph style -> the frame.

    Adapted: the STFT covers one TR window (segments inside it) instead of 10 TRs of context;
    their decoder's dense / inverse-DCT map to the voxel volume becomes a linear head to the V
    grayordinates; trained with MSE on the frame (the original adds an L1 term and a cosine
    alignment with an fMRI autoencoder's latent, which has no counterpart here). See
    ``eeg2fmri.nn.baselines.cnn_tag``.

    Args:
        n_vertices, n_chans, n_times, n_frames, lr, weight_decay, optimizer: see EEGfMRIModule.
        sfreq: EEG sampling rate (Hz) of the prepared data.
        segment_s: STFT segment length (s).
        hop_s: STFT hop (s).
        fmax: highest STFT frequency kept (Hz).
        channels: feature maps of the residual Conv3d blocks.
        n_blocks: residual blocks (each halves the electrode and frequency axes).
        latent_dim: latent / Fourier-feature size feeding the linear head.
    """

    def __init__(
        self,
        n_vertices: int = 91_282,
        n_chans: int = 64,
        n_times: int = 800,
        n_frames: int = 10,
        eeg_context: tuple[int, int] = (0, 0),
        sfreq: float = 1000.0,
        segment_s: float = 0.4,
        hop_s: float = 0.1,
        fmax: float = 75.0,
        channels: int = 32,
        n_blocks: int = 3,
        latent_dim: int = 512,
        lr: float = 1e-4,
        weight_decay: float = 0.0,
        optimizer: OptimizerCallable | None = None,
    ):
        super().__init__(n_vertices, n_chans, n_times, n_frames, lr, weight_decay, optimizer, eeg_context=eeg_context)
        self.save_hyperparameters(ignore=["optimizer"])
        self.net = CNNTAGNet(
            n_vertices, n_chans, n_times, sfreq, segment_s, hop_s, fmax, channels, n_blocks, latent_dim
        )


class E2fNet(FramewiseRegression):
    """E2fNet (Roos et al. 2025): EEG spectrogram -> (1 x 5) frequency-strided Conv2d encoder ->
    two-level U-Net -> Conv2d decoder -> the frame.

    Adapted: one TR window (STFT segments as the time bins) instead of 20 TRs; the decoder's
    sigmoid volume becomes one map and a linear head to the V z-scored grayordinates; the loss
    0.5 (1 - SSIM) + 0.5 MSE becomes 0.5 (1 - spatial r) + 0.5 MSE (see :func:`r_mse_loss`).
    Training recipe of the original: AdamW (lr 1e-3, weight decay 0.01), linear warm-up then
    cosine decay of the learning rate per step, gradient norm clipped at 1 (the config sets
    ``trainer.gradient_clip_val``). See ``eeg2fmri.nn.baselines.e2fnet``.

    Args:
        n_vertices, n_chans, n_times, n_frames, lr, weight_decay, optimizer: see EEGfMRIModule.
        sfreq: EEG sampling rate (Hz) of the prepared data.
        segment_s: STFT segment length (s).
        hop_s: STFT hop (s).
        fmax: highest STFT frequency kept (Hz).
        unet_channels: channels of the U-Net (original: 256).
        base_channels: b, encoder convs b -> 2b -> 4b and decoder convs 4b -> 2b -> b (original: 32).
        r_weight: weight of (1 - spatial r) in the loss.
        mse_weight: weight of the MSE in the loss.
        warmup_steps: linear learning-rate warm-up steps before the cosine decay (0: no warm-up).
        cosine_schedule: decay the learning rate to 0 over the run (cosine), per step.
    """

    def __init__(
        self,
        n_vertices: int = 91_282,
        n_chans: int = 64,
        n_times: int = 800,
        n_frames: int = 10,
        eeg_context: tuple[int, int] = (0, 0),
        sfreq: float = 1000.0,
        segment_s: float = 0.4,
        hop_s: float = 0.1,
        fmax: float = 75.0,
        unet_channels: int = 128,
        base_channels: int = 32,
        r_weight: float = 0.5,
        mse_weight: float = 0.5,
        warmup_steps: int = 50,
        cosine_schedule: bool = True,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        optimizer: OptimizerCallable | None = None,
    ):
        super().__init__(n_vertices, n_chans, n_times, n_frames, lr, weight_decay, optimizer, eeg_context=eeg_context)
        self.save_hyperparameters(ignore=["optimizer"])
        self.net = E2fNetGenerator(
            n_vertices, n_chans, n_times, sfreq, segment_s, hop_s, fmax, unet_channels, base_channels
        )

    def loss_fn(self, pred: Tensor, target: Tensor) -> Tensor:
        return r_mse_loss(pred, target, self.hparams.r_weight, self.hparams.mse_weight)

    def _make_optimizer(self, params: list) -> torch.optim.Optimizer:
        if self.optimizer_fn is not None:
            return self.optimizer_fn(params)
        hp = self.hparams
        fused = self.device.type == "cuda"
        return torch.optim.AdamW(params, lr=hp.lr, betas=(0.9, 0.999), weight_decay=hp.weight_decay, fused=fused)

    def _schedule(self, opt: torch.optim.Optimizer) -> dict | None:
        hp = self.hparams
        if not hp.cosine_schedule and hp.warmup_steps <= 0:
            return None
        total = self.trainer.estimated_stepping_batches
        total = int(total) if math.isfinite(total) else 0  # unbounded run: warm-up only
        warmup, cosine = max(0, hp.warmup_steps), hp.cosine_schedule and total > 0

        def factor(step: int) -> float:
            if cosine:
                return _warmup_cosine(step, warmup, total)
            return min(1.0, (step + 1) / warmup) if warmup else 1.0

        return {"scheduler": torch.optim.lr_scheduler.LambdaLR(opt, factor), "interval": "step"}

    def configure_optimizers(self):
        opt = self._make_optimizer([p for p in self.parameters() if p.requires_grad])
        sched = self._schedule(opt)
        return opt if sched is None else {"optimizer": opt, "lr_scheduler": sched}


class E2fGAN(E2fNet):
    """E2fGAN (Roos et al. 2025): the E2fNet generator trained against a convolutional discriminator.

    Per batch, as the original's loop: the discriminator steps on BCE-with-logits of real frames
    (label 1) and detached generated frames (label 0), averaged; then the generator steps on the
    adversarial BCE (generated labelled real) plus ``lambda_rec`` times the reconstruction loss
    0.5 (1 - spatial r) + 0.5 MSE. Both use AdamW with warm-up + cosine schedules and gradient
    norms clipped at ``gradient_clip``. Manual optimisation: with two optimizers the Trainer's
    ``global_step`` counts two steps per batch. ``val/loss`` and ``test/loss`` are the generator's
    reconstruction loss, comparable with E2fNet.

    Adapted: the discriminator sees a frame through a linear map of the V grayordinates to a
    ``disc_grid`` x ``disc_grid`` image (theirs sees volume slices), then their five strided
    convolutions. The generator's adaptations are E2fNet's.

    Args:
        n_vertices, n_chans, n_times, n_frames, lr, weight_decay, optimizer: see EEGfMRIModule
            (lr / weight_decay / optimizer apply to both networks).
        sfreq, segment_s, hop_s, fmax, unet_channels, base_channels, r_weight, mse_weight, warmup_steps,
            cosine_schedule: see E2fNet.
        disc_grid: side of the discriminator's input image (multiple of 16).
        lambda_rec: weight of the reconstruction loss in the generator loss (original: 1).
        gradient_clip: max gradient norm of each network per step (0: no clipping).
    """

    def __init__(
        self,
        n_vertices: int = 91_282,
        n_chans: int = 64,
        n_times: int = 800,
        n_frames: int = 10,
        eeg_context: tuple[int, int] = (0, 0),
        sfreq: float = 1000.0,
        segment_s: float = 0.4,
        hop_s: float = 0.1,
        fmax: float = 75.0,
        unet_channels: int = 128,
        base_channels: int = 32,
        r_weight: float = 0.5,
        mse_weight: float = 0.5,
        warmup_steps: int = 50,
        cosine_schedule: bool = True,
        disc_grid: int = 16,
        lambda_rec: float = 1.0,
        gradient_clip: float = 1.0,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        optimizer: OptimizerCallable | None = None,
    ):
        super().__init__(
            n_vertices,
            n_chans,
            n_times,
            n_frames,
            eeg_context,
            sfreq,
            segment_s,
            hop_s,
            fmax,
            unet_channels,
            base_channels,
            r_weight,
            mse_weight,
            warmup_steps,
            cosine_schedule,
            lr,
            weight_decay,
            optimizer,
        )
        self.save_hyperparameters(ignore=["optimizer"])
        self.automatic_optimization = False
        self.discriminator = FrameDiscriminator(n_vertices, disc_grid)

    def configure_optimizers(self):
        gen = [p for n, p in self.named_parameters() if not n.startswith("discriminator.") and p.requires_grad]
        opts = [self._make_optimizer(gen), self._make_optimizer(list(self.discriminator.parameters()))]
        scheds = [s for s in (self._schedule(o) for o in opts) if s is not None]
        return (opts, scheds) if scheds else opts

    def _gan_loss(self, logits: Tensor, real: bool) -> Tensor:
        target = torch.full_like(logits, 1.0 if real else 0.0)
        return F.binary_cross_entropy_with_logits(logits.float(), target)

    def _clip_and_step(self, opt, loss: Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        if self.hparams.gradient_clip > 0:
            self.clip_gradients(opt, gradient_clip_val=self.hparams.gradient_clip, gradient_clip_algorithm="norm")
        opt.step()

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        opt_g, opt_d = self.optimizers()
        B = batch["fmri"].shape[0]
        real = batch["fmri"].flatten(0, 1)  # (B*K, V)
        fake = self(batch["eeg"]).flatten(0, 1)  # (B*K, V)
        # 1. discriminator: real frames -> 1, generated frames -> 0
        d_real, d_fake = self.discriminator(real), self.discriminator(fake.detach())  # (B*K,), (B*K,)
        loss_d = 0.5 * (self._gan_loss(d_real, True) + self._gan_loss(d_fake, False))
        self._clip_and_step(opt_d, loss_d)
        # 2. generator: fool the discriminator + reconstruct the frame
        rec = self.loss_fn(fake, real)
        adv = self._gan_loss(self.discriminator(fake), True)
        loss_g = adv + self.hparams.lambda_rec * rec
        self._clip_and_step(opt_g, loss_g)
        scheds = self.lr_schedulers() or []
        for sched in scheds if isinstance(scheds, list) else [scheds]:
            sched.step()
        self.log_dict(
            {"train/loss": rec, "train/loss_g": loss_g, "train/loss_d": loss_d, "train/adv": adv}, batch_size=B
        )
        self.log("loss", loss_g, prog_bar=True, logger=False, batch_size=B)
        return loss_g.detach()
