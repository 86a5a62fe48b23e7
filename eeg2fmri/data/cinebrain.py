"""The raw subject folder in the CineBrain layout: discover runs, read behaviour CSVs and EEG.

A subject folder (``sub_0001`` or ``sub-0001`` for subject 1; see data/README.md)::

    sub_0001/dtseries/sub-0001_task-<task>_run-<r>_space-fsLR_den-91k_bold.dtseries.nii
    sub_0001/beh_data/sub_0001_<r>.csv          videoStartTime, videoStopTime [, clip]  (seconds)
    sub_0001/eeg/sub-0001_task-<task>_run-<r>_eeg.npy + .json   (or .vhdr / .edf / .set / .fif)
    sub_0001/truth/sub-0001_task-<task>_run-<r>_space-fsLR_den-91k_desc-noisefree_bold.dtseries.nii
                                                 (simulator only: the noise-free BOLD)

The task is each run's fMRI file's own (the EEG and the noise-free BOLD follow it). Times in the
behaviour CSV are seconds from the onset of the run's first fMRI volume. EEG and fMRI are aligned
through the onset sample of every fMRI volume (scanner triggers: ``volume_onsets`` (samples) or
``volume_onsets_s`` (seconds) in the JSON sidecar, or the ``volume_marker`` annotations of an
MNE-readable file); without triggers the EEG's first sample is taken as the first volume's onset.
EEG already cut into one window per frame (the CineBrain release, imported by
``eeg2fmri import-cinebrain``) is a 3-D ``.npy`` whose sidecar names each window's volume
(``window_volumes``).
"""

from __future__ import annotations

import csv
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from eeg2fmri.errors import EEG2fMRIError

log = logging.getLogger(__name__)

# The 64 scalp channels of the BrainProducts actiCAP 64 layout (10-10 system), the montage of
# CineBrain-style recordings. Order here is the canonical order of the prepared cache.
CHANNELS_64: tuple[str, ...] = (
    "Fp1",
    "Fp2",
    "F7",
    "F3",
    "Fz",
    "F4",
    "F8",
    "FC5",
    "FC1",
    "FC2",
    "FC6",
    "T7",
    "C3",
    "Cz",
    "C4",
    "T8",
    "TP9",
    "CP5",
    "CP1",
    "CP2",
    "CP6",
    "TP10",
    "P7",
    "P3",
    "Pz",
    "P4",
    "P8",
    "PO9",
    "O1",
    "Oz",
    "O2",
    "PO10",
    "AF7",
    "AF3",
    "AF4",
    "AF8",
    "F5",
    "F1",
    "F2",
    "F6",
    "FT9",
    "FT7",
    "FC3",
    "FC4",
    "FT8",
    "FT10",
    "C5",
    "C1",
    "C2",
    "C6",
    "TP7",
    "CP3",
    "CPz",
    "CP4",
    "TP8",
    "P5",
    "P1",
    "P2",
    "P6",
    "PO7",
    "PO3",
    "POz",
    "PO4",
    "PO8",
)

EEG_SUFFIXES = (".npy", ".vhdr", ".edf", ".bdf", ".set", ".fif")


class RawDataError(EEG2fMRIError):
    """A raw file that cannot be used; the message names the file, the field and what was expected."""


def subject_dirname(subject: int) -> str:
    return f"sub_{subject:04d}"


def fmri_path(root: Path, subject: int, run: int, task: str = "shape") -> Path:
    return (
        Path(root)
        / subject_dirname(subject)
        / "dtseries"
        / (f"sub-{subject:04d}_task-{task}_run-{run}_space-fsLR_den-91k_bold.dtseries.nii")
    )


def truth_path(root: Path, subject: int, run: int, task: str = "shape") -> Path:
    return (
        Path(root)
        / subject_dirname(subject)
        / "truth"
        / (f"sub-{subject:04d}_task-{task}_run-{run}_space-fsLR_den-91k_desc-noisefree_bold.dtseries.nii")
    )


def beh_path(root: Path, subject: int, run: int) -> Path:
    return Path(root) / subject_dirname(subject) / "beh_data" / f"sub_{subject:04d}_{run}.csv"


def eeg_stem(root: Path, subject: int, run: int, task: str = "shape") -> Path:
    return Path(root) / subject_dirname(subject) / "eeg" / f"sub-{subject:04d}_task-{task}_run-{run}_eeg"


