"""The raw subject folder in the CineBrain layout: discover runs, read behaviour CSVs and EEG.

A subject folder (``sub_0001`` for subject 1; see data/README.md)::

    sub_0001/dtseries/sub-0001_task-shape_run-<r>_space-fsLR_den-91k_bold.dtseries.nii
    sub_0001/beh_data/sub_0001_<r>.csv          videoStartTime, videoStopTime [, clip]  (seconds)
    sub_0001/eeg/sub-0001_task-shape_run-<r>_eeg.npy + .json   (or .vhdr / .edf / .set / .fif)
    sub_0001/truth/sub-0001_task-shape_run-<r>_space-fsLR_den-91k_desc-noisefree_bold.dtseries.nii
                                                 (simulator only: the noise-free BOLD)

Times in the behaviour CSV are seconds from the onset of the run's first fMRI volume. EEG and fMRI
are aligned through the onset sample of every fMRI volume (scanner triggers, ``volume_onsets`` in the
JSON sidecar or the ``volume_marker`` annotations of an MNE-readable file); without triggers the
EEG's first sample is taken as the first volume's onset.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from eeg2fmri.errors import EEG2fMRIError

# The 64 scalp channels of the BrainProducts actiCAP 64 layout (10-10 system), the montage of
# CineBrain-style recordings. Order here is the canonical order of the prepared cache.
CHANNELS_64: tuple[str, ...] = (
    "Fp1", "Fp2", "F7", "F3", "Fz", "F4", "F8", "FC5", "FC1", "FC2", "FC6", "T7", "C3", "Cz",
    "C4", "T8", "TP9", "CP5", "CP1", "CP2", "CP6", "TP10", "P7", "P3", "Pz", "P4", "P8", "PO9",
    "O1", "Oz", "O2", "PO10", "AF7", "AF3", "AF4", "AF8", "F5", "F1", "F2", "F6", "FT9", "FT7",
    "FC3", "FC4", "FT8", "FT10", "C5", "C1", "C2", "C6", "TP7", "CP3", "CPz", "CP4", "TP8", "P5",
    "P1", "P2", "P6", "PO7", "PO3", "POz", "PO4", "PO8",
)  # fmt: skip

EEG_SUFFIXES = (".npy", ".vhdr", ".edf", ".bdf", ".set", ".fif")


class RawDataError(EEG2fMRIError):
    """A raw file that cannot be used; the message names the file, the field and what was expected."""


def subject_dirname(subject: int) -> str:
    return f"sub_{subject:04d}"


def fmri_path(root: Path, subject: int, run: int) -> Path:
    return Path(root) / subject_dirname(subject) / "dtseries" / (
        f"sub-{subject:04d}_task-shape_run-{run}_space-fsLR_den-91k_bold.dtseries.nii"
    )


def truth_path(root: Path, subject: int, run: int) -> Path:
    return Path(root) / subject_dirname(subject) / "truth" / (
        f"sub-{subject:04d}_task-shape_run-{run}_space-fsLR_den-91k_desc-noisefree_bold.dtseries.nii"
    )


def beh_path(root: Path, subject: int, run: int) -> Path:
    return Path(root) / subject_dirname(subject) / "beh_data" / f"sub_{subject:04d}_{run}.csv"


def eeg_stem(root: Path, subject: int, run: int) -> Path:
    return Path(root) / subject_dirname(subject) / "eeg" / f"sub-{subject:04d}_task-shape_run-{run}_eeg"


@dataclass
class Clip:
    """One movie clip: [start, stop) in seconds from the run's first volume onset."""

    name: str
    start: float
    stop: float


@dataclass
class EEGRecording:
    data: np.ndarray  # (n_chans, n_samples) float32, volts or microvolts (any unit: scaled later)
    sfreq: float  # Hz
    ch_names: list[str]
    volume_onsets: np.ndarray | None  # (n_volumes,) sample index of each fMRI volume onset
    path: Path


