"""``eeg2fmri bench``: the training step and the sampler against a bare-PyTorch reference (DESIGN §6).

One process measures, in this order:

1. the device's ceilings: a large matrix product (TFLOP/s; bf16 on CUDA, float32 on CPU) and a
   large device-to-device copy (GB/s, bytes read + written);
2. loading the prepared cache (``EEGfMRIDataModule.setup``: /fmri and /eeg into memory), GB/s,
   from disk where the page cache can be dropped for the file (``posix_fadvise``);
3. the reference: the same nn modules (LinearAutoencoder, EEGEncoder, DiT) in a hand-written loop,
   data resident on the device, bf16 autocast and fused AdamW on CUDA, no Lightning;
4. the project's own step: ``Trainer.fit`` of the real ``EEG2fMRIDiffusion`` on the real
   ``EEGfMRIDataModule`` (GPU-resident path on CUDA), with the callbacks ``eeg2fmri fit`` always
   has (EMA, FiniteLossGuard), timed by a callback between consecutive batch starts;
5. the sampler: the module's ``sample`` (DDIM-50) on every test window, frames per second.

Timing (see /work/.library/device/METHOD.md): the first ``warmup`` steps (compilation, the first
copy of the data to the device, allocator growth) are excluded; CUDA times come from events
recorded on the stream at each step boundary (no per-step host sync), CPU times from the host
clock; ms/step is the median over the timed steps, and the mean (one host sync at each end of the
timed window) is reported beside it. Floors: the FLOPs one training step must do, counted from the
model's dimensions (matrix products and convolutions; elementwise work ignored), and the fewest
bytes it must move (AdamW's read and write of parameters and both moments, 24 B per parameter, plus
the batch read once in 16 bit), each over the measured ceiling.

``--scale ci`` (default) fits 2 CPU cores in under two minutes: a synthetic cache with every 20th
grayordinate (4,565) and a tiny model. ``--scale paper`` is the paper's size for one GPU: 91,282
grayordinates, K = 10, batch 32, the paper's model, 27,000 frames (540 test windows of 10).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import resource
import statistics
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Literal

import h5py
import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from torch import Tensor
from torch.optim.swa_utils import AveragedModel, get_ema_avg_fn

from eeg2fmri import diffusion as D
from eeg2fmri.callbacks import Compile, FiniteLossGuard
from eeg2fmri.data.cifti import atomic_write_text
from eeg2fmri.data.cinebrain import CHANNELS_64
from eeg2fmri.data.datamodule import EEGfMRIDataModule, gather
from eeg2fmri.data.prepare import SPLITS
from eeg2fmri.ema import EMA
from eeg2fmri.module import EEG2fMRIDiffusion
from eeg2fmri.nn.autoencoder import LinearAutoencoder
from eeg2fmri.nn.dit import DiT
from eeg2fmri.nn.eeg_encoder import EEGEncoder

log = logging.getLogger(__name__)

Scale = Literal["ci", "paper"]
CompileMode = Literal["none", "default", "reduce-overhead"]

# ---------------------------------------------------------------------------------------------
# Sizes
# ---------------------------------------------------------------------------------------------

# the architecture the FLOP/byte model and the bare reference describe: the paper's as published
# (strided-convolution EEG encoder, K EEG tokens, no regression stage; configs/paper/)
PAPER_ARCHITECTURE = dict(
    eeg_features="conv", regression=False, train_autoencoder=True, loss_weighting="eps", cond_drop_prob=0.1
)
SCALES: dict[str, dict] = {
    # every 20th grayordinate (the tests' simulator subset), 10 clips of 50 frames, a tiny model
    "ci": dict(
        every=20,
        n_clips=10,
        clip_frames=50,
        n_frames=10,
        batch_size=32,
        steps=20,
        warmup=5,
        model=dict(
            latent_dim=64,
            eeg_embed_dim=32,
            eeg_blocks=2,
            eeg_channels=16,
            hidden_size=64,
            depth=2,
            num_heads=4,
            **PAPER_ARCHITECTURE,
        ),
    ),
    # one CineBrain subject: 27,000 frames in 270 clips of 100 (70/10/20 % of clips: 540 test
    # windows of 10), all 91,282 grayordinates, the paper's model (EEG2fMRIDiffusion's defaults)
    "paper": dict(
        every=1,
        n_clips=270,
        clip_frames=100,
        n_frames=10,
        batch_size=32,
        steps=50,
        warmup=10,
        model=dict(PAPER_ARCHITECTURE),
    ),
}
N_CHANS, N_TIMES = 64, 800  # the 64-channel montage, one TR (0.8 s) at 1000 Hz
SAMPLER_STEPS = 50  # DDIM steps of the sampler measurement (DESIGN §6)
SAMPLER_REPEATS = 3
SAMPLER_MAX_WINDOWS = 1024  # windows per sample() call; more are sampled in chunks

# ---------------------------------------------------------------------------------------------
# Floors: FLOPs and bytes counted from the model's dimensions
# ---------------------------------------------------------------------------------------------


def _conv_lengths(n_times: int, n_blocks: int, kernel_size: int = 7) -> list[int]:
    """Output length of each stride-2 "same"-padded block of the EEG encoder."""
    out, t = [], n_times
    for _ in range(n_blocks):
        t = (t + 2 * (kernel_size // 2) - kernel_size) // 2 + 1
        out.append(t)
    return out


def eeg_encoder_flops(frames: int, hp: dict, n_chans: int, n_times: int, kernel_size: int = 7) -> list[int]:
    """Forward FLOPs of each layer of the EEG encoder on ``frames`` frame windows (convs, then MLP)."""
    F_, E = hp["eeg_channels"], hp["eeg_embed_dim"]
    layers = []
    for i, t_out in enumerate(_conv_lengths(n_times, hp["eeg_blocks"], kernel_size)):
        c_in = n_chans if i == 0 else F_
        layers.append(2 * frames * F_ * c_in * kernel_size * t_out)
    layers.append(2 * frames * (F_ * E + E * E))  # the two-layer MLP
    return layers


def dit_forward_flops(B: int, K: int, hp: dict, freq_dim: int = 256) -> int:
    """Forward FLOPs of the DiT on B windows of K frame tokens and K EEG tokens."""
    d, E, H, depth = hp["latent_dim"], hp["eeg_embed_dim"], hp["hidden_size"], hp["depth"]
    M, N = int(H * hp["mlp_ratio"]), B * K
    linear = 2 * N * H * (3 * H + H)  # self-attention qkv + proj
    linear += 2 * N * H * (H + 2 * H + H)  # cross-attention q, kv (on the K EEG tokens), proj
    linear += 2 * N * H * M * 2  # MLP
    linear += 2 * B * H * 9 * H  # adaLN modulation, once per window
    attention = 2 * 2 * (2 * B * K * K * H)  # QK^T and AV (2 products), self and cross (K keys each)
    embed = 2 * N * d * H + 2 * N * E * H + 2 * B * (freq_dim * H + H * H)  # x, cond, timestep
    final = 2 * B * H * 2 * H + 2 * N * H * d
    return depth * (linear + attention) + embed + final


def step_flops(V: int, B: int, K: int, hp: dict, n_chans: int = N_CHANS, n_times: int = N_TIMES) -> dict[str, int]:
    """FLOPs of one training step (forward + backward), by part.

    A product whose input is data (the AE encoder, the first EEG convolution) needs the forward and
    the weight gradient (2×); every other product also needs the input gradient (3×).
    """
    N = B * K
    mm = 2 * N * V * hp["latent_dim"]  # one AE product (encoder or decoder) forward
    eeg = eeg_encoder_flops(N, hp, n_chans, n_times)
    parts = {
        "autoencoder": 2 * mm + 3 * mm,
        "eeg_encoder": 2 * eeg[0] + 3 * sum(eeg[1:]),
        # the timestep MLP's first layer reads fixed sinusoids: no input gradient there
        "dit": 3 * dit_forward_flops(B, K, hp) - 2 * B * 256 * hp["hidden_size"],
    }
    parts["total"] = sum(parts.values())
    return parts


def sampler_flops(n_windows: int, K: int, V: int, hp: dict, steps: int = SAMPLER_STEPS) -> int:
    """FLOPs of DDIM sampling: EEG encoder once, the DiT at every step, the AE decoder once."""
    return (
        sum(eeg_encoder_flops(n_windows * K, hp, hp.get("n_chans", N_CHANS), hp.get("n_times", N_TIMES)))
        + steps * dit_forward_flops(n_windows, K, hp)
        + 2 * n_windows * K * hp["latent_dim"] * V
    )


def step_bytes(n_params: int, V: int, B: int, K: int, n_chans: int = N_CHANS, n_times: int = N_TIMES) -> int:
    """Fewest bytes one training step moves: AdamW reads and writes the float32 parameters and both
    moments (24 B per parameter; gradients, written by the backward and read by the optimizer, would
    add 8 B more), and the batch is read once in 16 bit."""
    return 24 * n_params + 2 * B * K * (V + n_chans * n_times)


def ema_bytes(n_params: int) -> int:
    """The EMA update: read the average and the weights, write the average (float32)."""
    return 12 * n_params


# ---------------------------------------------------------------------------------------------
# Device: synchronisation, clocks, memory, ceilings
# ---------------------------------------------------------------------------------------------


def _autocast(device: torch.device):
    """bf16 autocast on CUDA (as Lightning's bf16-mixed), nothing on the CPU (32-true)."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Marks:
    """Step boundaries: CUDA events recorded on the current stream (no host sync), or the host clock."""

    def __init__(self, device: torch.device):
        self.device, self.marks = device, []

    def mark(self) -> None:
        if self.device.type == "cuda":
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            self.marks.append(ev)
        else:
            self.marks.append(time.perf_counter())

    def intervals_ms(self) -> list[float]:
        if self.device.type == "cuda":
            _sync(self.device)
            return [a.elapsed_time(b) for a, b in zip(self.marks, self.marks[1:])]
        return [(b - a) * 1e3 for a, b in zip(self.marks, self.marks[1:])]


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:  # Linux: writing 5 resets the process's peak resident set size (VmHWM)
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _peak_bytes(device: torch.device) -> int:
    """Peak GPU memory allocated by tensors (CUDA), or the process's peak resident set (CPU)."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def _median_time_s(fn, device: torch.device, repeats: int) -> float:
    """Median seconds of ``fn()`` after one warm-up call, timed with events (CUDA) or the host clock."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure_ceilings(device: torch.device) -> dict:
    """The device's measured rates: a large matrix product and a large device-to-device copy."""
    cuda = device.type == "cuda"
    n, dtype = (8192, torch.bfloat16) if cuda else (1024, torch.float32)
    g = torch.Generator(device=device).manual_seed(0)
    # random operands (never zeros), two sets rotated so no run reuses the previous one's inputs
    sets = [
        (
            torch.randn(n, n, device=device, dtype=dtype, generator=g),
            torch.randn(n, n, device=device, dtype=dtype, generator=g),
        )
        for _ in range(2)
    ]
    out = torch.empty(n, n, device=device, dtype=dtype)
    i = [0]

    def matmul():
        a, b = sets[i[0] % 2]
        i[0] += 1
        torch.matmul(a, b, out=out)

    t_mm = _median_time_s(matmul, device, 20 if cuda else 5)
    del sets, out
    numel = (1 << 29) if cuda else (1 << 27)  # 1 GiB or 256 MiB of 16-bit values (beyond any cache)
    src = torch.randn(numel, device=device, generator=g).to(torch.float16)
    dst = torch.empty_like(src)
    t_copy = _median_time_s(lambda: dst.copy_(src), device, 20 if cuda else 5)
    del src, dst
    if cuda:
        torch.cuda.empty_cache()
    return {
        "matmul_dtype": str(dtype).removeprefix("torch."),
        "matmul_tflops": 2 * n**3 / t_mm / 1e12,
        "copy_gbps": 2 * numel * 2 / t_copy / 1e9,  # bytes read + bytes written
    }


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name} ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"