_TASK = re.compile(r"(?:^|_)task-([A-Za-z0-9]+)(?:_|$)")


def bids_task(name: str) -> str | None:
    """The ``task-<label>`` entity of a BIDS-style file name (``sub-0001_task-movie_run-1_...``)."""
    m = _TASK.search(Path(name).name)
    return m.group(1) if m else None


def read_ch_names(value: str | list[str] | tuple[str, ...] | None, default: tuple[str, ...] = ()) -> tuple[str, ...]:
    """Channel names from a list, or from a text file of one name per line (blank lines and lines
    starting with ``#`` skipped; a single line of comma-separated names works too)."""
    if value is None or (not isinstance(value, str) and len(value) == 0):
        return tuple(default)
    if not isinstance(value, str):
        return tuple(str(c).strip() for c in value)
    path = Path(value)
    if not path.is_file():
        raise RawDataError(
            f"ch_names={value!r}: expected a list of channel names (--ch_names [Fp1,Fp2,...]) or a text file "
            "with one name per line; no such file"
        )
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise RawDataError(f"{path}: cannot be read as a text file of channel names ({e})") from None
    names = [c.strip() for line in lines if line.strip() and not line.lstrip().startswith("#") for c in line.split(",")]
    names = [c for c in names if c]
    if not names:
        raise RawDataError(f"{path}: no channel name found; expected one name per line")
    return tuple(names)


@dataclass
class Clip:
    """One movie clip: [start, stop) in seconds from the run's first volume onset."""

    name: str
    start: float
    stop: float


@dataclass
class EEGRecording:
    """One run's EEG. A continuous recording has ``volume_onsets`` (or none: volume k at k TR);
    EEG cut into one window per frame has ``window_volumes`` instead, and ``data`` is then the
    windows side by side (window i is ``data[:, i * n_times : (i + 1) * n_times]``)."""

    data: np.ndarray  # (n_chans, n_samples) float32, volts or microvolts (any unit: scaled later)
    sfreq: float  # Hz
    ch_names: list[str]
    volume_onsets: np.ndarray | None  # (n_volumes,) sample index of each fMRI volume onset
    path: Path
    window_volumes: np.ndarray | None = None  # (n_windows,) 0-based fMRI volume each window pairs with
    window_shift_s: float | None = None  # the hemodynamic shift the windows were paired with, seconds

    @property
    def windowed(self) -> bool:
        return self.window_volumes is not None


@dataclass
class Run:
    subject: int
    run: int
    fmri: Path
    beh: Path
    eeg: Path
    truth: Path | None = None
    clips: list[Clip] = field(default_factory=list)
    task: str = "shape"  # the fMRI file's task; the EEG and the noise-free BOLD follow it


_WARNED: set[str] = set()  # files already warned about (one warning per file and process)


def fmri_name(subject: int) -> re.Pattern:
    """The fMRI file name of a subject's runs (fMRIPrep's CIFTI output): groups task and run."""
    return re.compile(rf"sub-{subject:04d}_task-([A-Za-z0-9]+)_run-(\d+)_space-fsLR_den-91k_bold\.dtseries\.nii")


def discover_runs(subject_dir: Path) -> list[Run]:
    """All runs of a subject folder, sorted by run number. A run needs its fMRI, behaviour CSV and
    EEG; a missing piece is an error naming it (never a silently dropped run). Each run's task is its
    fMRI file's; its EEG and noise-free BOLD are looked up under that task."""
    subject_dir = Path(subject_dir)
    if not subject_dir.is_dir():
        raise RawDataError(f"{subject_dir}: subject folder not found (expected e.g. data/raw/sub_0001)")
    m = re.fullmatch(r"sub[_-](\d+)", subject_dir.name)
    if not m:
        raise RawDataError(f"{subject_dir}: subject folder must be named sub_<NNNN> or sub-<NNNN> (e.g. sub_0001)")
    subject = int(m.group(1))
    found = _fmri_runs(subject_dir, subject)
    eeg_dir = subject_dir / "eeg"
    if not eeg_dir.is_dir():
        release = [p.name for p in subject_dir.iterdir() if p.name.startswith("EEG_preprocessed_data")]
        if release:
            raise RawDataError(
                f"{subject_dir}: no eeg/ folder but {release[0]}: this is a subject of the CineBrain release "
                f"(EEG cut into per-frame windows). Import it first: eeg2fmri import-cinebrain --release_dir "
                f"{subject_dir.parent} --subjects [{subject}] --out_dir data/raw, then prepare data/raw/sub_{subject:04d}"
            )
    runs = []
    for r in sorted(found):
        fmri, task = found[r]
        beh = subject_dir / "beh_data" / f"sub_{subject:04d}_{r}.csv"
        if not beh.exists():
            raise RawDataError(f"run {r}: behaviour file {beh} is missing (fMRI {fmri.name} exists)")
        eeg = _run_eeg(eeg_dir, subject, task, r)
        truth = _run_truth(subject_dir, subject, task, r)
        runs.append(Run(subject, r, fmri, beh, eeg, truth, read_clips(beh), task=task))
    gaps = sorted(set(range(1, max(found) + 1)) - set(found))
    if gaps:
        raise RawDataError(
            f"{subject_dir / 'dtseries'}: run(s) {gaps} missing between runs 1 and {max(found)}; "
            "restore them or renumber the runs"
        )
    return runs


