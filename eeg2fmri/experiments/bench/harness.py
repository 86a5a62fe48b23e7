"""What is timed: the bare-PyTorch reference step, the project's Lightning step (and its EMA update),
the autoencoder's bf16 error, and the DDIM sampler.

The reference and the Lightning step train the same loss: both call
:func:`eeg2fmri.losses.training_losses`, the reference with networks it builds itself.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor
from torch.optim.swa_utils import AveragedModel, get_ema_avg_fn

from eeg2fmri import diffusion as D
from eeg2fmri.callbacks import Compile, FiniteLossGuard
from eeg2fmri.data.datamodule import EEGfMRIDataModule, gather
from eeg2fmri.ema import EMA
from eeg2fmri.experiments.bench.device import Marks, autocast, median_time_s, peak_bytes, reset_peak, sync
from eeg2fmri.experiments.bench.scales import SAMPLER_MAX_WINDOWS, SAMPLER_REPEATS, SAMPLER_STEPS, CompileMode
from eeg2fmri.losses import training_losses
from eeg2fmri.module import EEG2fMRIDiffusion
from eeg2fmri.nn.autoencoder import LinearAutoencoder
from eeg2fmri.nn.dit import DiT
from eeg2fmri.nn.eeg_encoder import EEGEncoder

# ---------------------------------------------------------------------------------------------
# Reference: the same nn modules in a hand-written loop
# ---------------------------------------------------------------------------------------------


def _compile_modules(ae, enc, dit, mode: CompileMode) -> None:
    """torch.compile in place (state-dict keys unchanged); reduce-overhead (CUDA graphs) on the DiT
    only, where the launch overhead is (DESIGN §6), the default mode elsewhere."""
    if mode == "none":
        return
    ae.compile()
    enc.compile()
    dit.compile(mode=mode)


def reference_networks(
    hp: dict, V: int, K: int, device: torch.device
) -> tuple[LinearAutoencoder, EEGEncoder, DiT, Tensor]:
    """The reference's networks and ᾱ schedule, built under seed 0 in the order EEG2fMRIDiffusion
    builds them: the module's initial weights (bench() builds the module under seed 0 too).

    The paper's architecture only (PAPER_ARCHITECTURE: the convolutional EEG encoder, no
    regression stage), which every scale of the bench trains.
    """
    if hp["eeg_features"] != "conv" or hp["regression"]:
        raise ValueError(
            f"the bare reference builds the paper's architecture (eeg_features='conv', regression=False); "
            f"got eeg_features={hp['eeg_features']!r}, regression={hp['regression']}"
        )
    torch.manual_seed(0)
    ae = LinearAutoencoder(V, hp["latent_dim"]).to(device)
    enc = EEGEncoder(hp["n_chans"], hp["n_times"], hp["eeg_embed_dim"], hp["eeg_blocks"], hp["eeg_channels"]).to(device)
    dit = DiT(
        hp["latent_dim"], hp["eeg_embed_dim"], K, hp["hidden_size"], hp["depth"], hp["num_heads"], hp["mlp_ratio"]
    )
    dit = dit.to(device)
    betas = D.linear_beta_schedule(hp["num_train_timesteps"], hp["beta_start"], hp["beta_end"])
    return ae, enc, dit, D.alphas_cumprod(betas).float().to(device)


def bench_reference(
    hp: dict,
    V: int,
    store: dict,
    train_starts: np.ndarray,
    K: int,
    B: int,
    steps: int,
    warmup: int,
    device: torch.device,
    compile: CompileMode,
) -> dict:
    """``warmup`` + ``steps`` training steps of the module's networks (:func:`reference_networks`)
    without Lightning: random windows gathered on the device from the resident ``store``, the
    module's loss (:func:`training_losses`, as ``hp`` sets it) under bf16 autocast, fused AdamW
    (CUDA). Returns the median and mean ms per timed step, peak memory, the parameter count and the
    last loss."""
    ae, enc, dit, ac = reference_networks(hp, V, K, device)
    params = [p for m in (ae, enc, dit) for p in m.parameters()]
    cuda = device.type == "cuda"
    opt = torch.optim.AdamW(params, lr=hp["lr"], weight_decay=hp["weight_decay"], fused=cuda)
    _compile_modules(ae, enc, dit, compile)
    store = {k: v.to(device) for k, v in store.items()}  # resident, 16 bit as in the cache
    starts = torch.as_tensor(train_starts, device=device)
    marks = Marks(device)
    reset_peak(device)
    t0 = None
    for i in range(warmup + steps):
        if i == warmup:
            sync(device)
            t0 = time.perf_counter()
        if compile == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()
        marks.mark()
        pick = torch.randint(len(starts), (B,), device=device)  # (B,) random windows, drawn on the device
        batch = gather(store, starts[pick], K)
        with autocast(device):
            loss = training_losses(ae, enc, dit, None, ac, batch, hp)["loss"]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    marks.mark()
    sync(device)
    wall = time.perf_counter() - t0
    timed = marks.intervals_ms()[warmup:]
    n_params = sum(p.numel() for p in params)
    return {
        "ms_per_step": statistics.median(timed),
        "ms_per_step_mean": wall / steps * 1e3,
        "steps": steps,
        "peak_memory_bytes": peak_bytes(device),
        "n_params": n_params,
        "final_loss": float(loss.detach()),
    }


# ---------------------------------------------------------------------------------------------
# The project's own step: Trainer.fit on the LightningModule and DataModule
# ---------------------------------------------------------------------------------------------


class StepTimer(Callback):
    """Marks every batch start and the end of the last step; the first ``warmup`` intervals are dropped.

    An interval between two batch starts is one whole loop iteration: fetch, transfer, the GPU
    gather, forward, backward, optimizer and every callback. The timed window also gets one host
    sync at each end (the mean); the per-step marks are CUDA events, so no step waits for the GPU.
    """

    def __init__(self, warmup: int, steps: int):
        self.warmup, self.steps = warmup, steps
        self.marks: Marks | None = None
        self.t0 = self.wall = None

    def on_train_start(self, trainer, pl_module) -> None:
        self.marks = Marks(pl_module.device)
        reset_peak(pl_module.device)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if len(self.marks.marks) == self.warmup:
            sync(pl_module.device)
            self.t0 = time.perf_counter()
        self.marks.mark()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if len(self.marks.marks) == self.warmup + self.steps:  # the last step ends
            self.marks.mark()
            sync(pl_module.device)
            self.wall = time.perf_counter() - self.t0
            self.peak = peak_bytes(pl_module.device)

    def result(self) -> dict:
        timed = self.marks.intervals_ms()[self.warmup :]
        return {
            "ms_per_step": statistics.median(timed),
            "ms_per_step_mean": self.wall / self.steps * 1e3,
            "steps": self.steps,
            "peak_memory_bytes": self.peak,
        }


def bench_lightning(
    model: EEG2fMRIDiffusion,
    dm: EEGfMRIDataModule,
    steps: int,
    warmup: int,
    device: torch.device,
    compile: CompileMode,
    root: Path,
) -> tuple[dict, EMA, str]:
    """``Trainer.fit`` of ``model`` on ``dm``, ``warmup`` + ``steps`` steps, with the callbacks
    ``eeg2fmri fit`` always has (EMA, FiniteLossGuard; Compile when asked), timed by
    :class:`StepTimer`. Returns the timer's result, the EMA callback and where its average lives."""
    cuda = device.type == "cuda"
    timer, ema = StepTimer(warmup, steps), EMA()
    callbacks = [ema, FiniteLossGuard()] + ([Compile(compile)] if compile != "none" else []) + [timer]
    trainer = pl.Trainer(
        accelerator="gpu" if cuda else "cpu",
        devices=[device.index] if cuda else 1,
        precision="bf16-mixed" if cuda else "32-true",  # as the CLI's trainer defaults
        max_steps=warmup + steps,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
        default_root_dir=str(root),
    )
    trainer.fit(model, datamodule=dm)
    return timer.result(), ema, average_device(ema, trainer, model)