# ---------------------------------------------------------------------------------------------
# Data: a synthetic prepared cache, and loading it
# ---------------------------------------------------------------------------------------------


def write_synthetic_cache(path: str | Path, every: int, n_clips: int, clip_frames: int, seed: int = 0) -> Path:
    """A prepared cache in the format ``eeg2fmri prepare`` writes (data/README.md), of random data.

    Frames: ``n_clips`` clips of ``clip_frames`` consecutive volumes, two clips per run; clips are
    split 70 / 10 / 20 % (train / val / test) by position. fMRI: z-score-like normal values;
    EEG: normal values of sd 0.25 clipped to ±1; both float16, contiguous. To keep the paper size
    quick to write, a random block of up to 1,000 frames is tiled (not zeros: the timing of real
    values).
    """
    path = Path(path)
    rng = np.random.default_rng(seed)
    indices = np.arange(0, 91_282, every, dtype=np.int64)  # (V,)
    V, T = len(indices), n_clips * clip_frames
    n_test, n_val = max(1, round(0.2 * n_clips)), max(1, round(0.1 * n_clips))
    clip_split = np.full(n_clips, SPLITS["train"], np.int8)
    clip_split[n_clips - n_test :] = SPLITS["test"]
    clip_split[n_clips - n_test - n_val : n_clips - n_test] = SPLITS["val"]
    frame_clip = np.repeat(np.arange(n_clips, dtype=np.int32), clip_frames)  # (T,)
    run_of_clip = np.arange(n_clips) // 2 + 1
    # volumes: each clip starts 10 volumes after the previous clip of its run ended (a rest)
    frame_volume = np.concatenate([(c % 2) * (clip_frames + 10) + 5 + np.arange(clip_frames) for c in range(n_clips)])
    block = min(T, 1000)
    with h5py.File(path, "w") as h5:
        fmri = h5.create_dataset("fmri", (T, V), np.float16)
        eeg = h5.create_dataset("eeg", (T, N_CHANS, N_TIMES), np.float16)
        fmri_block = rng.standard_normal((block, V), dtype=np.float32).astype(np.float16)
        eeg_block = rng.standard_normal((block, N_CHANS, N_TIMES), dtype=np.float32) * 0.25
        eeg_block = np.clip(eeg_block, -1, 1).astype(np.float16)
        for s in range(0, T, block):
            e = min(T, s + block)
            fmri[s:e] = fmri_block[: e - s]
            eeg[s:e] = eeg_block[: e - s]
        h5["frame_run"] = run_of_clip[frame_clip].astype(np.int32)
        h5["frame_volume"] = frame_volume.astype(np.int32)
        h5["frame_clip"] = frame_clip
        h5["frame_time"] = (frame_volume * 0.8).astype(np.float32)
        h5["split"] = clip_split[frame_clip]
        h5["indices"] = indices
        h5["fmri_mean"], h5["fmri_std"] = np.full(V, 10_000, np.float32), np.full(V, 100, np.float32)
        h5["eeg_center"], h5["eeg_scale"] = np.zeros(N_CHANS), np.full(N_CHANS, 50.0)
        h5["clip_names"] = np.array([f"clip{c:04d}" for c in range(n_clips)], dtype=h5py.string_dtype())
        h5["clip_split"] = clip_split
        n_runs = int(run_of_clip[-1])
        h5["run_files"] = np.array([f"synthetic_run-{r}" for r in range(1, n_runs + 1)], dtype=h5py.string_dtype())
        h5["run_numbers"] = np.arange(1, n_runs + 1, dtype=np.int32)
        h5["run_n_volumes"] = np.full(n_runs, 2 * clip_frames + 30, np.int32)
        h5["run_tasks"] = np.array(["synthetic"] * n_runs, dtype=h5py.string_dtype())
        h5["run_file_indices"] = np.tile(indices.astype(np.int32), (n_runs, 1))
        h5.attrs.update(
            normalize="train", split="clips", detrend="none", protocol="synthetic (bench): no preprocessing"
        )
        h5.attrs.update(
            tr=0.8,
            sfreq=1000.0,
            shift_s=4.0,
            n_times=N_TIMES,
            ch_names=json.dumps(list(CHANNELS_64)),
            flat_channels="[]",
            n_vertices=V,
            layout="fsLR-32k 91k" if V == 91_282 else "fsLR-32k 91k subset",
            has_truth=False,
            subject="synthetic",
            source="eeg2fmri.bench",
            options="{}",
            cache_key="synthetic",
            version=1,
            created=time.strftime("%Y-%m-%dT%H:%M:%S"),
        )
    return path