def _fmri_runs(subject_dir: Path, subject: int) -> dict[int, tuple[Path, str]]:
    """run -> (fMRI file, its task) of the files in ``dtseries/``; two files for one run are an error."""
    pattern = fmri_name(subject)
    found: dict[int, tuple[Path, str]] = {}
    for p in sorted((subject_dir / "dtseries").glob("*.dtseries.nii")):
        mm = pattern.fullmatch(p.name)
        if not mm:
            continue
        r = int(mm.group(2))
        if r in found:
            raise RawDataError(
                f"{subject_dir / 'dtseries'}: run {r} has two fMRI files, {found[r][0].name} and {p.name}; "
                "expected one per run (move the other task's files to another subject folder)"
            )
        found[r] = (p, mm.group(1))
    if not found:
        raise RawDataError(
            f"{subject_dir / 'dtseries'}: no run found; expected files named "
            f"sub-{subject:04d}_task-<task>_run-<r>_space-fsLR_den-91k_bold.dtseries.nii"
        )
    return found


def _run_eeg(eeg_dir: Path, subject: int, task: str, r: int) -> Path:
    """The EEG file of run ``r`` under the fMRI's task (the first of ``EEG_SUFFIXES`` present); a
    missing one is an error that names any EEG of the run under another task."""
    stem = eeg_dir / f"sub-{subject:04d}_task-{task}_run-{r}_eeg"
    eeg = next((stem.with_name(stem.name + s) for s in EEG_SUFFIXES if stem.with_name(stem.name + s).exists()), None)
    if eeg is not None:
        return eeg
    other = (
        sorted(p.name for p in eeg_dir.glob(f"sub-{subject:04d}_task-*_run-{r}_eeg.*") if bids_task(p.name) != task)
        if eeg_dir.is_dir()
        else []
    )
    hint = (
        f"; found {', '.join(other)} of another task (the EEG follows the fMRI file's task, {task!r})" if other else ""
    )
    raise RawDataError(
        f"run {r}: EEG file missing: expected {stem}.npy (+ .json) or one of {', '.join(EEG_SUFFIXES[1:])}{hint}"
    )


def _run_truth(subject_dir: Path, subject: int, task: str, r: int) -> Path | None:
    """The simulator's noise-free BOLD of run ``r`` under the fMRI's task, or None (one warning per
    file when it exists only under another task)."""
    truth = (
        subject_dir
        / "truth"
        / f"sub-{subject:04d}_task-{task}_run-{r}_space-fsLR_den-91k_desc-noisefree_bold.dtseries.nii"
    )
    if truth.exists():
        return truth
    other = sorted((subject_dir / "truth").glob(f"sub-{subject:04d}_task-*_run-{r}_*desc-noisefree_bold.dtseries.nii"))
    if other and str(other[0]) not in _WARNED:
        _WARNED.add(str(other[0]))
        log.warning(
            "run %d: %s is a noise-free BOLD of another task than the fMRI's (%r); not used (no noise "
            "ceiling for this run). Rename it to %s if it belongs to this run",
            r,
            other[0],
            task,
            truth.name,
        )
    return None


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
            raise RawDataError(
                f"{path}, row {i + 1}: expected 0 <= videoStartTime < videoStopTime, got {start}, {stop}"
            )
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
    try:
        raw.pick("eeg")
    except ValueError:
        raise RawDataError(
            f"{path}: no EEG channel in this file (channel types: {sorted(set(raw.get_channel_types()))})"
        ) from None
    ann = raw.annotations
    sel = [i for i, d in enumerate(ann.description) if volume_marker in d]
    onsets = None
    if sel:
        # sample index into the data: MNE's onsets are relative to orig_time (the recording's start)
        onsets = np.sort(raw.time_as_index(ann.onset[sel], use_rounding=True, origin=ann.orig_time)).astype(np.int64)
    elif len(ann):
        log.warning(
            "%s: no annotation contains the volume marker %r (found e.g. %s); the EEG's first sample is taken as "
            "the first volume's onset. Set --volume_marker to your scanner's marker",
            path,
            volume_marker,
            sorted(set(ann.description))[:5],
        )
    return EEGRecording(
        data=raw.get_data().astype(np.float32),
        sfreq=float(raw.info["sfreq"]),
        ch_names=list(raw.ch_names),
        volume_onsets=onsets,
        path=path,
    )