def average_device(ema: EMA, trainer: pl.Trainer, model: EEG2fMRIDiffusion) -> str:
    """Where the EMA callback keeps its average: the device of the weights it writes into a
    checkpoint (``WeightAveraging.on_save_checkpoint`` puts the average's state there)."""
    checkpoint: dict = {"state_dict": {}}
    ema.on_save_checkpoint(trainer, model, checkpoint)
    return str(next(iter(checkpoint["state_dict"].values())).device)


def bench_ema(ema: EMA, model: EEG2fMRIDiffusion, device: torch.device) -> tuple[float, float]:
    """Milliseconds of one EMA update of the whole module (part of every Lightning step): as the
    callback makes it (an AveragedModel with its fused ``multi_avg_fn``), and for comparison with a
    per-tensor average (``avg_fn``: Lightning's EMAWeightAveraging) at the same decay."""
    fused = AveragedModel(model, device, use_buffers=True, multi_avg_fn=ema.multi_avg_fn)
    stock = AveragedModel(model, device, use_buffers=True, avg_fn=get_ema_avg_fn(ema.decay))
    for avg in (fused, stock):
        avg.update_parameters(model)  # the first update copies
    fused_ms = median_time_s(lambda: fused.update_parameters(model), device, 10) * 1e3
    stock_ms = median_time_s(lambda: stock.update_parameters(model), device, 10) * 1e3
    return fused_ms, stock_ms