def _drop_page_cache(path: Path) -> bool:
    """Ask the kernel to forget the file's cached pages, so the next read comes from disk."""
    if not hasattr(os, "posix_fadvise"):
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
        return True
    except OSError:
        return False


def load_cache(data_path: Path, n_frames: int, batch_size: int) -> tuple[EEGfMRIDataModule, dict]:
    """The DataModule with its data loaded, and how fast ``setup`` read /fmri and /eeg (GB/s)."""
    dm = EEGfMRIDataModule(str(data_path), n_frames=n_frames, batch_size=batch_size, gpu_resident=True)
    cold = _drop_page_cache(data_path)
    t0 = time.perf_counter()
    dm.setup("fit")
    seconds = time.perf_counter() - t0
    n_bytes = sum(t.numel() * t.element_size() for t in dm.store.values())
    return dm, {
        "path": str(data_path),
        "bytes": n_bytes,
        "seconds": seconds,
        "load_gbps": n_bytes / seconds / 1e9,
        "page_cache_dropped": cold,
        "n_frames_total": int(dm.store["fmri"].shape[0]),
    }


# ---------------------------------------------------------------------------------------------
# Reference: the same nn modules in a hand-written loop
# ---------------------------------------------------------------------------------------------


def reference_losses(
    ae: LinearAutoencoder,
    enc: EEGEncoder,
    dit: DiT,
    alphas_cumprod: torch.Tensor,
    batch: dict,
    hp: dict,
    generator: torch.Generator | None = None,
    train: bool = True,
) -> torch.Tensor:
    """The diffusion model's loss written out without Lightning (same as ``EEG2fMRIDiffusion._losses``)."""
    x, eeg = batch["fmri"], batch["eeg"]  # (B, K, V), (B, K, C, W)
    B = x.shape[0]
    z, x_hat = ae(x)  # (B, K, d), (B, K, V)
    t = torch.randint(0, len(alphas_cumprod), (B,), device=x.device, generator=generator)  # (B,)
    noise = torch.randn(z.shape, device=z.device, generator=generator)  # (B, K, d)
    z_t = D.q_sample(z, t, noise, alphas_cumprod)  # (B, K, d)
    h = enc(eeg)  # (B, K, E)
    drop = torch.rand(B, device=x.device) < hp["cond_drop_prob"] if train and hp["cond_drop_prob"] > 0 else None
    out = dit(z_t, t, h, drop_cond=drop)  # (B, K, d)
    eps = D.eps_from_v(z_t, out, alphas_cumprod[t]) if hp["parameterization"] == "v" else out.float()
    recon = F.mse_loss(x_hat.float(), x.float())
    return D.diffusion_loss(eps, noise) + hp["recon_weight"] * recon