# Keys of the JSON sidecar of a .npy recording: what each holds (data/README.md documents them).
SIDECAR_KEYS = {
    "sfreq": "sampling rate, Hz",
    "ch_names": "channel names, one per row of the array",
    "unit": "the samples' unit (informative)",
    "volume_onsets": "EEG sample index (0-based) of each fMRI volume's onset",
    "volume_onsets_s": "seconds from the EEG's first sample to each fMRI volume's onset",
    "window_volumes": "windowed EEG: the 0-based fMRI volume each window pairs with",
    "shift_s": "windowed EEG: the hemodynamic shift the windows were paired with, seconds",
    "source": "provenance (informative)",
}


def _read_npy_eeg(path: Path) -> EEGRecording:
    side = path.with_suffix(".json")
    if not side.exists():
        raise RawDataError(f"{path}: JSON sidecar {side.name} missing (expected keys sfreq, ch_names[, volume_onsets])")
    try:
        meta = json.loads(side.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise RawDataError(f"{side}: not valid JSON ({e})") from e
    if not isinstance(meta, dict):
        raise RawDataError(f"{side}: holds a {type(meta).__name__}; expected an object with keys sfreq, ch_names")
    for key in ("sfreq", "ch_names"):
        if key not in meta:
            raise RawDataError(
                f"{side}: field {key!r} missing (expected sfreq in Hz and ch_names, a list of channel names)"
            )
    unknown = sorted(set(meta) - set(SIDECAR_KEYS))
    if unknown:
        hint = ""
        if any("onset" in k.lower() or "trigger" in k.lower() for k in unknown):
            hint = " (volume onsets go under volume_onsets, in samples, or volume_onsets_s, in seconds)"
        log.warning("%s: unknown key(s) %s ignored%s; known keys: %s", side, unknown, hint, ", ".join(SIDECAR_KEYS))
    try:
        sfreq = float(meta["sfreq"])
    except (TypeError, ValueError):
        sfreq = float("nan")
    if not (np.isfinite(sfreq) and sfreq > 0):
        raise RawDataError(f"{side}: sfreq={meta['sfreq']!r}; expected the sampling rate in Hz (a positive number)")
    ch_names = meta["ch_names"]
    if not isinstance(ch_names, list) or not all(isinstance(c, str) for c in ch_names):
        raise RawDataError(f"{side}: ch_names must be a list of channel names (strings)")
    try:
        data = np.load(path, mmap_mode="r")
    except Exception as e:
        raise RawDataError(f"{path}: cannot be read as a .npy array (truncated or corrupt? {e})") from e
    if not np.issubdtype(data.dtype, np.floating) and not np.issubdtype(data.dtype, np.integer):
        raise RawDataError(f"{path}: dtype {data.dtype}; expected a float or integer array")
    if "window_volumes" in meta:
        return _windowed(path, side, meta, data, sfreq, ch_names)
    if data.ndim != 2 or data.shape[0] != len(ch_names):
        raise RawDataError(
            f"{path}: array has shape {data.shape}; expected (n_chans, n_samples) with n_chans = "
            f"{len(ch_names)} channel names in {side.name}"
        )
    if data.shape[1] == 0:
        raise RawDataError(f"{path}: EEG has 0 samples; expected a recording that covers the run")
    return EEGRecording(
        data=data, sfreq=sfreq, ch_names=list(ch_names), volume_onsets=_onsets(side, meta, sfreq), path=path
    )


def _onsets(side: Path, meta: dict, sfreq: float) -> np.ndarray | None:
    """Volume onsets in samples from ``volume_onsets`` (samples) or ``volume_onsets_s`` (seconds)."""
    if "volume_onsets" in meta and "volume_onsets_s" in meta:
        raise RawDataError(
            f"{side}: both volume_onsets (samples) and volume_onsets_s (seconds) are given; expected one"
        )
    key = "volume_onsets" if "volume_onsets" in meta else "volume_onsets_s" if "volume_onsets_s" in meta else None
    if key is None or meta[key] is None:
        return None
    try:
        v = np.asarray(meta[key], np.float64)
    except (TypeError, ValueError):
        v = np.zeros((0, 0))
    if v.ndim != 1 or len(v) == 0 or not np.isfinite(v).all():
        raise RawDataError(f"{side}: {key} must be a non-empty list of numbers (one per fMRI volume)")
    if key == "volume_onsets":
        if np.any(v != np.round(v)):
            bad = v[v != np.round(v)][:3].tolist()
            raise RawDataError(
                f"{side}: volume_onsets holds {bad}, not whole sample indices; onsets in seconds go under "
                "volume_onsets_s"
            )
        return v.astype(np.int64)
    return np.round(v * sfreq).astype(np.int64)


def _windowed(path: Path, side: Path, meta: dict, data: np.ndarray, sfreq: float, ch_names: list[str]) -> EEGRecording:
    """EEG cut into one window per frame: (n_windows, n_chans, n_times) with ``window_volumes``."""
    if data.ndim != 3 or data.shape[1] != len(ch_names) or data.shape[0] == 0 or data.shape[2] == 0:
        raise RawDataError(
            f"{path}: array has shape {data.shape}; a windowed recording (window_volumes in {side.name}) is "
            f"(n_windows, n_chans, n_times) with n_chans = {len(ch_names)} channel names"
        )
    try:
        vols = np.asarray(meta["window_volumes"], np.float64)
    except (TypeError, ValueError):
        vols = np.zeros((0, 0))
    if vols.ndim != 1 or len(vols) != data.shape[0] or np.any(vols != np.round(vols)) or np.any(vols < 0):
        raise RawDataError(
            f"{side}: window_volumes must list one 0-based volume index per window ({data.shape[0]} windows in {path.name})"
        )
    vols = vols.astype(np.int64)
    if np.any(np.diff(vols) <= 0):
        first = int(np.argmax(np.diff(vols) <= 0)) + 1
        raise RawDataError(
            f"{side}: window_volumes must increase (window {first} pairs with volume {int(vols[first])} "
            f"after volume {int(vols[first - 1])})"
        )
    shift = meta.get("shift_s")
    if shift is not None and not isinstance(shift, (int, float)):
        raise RawDataError(f"{side}: shift_s={shift!r}; expected the windows' hemodynamic shift in seconds")
    n_w, n_chans, n_times = data.shape
    flat = np.ascontiguousarray(np.asarray(data).transpose(1, 0, 2)).reshape(n_chans, n_w * n_times)  # (C, n_w * W)
    return EEGRecording(
        data=flat,
        sfreq=sfreq,
        ch_names=list(ch_names),
        volume_onsets=None,
        path=path,
        window_volumes=vols,
        window_shift_s=None if shift is None else float(shift),
    )


def window_length(eeg: EEGRecording) -> int:
    """Samples per window of a windowed recording."""
    return eeg.data.shape[1] // len(eeg.window_volumes)


def write_npy_eeg(
    stem: Path,
    data: np.ndarray,
    sfreq: float,
    ch_names,
    volume_onsets=None,
    unit: str = "uV",
    extra: dict | None = None,
) -> Path:
    """Write EEG in the plain layout (.npy + JSON sidecar), each file atomically. ``data`` is
    (n_chans, n_samples), or (n_windows, n_chans, n_times) with ``window_volumes`` in ``extra``."""
    from eeg2fmri.data.cifti import atomic_save, atomic_write_text

    stem = Path(stem)
    npy = stem.with_name(stem.name + ".npy")
    meta = {"sfreq": float(sfreq), "ch_names": list(ch_names), "unit": unit}
    if volume_onsets is not None:
        meta["volume_onsets"] = [int(v) for v in volume_onsets]
    meta.update(extra or {})

    def save_npy(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.save(f, np.asarray(data, np.float32))

    atomic_save(npy, save_npy)
    atomic_write_text(npy.with_suffix(".json"), json.dumps(meta))
    return npy
