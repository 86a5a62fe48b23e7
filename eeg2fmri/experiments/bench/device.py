"""The device: synchronisation, clocks, peak memory, and its measured ceilings (TFLOP/s, GB/s).

Timing (see /work/.library/device/METHOD.md): CUDA times come from events recorded on the stream
(no per-step host sync), CPU times from the host clock.
"""

from __future__ import annotations

import os
import platform
import resource
import statistics
import time
from contextlib import nullcontext
from pathlib import Path

import torch


def autocast(device: torch.device):
    """bf16 autocast on CUDA (as Lightning's bf16-mixed), nothing on the CPU (32-true)."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Marks:
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
            sync(self.device)
            return [a.elapsed_time(b) for a, b in zip(self.marks, self.marks[1:])]
        return [(b - a) * 1e3 for a, b in zip(self.marks, self.marks[1:])]


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:  # Linux: writing 5 resets the process's peak resident set size (VmHWM)
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_bytes(device: torch.device) -> int:
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


def median_time_s(fn, device: torch.device, repeats: int) -> float:
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
    t_mm = _matmul_seconds(device, n, dtype, g, 20 if cuda else 5)
    numel = (1 << 29) if cuda else (1 << 27)  # 1 GiB or 256 MiB of 16-bit values (beyond any cache)
    t_copy = _copy_seconds(device, numel, g, 20 if cuda else 5)
    if cuda:
        torch.cuda.empty_cache()
    return {
        "matmul_dtype": str(dtype).removeprefix("torch."),
        "matmul_tflops": 2 * n**3 / t_mm / 1e12,
        "copy_gbps": 2 * numel * 2 / t_copy / 1e9,  # bytes read + bytes written
    }


def _matmul_seconds(device: torch.device, n: int, dtype: torch.dtype, g: torch.Generator, repeats: int) -> float:
    """Median seconds of one (n, n) @ (n, n) product; the operands are freed on return."""
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

    return median_time_s(matmul, device, repeats)


def _copy_seconds(device: torch.device, numel: int, g: torch.Generator, repeats: int) -> float:
    """Median seconds of one device-to-device copy of ``numel`` float16 values; freed on return."""
    src = torch.randn(numel, device=device, generator=g).to(torch.float16)
    dst = torch.empty_like(src)
    return median_time_s(lambda: dst.copy_(src), device, repeats)


def device_name(device: torch.device) -> str:
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


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return _indexed(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"--device {device}: CUDA is not available on this machine (use cpu or auto)")
    return _indexed(dev)


def _indexed(dev: torch.device) -> torch.device:
    """cuda -> cuda:N (the current device), so that set_device and the Trainer get an index."""
    return torch.device("cuda", torch.cuda.current_device()) if dev.type == "cuda" and dev.index is None else dev