def _compile_modules(ae, enc, dit, mode: CompileMode) -> None:
    """torch.compile in place (state-dict keys unchanged); reduce-overhead (CUDA graphs) on the DiT
    only, where the launch overhead is (DESIGN §6), the default mode elsewhere."""
    if mode == "none":
        return
    ae.compile()
    enc.compile()
    dit.compile(mode=mode)


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
    torch.manual_seed(0)
    # built in the order EEG2fMRIDiffusion builds them: the same initial weights
    ae = LinearAutoencoder(V, hp["latent_dim"]).to(device)
    enc = EEGEncoder(hp["n_chans"], hp["n_times"], hp["eeg_embed_dim"], hp["eeg_blocks"], hp["eeg_channels"]).to(device)
    dit = DiT(
        hp["latent_dim"], hp["eeg_embed_dim"], K, hp["hidden_size"], hp["depth"], hp["num_heads"], hp["mlp_ratio"]
    )
    dit = dit.to(device)
    betas = D.linear_beta_schedule(hp["num_train_timesteps"], hp["beta_start"], hp["beta_end"])
    ac = D.alphas_cumprod(betas).float().to(device)
    params = [p for m in (ae, enc, dit) for p in m.parameters()]
    cuda = device.type == "cuda"
    opt = torch.optim.AdamW(params, lr=hp["lr"], weight_decay=hp["weight_decay"], fused=cuda)
    _compile_modules(ae, enc, dit, compile)
    store = {k: v.to(device) for k, v in store.items()}  # resident, 16 bit as in the cache
    starts = torch.as_tensor(train_starts, device=device)
    marks = _Marks(device)
    _reset_peak(device)
    t0 = None
    for i in range(warmup + steps):
        if i == warmup:
            _sync(device)
            t0 = time.perf_counter()
        if compile == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()
        marks.mark()
        pick = torch.randint(len(starts), (B,), device=device)  # (B,) random windows, drawn on the device
        batch = gather(store, starts[pick], K)
        with _autocast(device):
            loss = reference_losses(ae, enc, dit, ac, batch, hp)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    marks.mark()
    _sync(device)
    wall = time.perf_counter() - t0
    timed = marks.intervals_ms()[warmup:]
    n_params = sum(p.numel() for p in params)
    return {
        "ms_per_step": statistics.median(timed),
        "ms_per_step_mean": wall / steps * 1e3,
        "steps": steps,
        "peak_memory_bytes": _peak_bytes(device),
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
        self.marks: _Marks | None = None
        self.t0 = self.wall = None

    def on_train_start(self, trainer, pl_module) -> None:
        self.marks = _Marks(pl_module.device)
        _reset_peak(pl_module.device)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if len(self.marks.marks) == self.warmup:
            _sync(pl_module.device)
            self.t0 = time.perf_counter()
        self.marks.mark()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if len(self.marks.marks) == self.warmup + self.steps:  # the last step ends
            self.marks.mark()
            _sync(pl_module.device)
            self.wall = time.perf_counter() - self.t0
            self.peak = _peak_bytes(pl_module.device)

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
) -> tuple[dict, EMA]:
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
    return timer.result(), ema