@dataclass
class Run:
    subject: int
    run: int
    fmri: Path
    beh: Path
    eeg: Path
    truth: Path | None = None
    clips: list[Clip] = field(default_factory=list)


def discover_runs(subject_dir: Path) -> list[Run]:
    """All runs of a subject folder, sorted by run number. A run needs its fMRI, behaviour CSV and
    EEG; a missing piece is an error naming it (never a silently dropped run)."""
    subject_dir = Path(subject_dir)
    if not subject_dir.is_dir():
        raise RawDataError(f"{subject_dir}: subject folder not found (expected e.g. data/raw/sub_0001)")
    m = re.fullmatch(r"sub_(\d+)", subject_dir.name)
    if not m:
        raise RawDataError(f"{subject_dir}: subject folder must be named sub_<NNNN> (e.g. sub_0001)")
    subject, root = int(m.group(1)), subject_dir.parent
    pattern = re.compile(rf"sub-{subject:04d}_task-\w+?_run-(\d+)_space-fsLR_den-91k_bold\.dtseries\.nii")
    found = {}
    for p in sorted((subject_dir / "dtseries").glob("*.dtseries.nii")):
        mm = pattern.fullmatch(p.name)
        if mm:
            found[int(mm.group(1))] = p
    if not found:
        raise RawDataError(
            f"{subject_dir / 'dtseries'}: no run found; expected files named "
            f"sub-{subject:04d}_task-shape_run-<r>_space-fsLR_den-91k_bold.dtseries.nii"
        )
    runs = []
    for r in sorted(found):
        beh = beh_path(root, subject, r)
        if not beh.exists():
            raise RawDataError(f"run {r}: behaviour file {beh} is missing (fMRI {found[r].name} exists)")
        stem = eeg_stem(root, subject, r)
        eeg = next((stem.with_name(stem.name + s) for s in EEG_SUFFIXES if stem.with_name(stem.name + s).exists()), None)
        if eeg is None:
            raise RawDataError(
                f"run {r}: EEG file missing: expected {stem}.npy (+ .json) or one of "
                f"{', '.join(EEG_SUFFIXES[1:])}"
            )
        truth = truth_path(root, subject, r)
        runs.append(Run(subject, r, found[r], beh, eeg, truth if truth.exists() else None, read_clips(beh)))
    gaps = sorted(set(range(1, max(found) + 1)) - set(found))
    if gaps:
        raise RawDataError(
            f"{subject_dir / 'dtseries'}: run(s) {gaps} missing between runs 1 and {max(found)}; "
            "restore them or renumber the runs"
        )
    return runs


