"""EEGfMRIDataModule: windows of K consecutive frames from a prepared subject cache.

A window is K consecutive fMRI volumes of one clip (it never crosses a clip or split boundary)
with the EEG window of each frame. Batches are dicts::

    eeg          (B, P + K + F, n_chans, n_times)  float32, scaled to (-1, 1): the EEG window of
                 each frame, plus ``eeg_context = (P, F)`` windows of the frames before and after
                 the K frames (context for a hemodynamic model; P = F = 0 by default)
    eeg_mask     (B, P + K + F)            bool: False where a context frame lies outside the
                 window's run of consecutive frames of its clip (its EEG is then zeros)
    fmri         (B, K, n_vertices)        float32, z-scored with train statistics
    frame_index  (B, K)                    row of each frame in the cache (0..n_frames-1)
    clip         (B,)                      clip id of the window
    fmri_clean   (B, K, n_vertices)        noise-free BOLD, same scaling (simulated data only)

Two data paths. On CUDA the whole subject (a region's columns) is copied once to the GPU in 16 bit
and the DataLoader yields only window indices; ``on_after_batch_transfer`` gathers the batch on
the device, so the host never touches frame data during training (DESIGN §6). On CPU a plain
map-style Dataset gathers each window from memory. Both yield the same batches.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Literal

import h5py
import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset, Sampler

from eeg2fmri.data.frames import segment_bounds, segment_ids
from eeg2fmri.data.prepare import CACHE_VERSION, SPLITS
from eeg2fmri.data.regions import region_columns
from eeg2fmri.errors import EEG2fMRIError, OptionError, check_option, check_positive
from eeg2fmri.seed import global_seed

log = logging.getLogger(__name__)


class CacheError(EEG2fMRIError):
    """A prepared cache that cannot be used; the message names the file and what was expected."""


def open_cache(path: str | Path) -> h5py.File:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: prepared cache not found. Build it with `eeg2fmri prepare --subject_dir <raw>/sub_0001`"
        )
    if path.name.endswith((".nii", ".nii.gz")) and not h5py.is_hdf5(path):
        raise CacheError(
            f"{path}: a NIfTI / CIFTI image, not a prepared cache; --data.data_path takes the .h5 that "
            "`eeg2fmri prepare --subject_dir <raw>/sub_0001` writes from the subject's runs"
        )
    try:
        h5 = h5py.File(path, "r")
    except OSError as e:
        raise CacheError(
            f"{path}: not a readable HDF5 cache (truncated or corrupt? {e}); delete it and re-run prepare"
        ) from e
    missing = [k for k in ("fmri", "eeg", "split", "frame_clip", "frame_volume", "indices") if k not in h5]
    if missing:
        h5.close()
        raise CacheError(
            f"{path}: cache lacks dataset(s) {missing}; it was not written by `eeg2fmri prepare` or is incomplete"
        )
    version = h5.attrs.get("version")
    if version is not None and int(version) != CACHE_VERSION:
        h5.close()
        raise CacheError(
            f"{path}: cache format version {int(version)}; this eeg2fmri reads version {CACHE_VERSION}. "
            "Re-run `eeg2fmri prepare` on the subject (it rewrites the cache)"
        )
    return h5


def _refuse_non_finite(path: Path, key: str, x: torch.Tensor, indices: np.ndarray) -> None:
    """Refuse a cache whose ``key`` rows hold NaN / Inf (a prepare never writes one: an edited or
    damaged file), naming the first bad frame and where in it, before any model reads it."""
    flat = x.reshape(len(x), -1)  # (T, D) a view
    # (T,) in blocks of rows, so the mask never holds more than a block of the data
    bad = torch.cat([~torch.isfinite(flat[i : i + 1024]).all(1) for i in range(0, len(flat), 1024)])
    if not bool(bad.any()):
        return
    row = int(torch.nonzero(bad)[0])
    col = int(torch.nonzero(~torch.isfinite(x[row].reshape(-1)))[0])
    where = f"grayordinate {int(indices[col])} (column {col})" if key == "fmri" else f"EEG value {col} of its window"
    raise CacheError(
        f"{path}: dataset {key!r} holds NaN/Inf in {int(bad.sum())} frame(s), first at frame {row}, {where}; "
        "a prepared cache is finite: delete it and re-run `eeg2fmri prepare`"
    )


def window_starts(
    frame_clip: np.ndarray,
    frame_volume: np.ndarray,
    split: np.ndarray,
    n_frames: int,
    stride: int = 1,
    include_tail: bool = False,
) -> np.ndarray:
    """Cache rows where a window of ``n_frames`` consecutive frames of one clip starts.

    Frames are consecutive when their volume index (``frame_volume``) increases by one and they share clip and split.
    ``stride`` steps between windows inside a run of consecutive frames; ``include_tail`` adds a
    window ending at the last frame of each run so that every frame is covered (for prediction).
    """
    if n_frames < 1 or stride < 1:
        raise ValueError(f"n_frames={n_frames} and stride={stride} must be >= 1")
    seg_start, seg_end = segment_bounds(frame_volume, same=(frame_clip, split))
    out = []
    for a, b in zip(seg_start, seg_end):
        if b - a < n_frames:
            continue
        s = np.arange(a, b - n_frames + 1, stride)
        if include_tail and s[-1] != b - n_frames:
            s = np.append(s, b - n_frames)
        out.append(s)
    return np.concatenate(out) if out else np.zeros(0, np.int64)


class EpochShuffle(Sampler[int]):
    """A random order of the windows per epoch, drawn from (seed, epoch) alone: a run resumed from
    an epoch's checkpoint sees the same order as an uninterrupted run (Lightning calls set_epoch)."""

    def __init__(self, n: int, seed: int | None = None):
        self.n = n
        self.seed = global_seed(default=0) if seed is None else seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