def bench_ema(ema: EMA, model: EEG2fMRIDiffusion, device: torch.device) -> tuple[float, float, str]:
    """Milliseconds of one EMA update of the whole module (part of every Lightning step), as the
    callback makes it (AveragedModel with its fused rule) and with a per-tensor average (``avg_fn``,
    Lightning's EMAWeightAveraging) for comparison; and the device the average lives on."""
    fused = AveragedModel(model, device, use_buffers=True, multi_avg_fn=ema.multi_avg_fn)
    stock = AveragedModel(model, device, use_buffers=True, avg_fn=get_ema_avg_fn(ema.decay))
    for avg in (fused, stock):
        avg.update_parameters(model)  # the first update copies
    fused_ms = _median_time_s(lambda: fused.update_parameters(model), device, 10) * 1e3
    stock_ms = _median_time_s(lambda: stock.update_parameters(model), device, 10) * 1e3
    return fused_ms, stock_ms, str(next(fused.parameters()).device)


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
        with _autocast(device):
            for s in range(0, len(eeg), SAMPLER_MAX_WINDOWS):
                model.sample(eeg[s : s + SAMPLER_MAX_WINDOWS], num_inference_steps=SAMPLER_STEPS)

    _reset_peak(device)
    seconds = _median_time_s(run, device, SAMPLER_REPEATS)
    frames = len(eeg) * K
    return {
        "num_inference_steps": SAMPLER_STEPS,
        "windows": len(eeg),
        "frames": frames,
        "seconds": seconds,
        "frames_per_s": frames / seconds,
        "peak_memory_bytes": _peak_bytes(device),
    }


