"""The data: a synthetic prepared cache of the scale's size, and loading a cache (GB/s from disk)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import h5py
import numpy as np

from eeg2fmri.data.cinebrain import CHANNELS_64
from eeg2fmri.data.datamodule import EEGfMRIDataModule
from eeg2fmri.data.prepare import SPLITS
from eeg2fmri.experiments.bench.scales import N_CHANS, N_TIMES


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
