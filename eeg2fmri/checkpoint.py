"""Checkpoint files: the format version, a clear error for a file that is not a checkpoint, and
the atomic writer that keeps resume state in ``last.ckpt`` alone.

The CLI names :class:`AtomicCheckpointIO` by class path in the trainer's defaults
(``eeg2fmri.checkpoint.AtomicCheckpointIO``), so the saved ``config.yaml`` can name it.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from eeg2fmri.data.cifti import atomic_save
from eeg2fmri.errors import EEG2fMRIError

CHECKPOINT_FORMAT = 2  # bump when a checkpoint of the previous format can no longer be loaded

# what only resuming needs; every checkpoint but the resume point is written without it
RESUME_KEYS = ("optimizer_states", "lr_schedulers", "callbacks", "current_model_state", "averaging_state")


class CheckpointVersionError(EEG2fMRIError):
    """A checkpoint written by an incompatible version of eeg2fmri (or by another program)."""


def check_checkpoint_file(path) -> dict:
    """A clear error for a checkpoint path that is missing or not a readable checkpoint, before
    Lightning or torch meet it; returns the checkpoint (memory-mapped) when it is one."""
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


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint writer, but through a temporary file renamed over the target:
    a run killed while writing leaves the previous checkpoint intact, never a truncated one.

    Only the resume point (``last.ckpt``) keeps what resuming needs: optimizer and scheduler state,
    callback state, and under EMA the current (non-averaged) weights beside the average. Every other
    checkpoint (``best.ckpt``) is written with the weights only: ``state_dict`` (the EMA average when
    EMA is on), hyperparameters and the data's preprocessing; about a quarter of the size under EMA
    with AdamW. Lightning's ``ModelCheckpoint(save_weights_only=True)`` does not do this: it skips
    the callbacks' checkpoint hooks, so under EMA it would store the non-averaged weights.

    Args:
        resume_files: file names written whole (resumable); every other checkpoint is weights only.
    """

    def __init__(self, resume_files: tuple[str, ...] = ("last.ckpt",)):
        super().__init__()
        self.resume_files = tuple(resume_files)

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options}")
        if Path(path).name not in self.resume_files:
            checkpoint = {k: v for k, v in checkpoint.items() if k not in RESUME_KEYS}

        def write(tmp: str) -> None:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())

        atomic_save(path, write)