# ---------------------------------------------------------------------------------------------
# The benchmark
# ---------------------------------------------------------------------------------------------


def _write_json(path: Path, results: dict) -> None:
    """The results as JSON, through a temporary file: an interrupted write keeps the previous file."""
    atomic_write_text(path, json.dumps(results, indent=2, default=float))


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        return _indexed(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"--device {device}: CUDA is not available on this machine (use cpu or auto)")
    return _indexed(dev)


def _indexed(dev: torch.device) -> torch.device:
    """cuda -> cuda:N (the current device), so that set_device and the Trainer get an index."""
    return torch.device("cuda", torch.cuda.current_device()) if dev.type == "cuda" and dev.index is None else dev


def bench(
    scale: Scale = "ci",
    steps: int | None = None,
    warmup: int | None = None,
    compile: CompileMode = "none",
    data_path: str | None = None,
    out: str = "bench/bench.json",
    device: str = "auto",
) -> dict:
    """Benchmark the training step and the sampler against a bare-PyTorch reference, in one process.

    Prints nothing itself (``eeg2fmri bench`` prints :func:`format_table`); returns the results and
    writes them as JSON. Times are medians over the timed steps; the first ``warmup`` are excluded.

    Args:
        scale: ci (CPU-sized, under 2 minutes on 2 cores: 4,565 grayordinates, tiny model) or paper
            (one GPU: 91,282 grayordinates, K = 10, batch 32, the paper's model).
        steps: timed training steps, for the reference and for the Lightning fit each (default 20 at
            ci, 50 at paper).
        warmup: untimed training steps before them (compilation, first data copy; default 5 at ci,
            10 at paper).
        compile: torch.compile of the networks: none, default, or reduce-overhead (CUDA graphs on
            the DiT, the default mode on the autoencoder and EEG encoder).
        data_path: a prepared cache (eeg2fmri prepare) to load; its grayordinates and frames
            replace the scale's (the model stays the scale's). Default: a synthetic cache of the
            scale's size, written to a temporary folder and deleted afterwards.
        out: JSON file of the results (folders created).
        device: auto (CUDA if available), cpu, cuda or cuda:N.

    Returns:
        dict with ``scale``, ``device``, ``device_name``, ``compile``, ``config`` (sizes, model);
        ``ceilings`` (``matmul_tflops``, ``copy_gbps``); ``floors`` (``flops_per_step``,
        ``bytes_per_step``, ``flop_floor_ms``, ``byte_floor_ms``, ``floor_ms``, by part);
        ``cache`` (``bytes``, ``seconds``, ``load_gbps``); ``reference`` and ``lightning``
        (``ms_per_step``, ``ms_per_step_mean``, ``tflops``, ``gbps``, ``peak_memory_bytes``; the
        Lightning row also ``ratio_to_reference``, ``ema_update_ms``, ``ema_device``); ``sampler``
        (``frames_per_s``, ``seconds``, ``frames``, ``tflops``, ``peak_memory_bytes``); ``seconds``
        (the whole run).
    """
    t_start = time.perf_counter()
    if scale not in SCALES:
        raise ValueError(f"scale={scale!r}: expected one of {sorted(SCALES)}")
    if compile not in ("none", "default", "reduce-overhead"):
        raise ValueError(f"compile={compile!r}: expected none, default or reduce-overhead")
    cfg = SCALES[scale]
    steps = cfg["steps"] if steps is None else steps
    warmup = cfg["warmup"] if warmup is None else warmup
    if steps < 1 or warmup < 0:
        raise ValueError(f"steps={steps} must be >= 1 and warmup={warmup} >= 0")
    dev = _resolve_device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)  # events and the reference run on this device's current stream
    K, B = cfg["n_frames"], cfg["batch_size"]
    results: dict = {
        "scale": scale,
        "device": str(dev),
        "device_name": _device_name(dev),
        "compile": compile,
        "torch_version": torch.__version__,
        "lightning_version": pl.__version__,
        "memory_kind": "torch.cuda.max_memory_allocated" if dev.type == "cuda" else "peak RSS of the process",
    }

    log.info("bench: measuring the device's ceilings on %s", results["device_name"])
    ceilings = results["ceilings"] = measure_ceilings(dev)

    with tempfile.TemporaryDirectory(prefix="eeg2fmri-bench-") as tmp:
        tmp = Path(tmp)
        if data_path is None:
            log.info("bench: writing a synthetic %s-scale cache", scale)
            path = write_synthetic_cache(tmp / "synthetic.h5", cfg["every"], cfg["n_clips"], cfg["clip_frames"])
        else:
            path = Path(data_path)
        dm, cache = load_cache(path, K, B)
        cache["synthetic"] = data_path is None
        results["cache"] = cache
        V = dm.n_vertices

        # the module: the scale's model on this data (EEG2fMRIDiffusion's defaults otherwise)
        torch.manual_seed(0)
        model = EEG2fMRIDiffusion(n_vertices=V, n_chans=dm.n_chans, n_times=dm.n_times, n_frames=K, **cfg["model"])
        hp = dict(model.hparams)
        results["config"] = {
            "n_vertices": V,
            "n_frames": K,
            "batch_size": B,
            "n_chans": dm.n_chans,
            "n_times": dm.n_times,
            "steps": steps,
            "warmup": warmup,
            "n_train_windows": len(dm.windows["train"]),
            "n_test_windows": len(dm.windows["test"]),
            "precision": "bf16-mixed" if dev.type == "cuda" else "32-true",
            "model": {k: v for k, v in hp.items() if k not in ("n_vertices", "n_chans", "n_times", "n_frames")},
        }

        n_params = sum(p.numel() for p in model.parameters())
        flops = step_flops(V, B, K, hp, dm.n_chans, dm.n_times)
        n_bytes = step_bytes(n_params, V, B, K, dm.n_chans, dm.n_times)
        fl_ms = flops["total"] / (ceilings["matmul_tflops"] * 1e12) * 1e3
        by_ms = n_bytes / (ceilings["copy_gbps"] * 1e9) * 1e3
        results["floors"] = {
            "flops_per_step": flops["total"],
            "flops_by_part": flops,
            "bytes_per_step": n_bytes,
            "ema_bytes_per_step": ema_bytes(n_params),
            "n_params": n_params,
            "flop_floor_ms": fl_ms,
            "byte_floor_ms": by_ms,
            "floor_ms": max(fl_ms, by_ms),
        }

        def rates(row: dict, extra_bytes: int = 0) -> dict:
            s = row["ms_per_step"] / 1e3
            row["tflops"] = flops["total"] / s / 1e12
            row["gbps"] = (n_bytes + extra_bytes) / s / 1e9
            row["floor_bytes"] = n_bytes + extra_bytes
            return row

        out_path = Path(out)
        out_path.parent.mkdir(parents=True, exist_ok=True)

        def section(key: str, fn) -> dict | None:
            """Run one measurement; a failure is recorded (and the JSON written) instead of losing
            the sections already measured: a lent GPU's minutes are scarce."""
            try:
                results[key] = fn()
            except Exception as e:  # noqa: BLE001 - in the results; `eeg2fmri bench` then exits non-zero
                log.exception("bench: %s failed", key)
                results[key] = {"error": f"{type(e).__name__}: {e}"}
                results.setdefault("errors", []).append(key)
            _write_json(out_path, results)
            return None if "error" in results[key] else results[key]

        log.info("bench: reference step (bare PyTorch), %d + %d steps", warmup, steps)
        ref = section(
            "reference",
            lambda: rates(bench_reference(hp, V, dm.store, dm.windows["train"], K, B, steps, warmup, dev, compile)),
        )
        if compile != "none":
            # the compiled graphs (and CUDA-graph pools) of the reference's modules stay cached;
            # the Lightning run compiles its own, so neither its time nor its memory borrows them
            torch.compiler.reset()
        if dev.type == "cuda":
            torch.cuda.empty_cache()

        def lightning_step() -> dict:
            log.info("bench: Lightning fit step, %d + %d steps", warmup, steps)
            light, ema = bench_lightning(model, dm, steps, warmup, dev, compile, tmp)
            light = rates(light, ema_bytes(n_params))
            if ref is not None:
                light["ratio_to_reference"] = light["ms_per_step"] / ref["ms_per_step"]
            model.to(dev)  # Lightning's teardown moved it to the CPU
            light["ema_update_ms"], light["ema_update_stock_ms"], light["ema_device"] = bench_ema(ema, model, dev)
            return light

        section("lightning", lightning_step)
        model.to(dev)

        def ae_bf16() -> dict:
            # bf16 autoencoder matmuls against float32, on B x K training frames of the data
            rows = torch.as_tensor(dm.windows["train"][:B], device=dm.store["fmri"].device)
            frames = gather(dm.store, rows, K)["fmri"].reshape(B * K, -1).to(dev)  # (B K, V)
            return ae_precision(model.autoencoder, frames)

        section("ae_bf16", ae_bf16)
        eeg = gather_test_eeg(dm, dev)
        dm.store = None  # the resident data is not the sampler's: out of its peak memory
        if dev.type == "cuda":
            torch.cuda.empty_cache()

        def sampler() -> dict:
            log.info("bench: sampler, DDIM-%d over %d test windows", SAMPLER_STEPS, len(eeg))
            samp = bench_sampler(model, eeg, dev, compile)
            samp["flops"] = sampler_flops(samp["windows"], K, V, hp)
            samp["tflops"] = samp["flops"] / samp["seconds"] / 1e12
            samp["flop_floor_ms"] = samp["flops"] / (ceilings["matmul_tflops"] * 1e12) * 1e3
            return samp

        section("sampler", sampler)

    results["seconds"] = time.perf_counter() - t_start
    _write_json(out_path, results)
    results["out"] = str(out_path)
    return results


