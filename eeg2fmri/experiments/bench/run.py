"""The benchmark run: settings, data, model and floors, then the timed sections in order."""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import lightning.pytorch as pl
import torch

from eeg2fmri.data.datamodule import EEGfMRIDataModule, gather
from eeg2fmri.experiments.bench.cache import load_cache, write_synthetic_cache
from eeg2fmri.experiments.bench.costs import ema_bytes, sampler_flops, step_bytes, step_flops
from eeg2fmri.experiments.bench.device import device_name, measure_ceilings, resolve_device
from eeg2fmri.experiments.bench.harness import (
    ae_precision,
    bench_ema,
    bench_lightning,
    bench_reference,
    bench_sampler,
    gather_test_eeg,
)
from eeg2fmri.experiments.bench.report import write_json
from eeg2fmri.experiments.bench.scales import SAMPLER_STEPS, SCALES, CompileMode, Scale
from eeg2fmri.module import EEG2fMRIDiffusion

log = logging.getLogger("eeg2fmri.bench")  # the name the bench's log lines carry


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
    cfg, steps, warmup = _settings(scale, steps, warmup, compile)
    dev = resolve_device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)  # events and the reference run on this device's current stream
    results = _header(scale, dev, compile)
    log.info("bench: measuring the device's ceilings on %s", results["device_name"])
    results["ceilings"] = measure_ceilings(dev)
    out_path = Path(out)
    with tempfile.TemporaryDirectory(prefix="eeg2fmri-bench-") as tmp:
        dm, results["cache"] = _load(scale, cfg, data_path, Path(tmp))
        model, results["config"] = _model(dm, cfg, steps, warmup, dev)
        results["floors"] = _floors(model, dm, cfg, results["ceilings"])
        out_path.parent.mkdir(parents=True, exist_ok=True)
        _measure(results, out_path, model, dm, cfg, steps, warmup, dev, compile, Path(tmp))
    results["seconds"] = time.perf_counter() - t_start
    write_json(out_path, results)
    results["out"] = str(out_path)
    return results


# ---------------------------------------------------------------------------------------------
# Before the timed sections: settings, data, model, floors
# ---------------------------------------------------------------------------------------------


def _settings(scale: str, steps: int | None, warmup: int | None, compile: str) -> tuple[dict, int, int]:
    """The scale's sizes and the number of timed and warm-up steps (the scale's unless given)."""
    if scale not in SCALES:
        raise ValueError(f"scale={scale!r}: expected one of {sorted(SCALES)}")
    if compile not in ("none", "default", "reduce-overhead"):
        raise ValueError(f"compile={compile!r}: expected none, default or reduce-overhead")
    cfg = SCALES[scale]
    steps = cfg["steps"] if steps is None else steps
    warmup = cfg["warmup"] if warmup is None else warmup
    if steps < 1 or warmup < 0:
        raise ValueError(f"steps={steps} must be >= 1 and warmup={warmup} >= 0")
    return cfg, steps, warmup


def _header(scale: str, dev: torch.device, compile: str) -> dict:
    """What ran where: the first keys of the results."""
    return {
        "scale": scale,
        "device": str(dev),
        "device_name": device_name(dev),
        "compile": compile,
        "torch_version": torch.__version__,
        "lightning_version": pl.__version__,
        "memory_kind": "torch.cuda.max_memory_allocated" if dev.type == "cuda" else "peak RSS of the process",
    }


def _load(scale: str, cfg: dict, data_path: str | None, tmp: Path) -> tuple[EEGfMRIDataModule, dict]:
    """The DataModule of ``data_path`` or of a synthetic cache of the scale's size in ``tmp``, and
    how fast it loaded."""
    if data_path is None:
        log.info("bench: writing a synthetic %s-scale cache", scale)
        path = write_synthetic_cache(tmp / "synthetic.h5", cfg["every"], cfg["n_clips"], cfg["clip_frames"])
    else:
        path = Path(data_path)
    dm, cache = load_cache(path, cfg["n_frames"], cfg["batch_size"])
    cache["synthetic"] = data_path is None
    return dm, cache