def read_clips(path: Path) -> list[Clip]:
    """Movie clips of a run from its behaviour CSV (``videoStartTime`` / ``videoStopTime`` in seconds;
    optional ``clip`` names the clip, else ``<file>:<row>``)."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise RawDataError(f"{path}: cannot be read as CSV ({e})") from e
    if not rows or "videoStartTime" not in rows[0] or "videoStopTime" not in rows[0]:
        raise RawDataError(f"{path}: expected columns videoStartTime and videoStopTime (seconds) and at least one row")
    clips = []
    for i, row in enumerate(rows):
        try:
            start, stop = float(row["videoStartTime"]), float(row["videoStopTime"])
        except (TypeError, ValueError):
            raise RawDataError(
                f"{path}, row {i + 1}: videoStartTime={row['videoStartTime']!r}, "
                f"videoStopTime={row['videoStopTime']!r}; expected numbers (seconds)"
            ) from None
        if not (np.isfinite(start) and np.isfinite(stop) and 0 <= start < stop):
            raise RawDataError(f"{path}, row {i + 1}: expected 0 <= videoStartTime < videoStopTime, got {start}, {stop}")
        clips.append(Clip(row.get("clip") or f"{path.stem}:{i}", start, stop))
    return clips


def read_eeg(path: Path, volume_marker: str = "R128") -> EEGRecording:
    """Read one run's EEG. ``.npy`` (n_chans, n_samples) with a JSON sidecar {sfreq, ch_names,
    volume_onsets?}; BrainVision / EDF / BDF / EEGLAB / FIF through MNE (``pip install eeg2fmri[mne]``),
    volume onsets from annotations whose description contains ``volume_marker``."""
    path = Path(path)
    if path.suffix == ".npy":
        return _read_npy_eeg(path)
    try:
        import mne
    except ImportError:
        raise RawDataError(
            f"{path}: reading {path.suffix} EEG needs MNE-Python; install it with `pip install eeg2fmri[mne]` "
            "or convert the recording to .npy + .json (see data/README.md)"
        ) from None
    try:
        raw = mne.io.read_raw(path, preload=True, verbose="error")
    except Exception as e:
        raise RawDataError(f"{path}: MNE cannot read this EEG file ({e})") from e
    raw.pick("eeg")
    marks = [a["onset"] for a in raw.annotations if volume_marker in a["description"]]
    onsets = raw.time_as_index(marks, use_rounding=True) if marks else []
    return EEGRecording(
        data=raw.get_data().astype(np.float32),
        sfreq=float(raw.info["sfreq"]),
        ch_names=list(raw.ch_names),
        volume_onsets=np.asarray(onsets, np.int64) if onsets else None,
        path=path,
    )


def _read_npy_eeg(path: Path) -> EEGRecording:
    side = path.with_suffix(".json")
    if not side.exists():
        raise RawDataError(f"{path}: JSON sidecar {side.name} missing (expected keys sfreq, ch_names[, volume_onsets])")
    try:
        meta = json.loads(side.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise RawDataError(f"{side}: not valid JSON ({e})") from e
    for key in ("sfreq", "ch_names"):
        if key not in meta:
            raise RawDataError(f"{side}: field {key!r} missing (expected sfreq in Hz and ch_names, a list of channel names)")
    try:
        data = np.load(path, mmap_mode="r")
    except Exception as e:
        raise RawDataError(f"{path}: cannot be read as a .npy array (truncated or corrupt? {e})") from e
    if data.ndim != 2 or data.shape[0] != len(meta["ch_names"]):
        raise RawDataError(
            f"{path}: array has shape {data.shape}; expected (n_chans, n_samples) with n_chans = "
            f"{len(meta['ch_names'])} channel names in {side.name}"
        )
    if not np.issubdtype(data.dtype, np.floating) and not np.issubdtype(data.dtype, np.integer):
        raise RawDataError(f"{path}: dtype {data.dtype}; expected a float or integer array")
    if data.shape[1] == 0:
        raise RawDataError(f"{path}: EEG has 0 samples; expected a recording that covers the run")
    onsets = meta.get("volume_onsets")
    return EEGRecording(
        data=data,
        sfreq=float(meta["sfreq"]),
        ch_names=[str(c) for c in meta["ch_names"]],
        volume_onsets=None if onsets is None else np.asarray(onsets, np.int64),
        path=path,
    )


def write_npy_eeg(stem: Path, data: np.ndarray, sfreq: float, ch_names, volume_onsets=None) -> Path:
    """Write EEG in the plain layout (.npy + JSON sidecar), each file atomically."""
    from eeg2fmri.data.cifti import atomic_save, atomic_write_text

    stem = Path(stem)
    npy = stem.with_name(stem.name + ".npy")
    meta = {"sfreq": float(sfreq), "ch_names": list(ch_names), "unit": "uV"}
    if volume_onsets is not None:
        meta["volume_onsets"] = [int(v) for v in volume_onsets]
    def save_npy(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.save(f, np.asarray(data, np.float32))

    atomic_save(npy, save_npy)
    atomic_write_text(npy.with_suffix(".json"), json.dumps(meta))
    return npy