# ---------------------------------------------------------------------------------------------
# The printed table
# ---------------------------------------------------------------------------------------------


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def format_table(r: dict) -> str:
    """The results as a short plain-text table (what ``eeg2fmri bench`` prints)."""
    c, f, ce = r["config"], r["floors"], r["ceilings"]
    m = c["model"]
    lines = [
        f"eeg2fmri bench: scale {r['scale']}, {r['device']} ({r['device_name']}), compile {r['compile']}, "
        f"torch {r['torch_version']}, lightning {r['lightning_version']}",
        f"  V={c['n_vertices']:,} K={c['n_frames']} B={c['batch_size']} {c['precision']}; model d={m['latent_dim']} "
        f"H={m['hidden_size']} depth={m['depth']} ({f['n_params'] / 1e6:.1f} M params)",
        f"  ceilings (measured): matmul {ce['matmul_tflops']:.2f} TFLOP/s ({ce['matmul_dtype']}), copy {ce['copy_gbps']:.1f} GB/s",
        f"  floors per step: {f['flops_per_step'] / 1e9:.2f} GFLOP -> {f['flop_floor_ms']:.3f} ms; "
        f"{f['bytes_per_step'] / 1e9:.3f} GB -> {f['byte_floor_ms']:.3f} ms",
        "",
        f"  {'':<30} {'ms/step':>9} {'mean':>9} {'x ref':>6} {'TFLOP/s':>8} {'%peak':>6} {'GB/s':>8} {'%peak':>6} {'peak mem':>10}",
    ]
    for name, key in (("reference (bare PyTorch)", "reference"), ("Lightning fit step", "lightning")):
        row = r.get(key, {"error": "not run"})
        if "error" in row:
            lines.append(f"  {name:<30} FAILED: {row['error'][:200]}")
            continue
        ratio = row.get("ratio_to_reference", float("nan") if key == "lightning" else 1.0)
        lines.append(
            f"  {name:<30} {row['ms_per_step']:>9.2f} {row['ms_per_step_mean']:>9.2f} {ratio:>6.2f} "
            f"{row['tflops']:>8.3f} {100 * row['tflops'] / ce['matmul_tflops']:>5.1f}% {row['gbps']:>8.1f} "
            f"{100 * row['gbps'] / ce['copy_gbps']:>5.1f}% {_gib(row['peak_memory_bytes']):>10}"
        )
        if key == "lightning":
            lines.append(
                f"  {'  EMA update alone (' + row['ema_device'] + ')':<30} {row['ema_update_ms']:>9.2f}"
                f"   (AveragedModel.update_parameters: {row.get('ema_update_stock_ms', float('nan')):.2f})"
            )
    lines.append("")
    s, ae = r.get("sampler", {"error": "not run"}), r.get("ae_bf16", {"error": "not run"})
    if "error" in s:
        lines.append(f"  sampler FAILED: {s['error'][:200]}")
    else:
        lines.append(
            f"  sampler DDIM-{s['num_inference_steps']}: {s['windows']} windows ({s['frames']} frames) in {s['seconds']:.3f} s = "
            f"{s['frames_per_s']:,.0f} frames/s, {s['tflops']:.3f} TFLOP/s "
            f"({100 * s['tflops'] / ce['matmul_tflops']:.1f}% peak), peak mem {_gib(s['peak_memory_bytes'])}"
        )
    if "error" in ae:
        lines.append(f"  autoencoder bf16 check FAILED: {ae['error'][:200]}")
    else:
        lines.append(
            f"  autoencoder bf16 vs fp32 on {ae['frames']} frames: latents {ae['latent_rel_err']:.2e}, reconstruction "
            f"{ae['recon_rel_err']:.2e} relative error (the fp32 reconstruction's own error against the data: "
            f"{ae['recon_vs_data_rel_err']:.3f})"
        )
    lines += [
        f"  cache load: {r['cache']['bytes'] / 1e9:.3f} GB in {r['cache']['seconds']:.3f} s = {r['cache']['load_gbps']:.2f} GB/s "
        f"({'page cache dropped' if r['cache']['page_cache_dropped'] else 'page cache NOT dropped'}"
        f"{', synthetic' if r['cache']['synthetic'] else ''})",
        f"  peak memory: {r['memory_kind']}; whole run {r['seconds']:.1f} s; results in {r.get('out', '?')}",
    ]
    return "\n".join(lines)