def _model(
    dm: EEGfMRIDataModule, cfg: dict, steps: int, warmup: int, dev: torch.device
) -> tuple[EEG2fMRIDiffusion, dict]:
    """The module (the scale's model on this data, EEG2fMRIDiffusion's defaults otherwise, seed 0)
    and the ``config`` of the results."""
    K, B, V = cfg["n_frames"], cfg["batch_size"], dm.n_vertices
    torch.manual_seed(0)
    model = EEG2fMRIDiffusion(n_vertices=V, n_chans=dm.n_chans, n_times=dm.n_times, n_frames=K, **cfg["model"])
    hp = dict(model.hparams)
    return model, {
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


def _floors(model: EEG2fMRIDiffusion, dm: EEGfMRIDataModule, cfg: dict, ceilings: dict) -> dict:
    """FLOPs and bytes of one training step, and each over the device's measured ceiling (ms)."""
    K, B, V = cfg["n_frames"], cfg["batch_size"], dm.n_vertices
    n_params = sum(p.numel() for p in model.parameters())
    flops = step_flops(V, B, K, dict(model.hparams), dm.n_chans, dm.n_times)
    n_bytes = step_bytes(n_params, V, B, K, dm.n_chans, dm.n_times)
    fl_ms = flops["total"] / (ceilings["matmul_tflops"] * 1e12) * 1e3
    by_ms = n_bytes / (ceilings["copy_gbps"] * 1e9) * 1e3
    return {
        "flops_per_step": flops["total"],
        "flops_by_part": flops,
        "bytes_per_step": n_bytes,
        "ema_bytes_per_step": ema_bytes(n_params),
        "n_params": n_params,
        "flop_floor_ms": fl_ms,
        "byte_floor_ms": by_ms,
        "floor_ms": max(fl_ms, by_ms),
    }


# ---------------------------------------------------------------------------------------------
# The timed sections
# ---------------------------------------------------------------------------------------------


def _measure(
    results: dict,
    out_path: Path,
    model: EEG2fMRIDiffusion,
    dm: EEGfMRIDataModule,
    cfg: dict,
    steps: int,
    warmup: int,
    dev: torch.device,
    compile: CompileMode,
    tmp: Path,
) -> None:
    """The sections in order (the reference, the Lightning step with its EMA update, the
    autoencoder's bf16 check, the sampler), each recorded in ``results`` and the JSON as it ends."""
    K, B, V, hp = cfg["n_frames"], cfg["batch_size"], dm.n_vertices, dict(model.hparams)
    floors = results["floors"]

    def record(key: str, fn: Callable[[], dict]) -> dict | None:
        return _section(results, out_path, key, fn)

    log.info("bench: reference step (bare PyTorch), %d + %d steps", warmup, steps)
    ref = record(
        "reference",
        lambda: _rates(
            bench_reference(hp, V, dm.store, dm.windows["train"], K, B, steps, warmup, dev, compile), floors
        ),
    )
    if compile != "none":
        # the compiled graphs (and CUDA-graph pools) of the reference's modules stay cached;
        # the Lightning run compiles its own, so neither its time nor its memory borrows them
        torch.compiler.reset()
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    record("lightning", lambda: _lightning_row(model, dm, steps, warmup, dev, compile, tmp, floors, ref))
    model.to(dev)
    record("ae_bf16", lambda: _ae_bf16(model, dm, K, B, dev))
    eeg = gather_test_eeg(dm, dev)
    dm.store = None  # the resident data is not the sampler's: out of its peak memory
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    record("sampler", lambda: _sampler_row(model, eeg, dev, compile, K, V, hp, results["ceilings"]))


def _section(results: dict, out_path: Path, key: str, fn: Callable[[], dict]) -> dict | None:
    """Run one measurement; a failure is recorded (and the JSON written) instead of losing the
    sections already measured: a lent GPU's minutes are scarce."""
    try:
        results[key] = fn()
    except Exception as e:  # noqa: BLE001 - in the results; `eeg2fmri bench` then exits non-zero
        log.exception("bench: %s failed", key)
        results[key] = {"error": f"{type(e).__name__}: {e}"}
        results.setdefault("errors", []).append(key)
    write_json(out_path, results)
    return None if "error" in results[key] else results[key]


def _rates(row: dict, floors: dict, extra_bytes: int = 0) -> dict:
    """The step's floor FLOPs and bytes over its measured time: TFLOP/s and GB/s achieved."""
    s = row["ms_per_step"] / 1e3
    row["tflops"] = floors["flops_per_step"] / s / 1e12
    row["gbps"] = (floors["bytes_per_step"] + extra_bytes) / s / 1e9
    row["floor_bytes"] = floors["bytes_per_step"] + extra_bytes
    return row


def _lightning_row(
    model: EEG2fMRIDiffusion,
    dm: EEGfMRIDataModule,
    steps: int,
    warmup: int,
    dev: torch.device,
    compile: CompileMode,
    tmp: Path,
    floors: dict,
    ref: dict | None,
) -> dict:
    """The Lightning step, its ratio to the reference, and its EMA update timed alone."""
    log.info("bench: Lightning fit step, %d + %d steps", warmup, steps)
    light, ema, ema_device = bench_lightning(model, dm, steps, warmup, dev, compile, tmp)
    light = _rates(light, floors, floors["ema_bytes_per_step"])
    if ref is not None:
        light["ratio_to_reference"] = light["ms_per_step"] / ref["ms_per_step"]
    model.to(dev)  # Lightning's teardown moved it to the CPU
    light["ema_update_ms"], light["ema_update_stock_ms"] = bench_ema(ema, model, dev)
    light["ema_device"] = ema_device  # where the average lives
    return light


def _ae_bf16(model: EEG2fMRIDiffusion, dm: EEGfMRIDataModule, K: int, B: int, dev: torch.device) -> dict:
    """bf16 autoencoder matmuls against float32, on B x K training frames of the data."""
    rows = torch.as_tensor(dm.windows["train"][:B], device=dm.store["fmri"].device)
    frames = gather(dm.store, rows, K)["fmri"].reshape(B * K, -1).to(dev)  # (B K, V)
    return ae_precision(model.autoencoder, frames)


def _sampler_row(
    model: EEG2fMRIDiffusion,
    eeg: torch.Tensor,
    dev: torch.device,
    compile: CompileMode,
    K: int,
    V: int,
    hp: dict,
    ceilings: dict,
) -> dict:
    """DDIM over every test window: frames per second, and the FLOPs that took."""
    log.info("bench: sampler, DDIM-%d over %d test windows", SAMPLER_STEPS, len(eeg))
    samp = bench_sampler(model, eeg, dev, compile)
    samp["flops"] = sampler_flops(samp["windows"], K, V, hp)
    samp["tflops"] = samp["flops"] / samp["seconds"] / 1e12
    samp["flop_floor_ms"] = samp["flops"] / (ceilings["matmul_tflops"] * 1e12) * 1e3
    return samp