@torch.no_grad()
def ae_precision(ae: LinearAutoencoder, x: Tensor) -> dict:
    """How far the autoencoder's bf16 matmuls (autocast, as in training) move it from float32.

    ``x`` (N, V) frames. Returns the relative errors ||bf16 - fp32|| / ||fp32|| of the latents and
    of the reconstruction (float32 with TF32 off as the reference), and, for scale, the float32
    reconstruction's own relative error ||x_hat - x|| / ||x||.
    """
    was_training, tf32 = ae.training, torch.backends.cuda.matmul.allow_tf32
    ae.eval()  # running statistics, and no update of them
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        x = x.float()  # (N, V)
        z32, x32 = ae(x)  # (N, d), (N, V)
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            z16, x16 = ae(x)  # (N, d), (N, V)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
        ae.train(was_training)

    def rel(a: Tensor, b: Tensor) -> float:
        return float(torch.linalg.vector_norm(a.float() - b.float()) / torch.linalg.vector_norm(b.float()))

    return {
        "frames": x.shape[0],
        "latent_rel_err": rel(z16, z32),
        "recon_rel_err": rel(x16, x32),
        "recon_vs_data_rel_err": rel(x32, x),
    }


# ---------------------------------------------------------------------------------------------
# Sampler
# ---------------------------------------------------------------------------------------------


def gather_test_eeg(dm: EEGfMRIDataModule, device: torch.device) -> torch.Tensor:
    """(n, K, C, W) EEG of every test window, gathered where the data lives, on ``device``."""
    starts = torch.as_tensor(dm.windows["test"], device=dm.store["eeg"].device)  # (n,)
    return gather(dm.store, starts, dm.n_frames)["eeg"].to(device)  # (n, K, C, W)


def bench_sampler(model: EEG2fMRIDiffusion, eeg: torch.Tensor, device: torch.device, compile: CompileMode) -> dict:
    """DDIM-50 over the windows of ``eeg`` (n, K, C, W) with ``model.sample``; frames per second."""
    model.to(device).eval()
    K = eeg.shape[1]

    def run():
        if compile == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()
        with autocast(device):
            for s in range(0, len(eeg), SAMPLER_MAX_WINDOWS):
                model.sample(eeg[s : s + SAMPLER_MAX_WINDOWS], num_inference_steps=SAMPLER_STEPS)

    reset_peak(device)
    seconds = median_time_s(run, device, SAMPLER_REPEATS)
    frames = len(eeg) * K
    return {
        "num_inference_steps": SAMPLER_STEPS,
        "windows": len(eeg),
        "frames": frames,
        "seconds": seconds,
        "frames_per_s": frames / seconds,
        "peak_memory_bytes": peak_bytes(device),
    }