class _Windows(Dataset):
    """Map-style dataset of window starts; gathers tensors on CPU unless ``index_only``."""

    def __init__(
        self,
        starts: np.ndarray,
        store: dict[str, torch.Tensor] | None,
        n_frames: int,
        eeg_context: tuple[int, int] = (0, 0),
    ):
        self.starts = torch.as_tensor(starts, dtype=torch.long)
        self.store = store  # None: index-only (the GPU path gathers after transfer)
        self.n_frames = n_frames
        self.eeg_context = eeg_context

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int):
        s = int(self.starts[i])
        if self.store is None:
            return s
        return gather(self.store, torch.tensor([s]), self.n_frames, self.eeg_context, squeeze=True)


def context_rows(
    store: dict[str, torch.Tensor], starts: torch.Tensor, n_frames: int, eeg_context: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The cache rows (B, N) of the EEG windows of frames ``start - P .. start + K - 1 + F`` and
    whether each lies in the window's segment (B, N) (``store["segment"]``); rows outside the
    recording are clamped to it (and masked)."""
    before, after = eeg_context
    erows = starts[:, None] + torch.arange(-before, n_frames + after, device=starts.device)  # (B, N)
    inside = (erows >= 0) & (erows < store["eeg"].shape[0])  # (B, N)
    erows = erows.clamp(0, store["eeg"].shape[0] - 1)
    return erows, inside & (store["segment"][erows] == store["segment"][starts][:, None])  # (B, N), (B, N)


def gather(
    store: dict[str, torch.Tensor],
    starts: torch.Tensor,
    n_frames: int,
    eeg_context: tuple[int, int] = (0, 0),
    squeeze: bool = False,
    fmri_dtype: torch.dtype | None = torch.float32,
) -> dict:
    """Batch dict for windows starting at ``starts`` (B,), from tensors on any device.

    With ``eeg_context = (P, F)`` the EEG covers the frames ``start - P .. start + K - 1 + F``; a
    context frame outside the window's segment (``store["segment"]``) gets zeros and
    ``eeg_mask`` False. ``fmri`` comes in ``fmri_dtype`` (None: the store's own, float16 for a cache)."""
    rows = starts[:, None] + torch.arange(n_frames, device=starts.device)  # (B, K)
    if any(eeg_context):
        erows, mask = context_rows(store, starts, n_frames, eeg_context)  # (B, N), N = P + K + F
        eeg = store["eeg"][erows].float() * mask[..., None, None]  # (B, N, C, W)
    else:
        mask = torch.ones(rows.shape, dtype=torch.bool, device=starts.device)  # (B, K)
        eeg = store["eeg"][rows].float()  # (B, K, C, W)
    batch = {
        "eeg": eeg,  # (B, N, C, W)
        "eeg_mask": mask,  # (B, N)
        "fmri": store["fmri"][rows].to(fmri_dtype or store["fmri"].dtype),  # (B, K, V)
        "frame_index": rows,  # (B, K)
        "clip": store["frame_clip"][starts],  # (B,)
    }
    if "fmri_clean" in store:
        batch["fmri_clean"] = store["fmri_clean"][rows].float()  # (B, K, V)
    if squeeze:
        batch = {k: v[0] for k, v in batch.items()}
    return batch


class EEGfMRIDataModule(pl.LightningDataModule):
    def __init__(
        self,
        data_path: str = "data/prepared/sub_0001.h5",
        n_frames: int = 10,
        batch_size: int = 32,
        train_stride: int = 1,
        eval_stride: int | None = None,
        region: str = "whole",
        num_workers: int = 0,
        gpu_resident: bool = True,
        eval_batch_size: int | None = None,
        gpu_memory_fraction: float = 0.5,
        eeg_context: tuple[int, int] = (0, 0),
        train_fraction: float = 1.0,
    ):
        """
        Args:
            data_path: prepared cache (``eeg2fmri prepare``), one subject.
            n_frames: K, frames per window (TR 0.8 s each).
            batch_size: training windows per batch.
            train_stride: frames between consecutive training windows (1: sliding windows).
            eval_stride: frames between validation/test windows (default K: non-overlapping).
            region: grayordinates to model: ``whole``, ``V1``, ``V1+A1`` or a mask file.
            num_workers: DataLoader worker processes (CPU path only).
            gpu_resident: on CUDA, keep the whole subject on the GPU in 16 bit and gather there.
            eval_batch_size: windows per validation/test/predict batch (default batch_size).
            gpu_memory_fraction: the resident data may take at most this fraction of the GPU's free
                memory; beyond it batches are gathered in host memory and streamed (a warning says so).
            eeg_context: (P, F), EEG windows of P frames before and F frames after each K-frame
                window that come with the batch (within the clip's consecutive frames; missing
                ones are masked), so a model can see the EEG that drives the BOLD of its first
                frames (the hemodynamic response spans ~10 s). Linked into the model.
            train_fraction: train on the first training clips (in recording order) that hold this
                fraction of the training frames, for learning curves; the validation and test clips
                are unchanged. The other training clips are left out of everything, starts included.
        """
        super().__init__()
        check_positive(
            "--data.", n_frames=n_frames, batch_size=batch_size, train_stride=train_stride, eval_stride=eval_stride
        )
        check_positive("--data.", eval_batch_size=eval_batch_size)
        check_option("--data.num_workers", num_workers, num_workers >= 0, "an integer >= 0")
        check_option(
            "--data.gpu_memory_fraction", gpu_memory_fraction, 0 < gpu_memory_fraction <= 1, "a fraction in (0, 1]"
        )
        check_option("--data.train_fraction", train_fraction, 0 < train_fraction <= 1, "a fraction in (0, 1]")
        self.save_hyperparameters()
        self.data_path = Path(data_path)
        self.n_frames = n_frames
        self.eeg_context = tuple(int(c) for c in eeg_context)
        if len(self.eeg_context) != 2 or min(self.eeg_context) < 0:
            raise OptionError(f"eeg_context={list(eeg_context)}: expected [frames before, frames after], both >= 0")
        with open_cache(self.data_path) as h5:
            self.indices_all = h5["indices"][:]  # (V_file,) standard grayordinate index of each column
            self.columns = region_columns(region, self.indices_all)  # (V,) columns of the region
            self.n_chans = int(h5["eeg"].shape[1])
            self.n_times = int(h5["eeg"].shape[2])
            self.tr = float(h5.attrs.get("tr", 0.8))
            self.sfreq = float(h5.attrs.get("sfreq", 1000.0))
            self.ch_names = json.loads(h5.attrs.get("ch_names", "[]"))
            self.has_truth = "fmri_clean" in h5
            self.protocol = str(h5.attrs.get("protocol", "normalize=train; split=clips; detrend=none"))
        self.indices = self.indices_all[self.columns]  # (V,) standard index of each model column
        self.n_vertices = len(self.columns)
        self.store: dict[str, torch.Tensor] | None = None
        self._on_device = False

    # ---------------------------------------------------------------- loading
    def release(self) -> None:
        """Let go of the subject's tensors (a process that runs many commands, as ``reproduce`` does,
        must not keep each one's subject). The store dict is emptied in place, since every dataset
        this module made for a loader holds the same dict, and a loader outlives its command in
        Lightning's trainer; a later ``setup`` reads the cache again."""
        if self.store is not None:
            self.store.clear()
        self.store = None

    def setup(self, stage: str | None = None) -> None:
        # the noise-free BOLD (simulated data) serves the noise ceiling at test time only: training
        # does not hold it (at paper scale it is another 4.9 GB in memory or on the GPU)
        want_truth = self.has_truth and stage not in ("fit",)
        if self.store is not None:
            if want_truth and "fmri_clean" not in self.store:
                with open_cache(self.data_path) as h5:
                    clean = torch.from_numpy(_read_columns(h5["fmri_clean"], self._column_sel(h5)))
                self.store["fmri_clean"] = clean.to(self.store["fmri"].device)
            return
        with open_cache(self.data_path) as h5:
            whole = len(self.columns) == h5["fmri"].shape[1]
            _refuse_what_does_not_fit(self.data_path, h5, len(self.columns), want_truth)
            self.frame_clip = h5["frame_clip"][:].astype(np.int64)
            self.frame_volume = h5["frame_volume"][:].astype(np.int64)
            self.frame_run = (
                h5["frame_run"][:].astype(np.int64) if "frame_run" in h5 else np.zeros_like(self.frame_clip)
            )
            self.split = first_training_clips(
                h5["split"][:].astype(np.int64), self.frame_clip, self.hparams.train_fraction
            )
            store = {
                "fmri": torch.from_numpy(_read_columns(h5["fmri"], None if whole else self.columns)),
                "eeg": torch.from_numpy(h5["eeg"][:]),
                "frame_clip": torch.from_numpy(self.frame_clip),
                "segment": torch.from_numpy(segment_ids(self.frame_volume, same=(self.frame_clip, self.split))),
            }
            if want_truth:
                store["fmri_clean"] = torch.from_numpy(_read_columns(h5["fmri_clean"], None if whole else self.columns))
            self.fmri_mean = h5["fmri_mean"][:][self.columns] if "fmri_mean" in h5 else None
            self.fmri_std = h5["fmri_std"][:][self.columns] if "fmri_std" in h5 else None
            self.run_files = (
                [s.decode() if isinstance(s, bytes) else s for s in h5["run_files"][:]] if "run_files" in h5 else []
            )
            self.run_numbers = h5["run_numbers"][:].tolist() if "run_numbers" in h5 else []
            self.run_n_volumes = h5["run_n_volumes"][:].tolist() if "run_n_volumes" in h5 else []
        for key in ("fmri", "eeg"):
            _refuse_non_finite(self.data_path, key, store[key], self.indices)
        self.store = store
        es = self.hparams.eval_stride or self.n_frames
        self.windows = {
            "train": self._windows("train", self.hparams.train_stride),
            "val": self._windows("val", es),
            "test": self._windows("test", es),
            "predict": self._windows("test", es, include_tail=True),
        }

    def _windows(self, split: str, stride: int, include_tail: bool = False) -> np.ndarray:
        code = SPLITS[split]
        sel = np.flatnonzero(self.split == code)
        if len(sel) == 0:
            raise CacheError(
                f"{self.data_path}: split {split!r} is empty; re-run prepare with a val/test fraction that leaves "
                "every split at least one clip"
            )
        starts = window_starts(self.frame_clip, self.frame_volume, self.split, self.n_frames, stride, include_tail)
        starts = starts[self.split[starts] == code]
        if len(starts) == 0:
            longest = _longest_segment(self.frame_clip[sel], self.frame_volume[sel])
            raise CacheError(
                f"{self.data_path}: n_frames={self.n_frames} is longer than every clip of split {split!r} "
                f"(longest: {longest} consecutive frames); choose n_frames <= {longest}"
            )
        return starts

    def _column_sel(self, h5) -> np.ndarray | None:
        return None if len(self.columns) == h5["fmri"].shape[1] else self.columns

    # ---------------------------------------------------------------- loaders
    def _use_device_path(self) -> bool:
        trainer = getattr(self, "trainer", None)
        if not self.hparams.gpu_resident or trainer is None:
            return False
        return trainer.strategy.root_device.type == "cuda"

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        assert self.store is not None, "call setup() first"
        index_only = self._use_device_path()
        ds = _Windows(self.windows[split], None if index_only else self.store, self.n_frames, self.eeg_context)
        bs = self.hparams.batch_size if split == "train" else (self.hparams.eval_batch_size or self.hparams.batch_size)
        workers = 0 if index_only else self.hparams.num_workers
        sampler = None
        trainer = getattr(self, "trainer", None)
        if shuffle and (trainer is None or trainer.world_size == 1):
            sampler = EpochShuffle(len(ds))  # (under DDP Lightning's DistributedSampler shuffles per epoch)
        elif split != "train" and trainer is not None and trainer.world_size > 1:
            # evaluation windows split across ranks without the padding (repeated windows) of
            # Lightning's default DistributedSampler, so metrics do not depend on the rank count
            sampler = UnrepeatedDistributedSampler(
                ds, num_replicas=trainer.world_size, rank=trainer.global_rank, shuffle=False
            )
        return DataLoader(
            ds,
            batch_size=bs,
            shuffle=shuffle and sampler is None,
            sampler=sampler,
            num_workers=workers,
            drop_last=split == "train" and len(ds) > bs,
            persistent_workers=workers > 0,
            # index-only batches in pinned memory: their copy to the GPU is asynchronous (from pageable
            # memory it would wait for the stream, i.e. a host sync every step)
            pin_memory=index_only,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict", shuffle=False)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        if isinstance(batch, torch.Tensor):  # index-only batch: gather on the device
            if not self._on_device:
                self._move_store(batch.device)
            if self.store["fmri"].device != batch.device:  # streaming fallback: gather here, then copy
                out = gather(self.store, batch.to(self.store["fmri"].device), self.n_frames, self.eeg_context)
                return {k: v.to(batch.device, non_blocking=True) for k, v in out.items()}
            return gather(self.store, batch, self.n_frames, self.eeg_context)
        return batch

    def _move_store(self, device: torch.device) -> None:
        """Put the subject on the GPU if it fits (leaving room for the model), else keep it in host
        memory and gather there, with a warning, instead of failing with an out-of-memory error."""
        self._on_device = True
        need = sum(v.numel() * v.element_size() for v in self.store.values())
        if device.type == "cuda":
            free, total = torch.cuda.mem_get_info(device)
            if need > self.hparams.gpu_memory_fraction * free:
                log.warning(
                    "%s needs %.2f GiB on %s but only %.2f GiB of %.2f GiB are free (gpu_memory_fraction=%.2f); "
                    "keeping the data in host memory and streaming batches (slower)",
                    self.data_path,
                    need / 2**30,
                    device,
                    free / 2**30,
                    total / 2**30,
                    self.hparams.gpu_memory_fraction,
                )
                if torch.cuda.is_available():  # pinned host memory: asynchronous copies to the GPU
                    self.store = {k: v.pin_memory() for k, v in self.store.items()}
                return
        self.store = {k: v.to(device, non_blocking=True) for k, v in self.store.items()}

    def train_frames_sample(self, n: int, seed: int = 0) -> torch.Tensor:
        """fMRI of ``n`` training frames (all of them if fewer) drawn without replacement by
        ``numpy.random.default_rng(seed)``, in cache order: (n, V) in the stored dtype, where the
        data module keeps the data. The same frames on every process, so a model's start from them
        (PCA) is the same on every DDP replica."""
        assert self.store is not None, "call setup() first"
        train = np.flatnonzero(self.split == SPLITS["train"])
        rows = np.sort(np.random.default_rng(seed).choice(train, size=min(len(train), n), replace=False))
        fmri = self.store["fmri"]
        return fmri[torch.as_tensor(rows, device=fmri.device)]  # (n, V)

    def iter_frames(
        self,
        split: str,
        batch_size: int = 64,
        device: torch.device | None = None,
        eeg: Literal["context", "frame", "rows", "none"] = "context",
        stored_dtype: bool = False,
    ):
        """Every frame of ``split`` once, in cache order, as batches of one-frame windows: ``fmri``
        (b, 1, V) (float32, or the store's own dtype with ``stored_dtype``: float16 halves the memory
        of a caller that keeps the frames), ``frame_index`` (b, 1) and, as ``eeg`` asks, the EEG:
        ``"context"``: ``eeg`` (b, P + 1 + F, C, W) with the EEG context and ``eeg_mask``;
        ``"frame"``: the frame's own window (b, 1, C, W); ``"rows"``: no EEG, but the cache rows of
        the context's windows ``eeg_rows`` (b, P + 1 + F) with ``eeg_mask``, for a caller that
        computes each window's features once rather than once per frame whose context holds it
        (P + F + 1 times); ``"none"``: the fMRI alone. For models that start from statistics of the
        data (PCA, ridge), without knowing the store."""
        assert self.store is not None, "call setup() first"
        rows = torch.as_tensor(np.flatnonzero(self.split == SPLITS[split]), dtype=torch.long)
        where = self.store["fmri"].device
        for s in range(0, len(rows), batch_size):
            r = rows[s : s + batch_size].to(where)  # (b,)
            if eeg in ("context", "frame"):
                context = self.eeg_context if eeg == "context" else (0, 0)
                batch = gather(self.store, r, 1, context, fmri_dtype=None if stored_dtype else torch.float32)
            else:
                fmri = self.store["fmri"][r][:, None]  # (b, 1, V) stored dtype
                batch = {"fmri": fmri if stored_dtype else fmri.float(), "frame_index": r[:, None]}
                if eeg == "rows":
                    batch["eeg_rows"], batch["eeg_mask"] = context_rows(self.store, r, 1, self.eeg_context)
            yield {k: v.to(device, non_blocking=True) for k, v in batch.items()} if device is not None else batch

    # ---------------------------------------------------------------- facts for the model and writers
    def preprocessing(self) -> dict:
        """What a checkpoint needs to preprocess new data like this cache (plain types + arrays)."""
        with open_cache(self.data_path) as h5:
            return {
                "options": json.loads(h5.attrs.get("options", "{}")),
                "tr": self.tr,
                "sfreq": self.sfreq,
                "n_times": self.n_times,
                "ch_names": self.ch_names,
                "eeg_center": torch.as_tensor(h5["eeg_center"][:]),
                "eeg_scale": torch.as_tensor(h5["eeg_scale"][:]),
                "fmri_mean": torch.as_tensor(h5["fmri_mean"][:][self.columns]),
                "fmri_std": torch.as_tensor(h5["fmri_std"][:][self.columns]),
                "grayordinates": torch.as_tensor(self.indices),
                "region": self.hparams.region,
                "subject": str(h5.attrs.get("subject", "")),
            }

    def describe(self) -> dict:
        return {
            "data_path": str(self.data_path),
            "n_frames": self.n_frames,
            "n_vertices": self.n_vertices,
            "n_chans": self.n_chans,
            "n_times": self.n_times,
            "tr": self.tr,
            "region": self.hparams.region,
            "eeg_context": list(self.eeg_context),
        }


def available_memory() -> int | None:
    """Bytes of host memory the system can give without swapping (Linux's MemAvailable), else None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _refuse_what_does_not_fit(path: Path, h5: h5py.File, n_columns: int, truth: bool) -> None:
    """Refuse, before reading, a subject whose frames and EEG (what the data module holds in host
    memory) need more than the memory available, with the estimate and the options that lower it."""
    fmri, eeg = h5["fmri"], h5["eeg"]
    parts = {"fMRI": fmri.shape[0] * n_columns * fmri.dtype.itemsize, "EEG": eeg.size * eeg.dtype.itemsize}
    if truth:
        parts["noise-free BOLD"] = parts["fMRI"]
    need, have = sum(parts.values()), available_memory()
    if have is None or need <= have:
        return
    gib = 2**30
    detail = ", ".join(f"{k} {v / gib:.1f}" for k, v in parts.items())
    raise CacheError(
        f"{path}: this subject needs {need / gib:.1f} GiB of host memory ({detail} GiB: {fmri.shape[0]} frames x "
        f"{n_columns} grayordinates) and {have / gib:.1f} GiB are available. Lower it with --data.region (a region "
        "or a mask of grayordinates), or prepare a grayordinate subset (simulate --grayordinates every:N) or fewer runs"
    )


def first_training_clips(split: np.ndarray, frame_clip: np.ndarray, fraction: float) -> np.ndarray:
    """``split`` (frames,) with the training clips after the first ones that hold ``fraction`` of the
    training frames marked -1 (in no split). Clips are taken whole, in order of their first frame, until
    their frames reach the fraction (at least one clip)."""
    if fraction >= 1:
        return split
    train = split == SPLITS["train"]
    clips, first, counts = np.unique(frame_clip[train], return_index=True, return_counts=True)
    order = np.argsort(first)  # recording order
    cum = np.cumsum(counts[order])  # (n_clips,)
    n_keep = int(np.searchsorted(cum, fraction * cum[-1])) + 1
    dropped = np.isin(frame_clip, clips[order][n_keep:]) & train
    out = split.copy()
    out[dropped] = -1
    return out


def _read_columns(dset: h5py.Dataset, columns: np.ndarray | None, block: int = 1024) -> np.ndarray:
    """Read a (T, V) dataset, optionally only some columns, in row blocks (bounded memory)."""
    if columns is None:
        return dset[:]
    out = np.empty((dset.shape[0], len(columns)), dset.dtype)
    for s in range(0, dset.shape[0], block):
        out[s : s + block] = dset[s : s + block][:, columns]
    return out


def _longest_segment(frame_clip: np.ndarray, frame_volume: np.ndarray) -> int:
    if len(frame_clip) == 0:
        return 0
    return int(np.bincount(segment_ids(frame_volume, same=(frame_clip,))).max())
