"""Raw subject folder (CineBrain layout) → one HDF5 cache per subject.

What happens, run by run, streaming (one run in memory at a time):

1. Check every run: CIFTI layout (same standard grayordinates in every run), TR, EEG sampling rate,
   channel names, NaN/Inf, flat channels, and that fMRI and EEG cover the movie the behaviour CSV
   describes (with the hemodynamic shift).
2. Keep the frames of each clip whose shifted EEG window lies inside the clip: frame k (onset o_k,
   in EEG samples) is paired with EEG samples [o_k − shift·sfreq, o_k − shift·sfreq + n_times),
   n_times = TR·sfreq (800 at 1000 Hz and TR 0.8 s). The fMRI frame thus sees the EEG of its own TR
   window ``shift_s`` earlier: the hemodynamic delay.
3. EEG: band-pass (Butterworth, zero phase) + notch, per run, on float64 (:mod:`eeg2fmri.data.eeg`,
   which ``eeg2fmri fill`` applies to new runs too).
4. Split clip-wise into train / val / test (a clip never straddles two splits), or, with
   ``split="tail"`` (the CineBrain authors' benchmark), the last frames of the recording are test.
5. Normalise with statistics of the TRAIN frames only: fMRI z-scored per grayordinate (optionally
   after removing a per-run polynomial trend); EEG centred and scaled per channel to (−1, 1) by its
   99.9th percentile of |x| (clipped beyond). The CineBrain authors z-score the fMRI with all frames
   (``normalize="all"``, ddof = 1), which uses test statistics; the default does not.

EEG already cut into one window per frame (the imported CineBrain release: ``window_volumes`` in
the sidecar) is paired as given: each window with its volume, no shift applied here.

The cache is written to a temporary file beside the target and renamed when complete; a re-run
with the same inputs (paths, sizes, modification times) and options returns the existing cache.
See data/README.md for the cache format.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import h5py
import numpy as np

from eeg2fmri.data.cifti import CiftiError, load_header, new_file_mode, remove_stale_temps, standard_order
from eeg2fmri.data.cinebrain import (
    CHANNELS_64,
    Clip,
    RawDataError,
    Run,
    discover_runs,
    read_ch_names,
    read_eeg,
    window_length,
)
from eeg2fmri.data.eeg import (
    check_channels,
    check_covers,
    filtered_windows,
    samples_per_tr,
    scale_windows,
    volume_onsets,
)
from eeg2fmri.data.frames import zscore_std
from eeg2fmri.errors import OptionError, OutputError, check_writable

log = logging.getLogger(__name__)

CACHE_VERSION = 1
SPLITS = {"train": 0, "val": 1, "test": 2}
_FMRI_BLOCK = 256  # frames read from a CIFTI at a time (bounds memory at 91,282 grayordinates)


@dataclass(frozen=True)
class PrepareOptions:
    """Every option that changes the cache (its hash decides whether a cache is reused)."""

    shift_s: float = 4.0  # hemodynamic shift between EEG and fMRI, seconds
    l_freq: float = 0.1  # EEG high-pass edge, Hz
    h_freq: float = 75.0  # EEG low-pass edge, Hz
    notch_freq: float | None = 50.0  # line-noise notch, Hz (None: no notch)
    filter_order: int = 4  # Butterworth order of each band edge
    sfreq: float | None = 1000.0  # expected EEG sampling rate, Hz (None: accept the files' own)
    ch_names: tuple[str, ...] = CHANNELS_64  # expected channels, in cache order
    test_fraction: float = 0.2  # fraction of clips held out for test
    val_fraction: float = 0.1  # fraction of clips for validation (taken from the non-test clips)
    split_seed: int = 0  # seed of the clip-wise split
    volume_marker: str = "R128"  # annotation marking fMRI volume onsets in MNE-readable EEG
    eeg_clip_quantile: float = 0.999  # |x| quantile (train) that maps to ±1
    # the protocol (recorded in the cache and in every results table): the defaults are the project's;
    # normalize="all", split="tail" are the CineBrain authors' (make reproduce-table1 PROTOCOL=paper)
    normalize: Literal["train", "all"] = (
        "train"  # fMRI z-score statistics: train frames (ddof 0), or all frames (ddof 1)
    )
    split: Literal["clips", "tail"] = "clips"  # random whole clips, or the recording's last frames as test (val before)
    detrend: Literal["none", "constant", "linear", "quadratic"] = "none"  # per-run polynomial removed from the fMRI
    drop_unpaired: bool = False  # frames without an fMRI volume or EEG window: dropped with a warning, not refused


DETREND_ORDER = {"none": -1, "constant": 0, "linear": 1, "quadratic": 2}


def protocol(o: PrepareOptions) -> str:
    """One line naming the protocol options, as the results tables print it."""
    norm = "z-score over all frames (ddof 1)" if o.normalize == "all" else "z-score with train-frame statistics"
    split = (
        f"tail (last {o.test_fraction:.0%} of the recording is test, {o.val_fraction:.0%} before it val)"
        if o.split == "tail"
        else f"clips (random whole clips: {o.test_fraction:.0%} test, {o.val_fraction:.0%} val)"
    )
    return f"normalize={o.normalize}: {norm}; split={split}; detrend={o.detrend}"


def cache_path(subject_dir: str | Path, out_dir: str | Path) -> Path:
    return Path(out_dir) / f"{Path(subject_dir).name}.h5"


def prepare(
    subject_dir: str | Path,
    out_dir: str | Path = "data/prepared",
    options: PrepareOptions = PrepareOptions(),
    force: bool = False,
    progress: bool = True,
) -> Path:
    """Build (or reuse) ``out_dir/<subject>.h5`` from a raw subject folder. Returns its path."""
    t0 = time.perf_counter()
    subject_dir = Path(subject_dir)
    _check_options(options)
    runs = discover_runs(subject_dir)
    out = cache_path(subject_dir, out_dir)
    key = _cache_key(runs, options)
    if out.exists() and not force and _existing_key(out) == key:
        log.info("%s is up to date (same inputs and options): reused", out)
        return out

    _check_headers(runs)
    plans = [_plan_run(run, options) for run in runs]
    _check_consistent(plans)
    if options.split == "tail":
        split_of_clip = _tail_split(plans, options, subject_dir)
    else:
        split_of_clip = _split_clips([c for p in plans for c in p.clip_names], options, subject_dir)
    n_frames = sum(len(p.frames) for p in plans)
    n_vertices = len(plans[0].indices)
    n_chans, n_times = len(options.ch_names), plans[0].n_times
    has_truth = all(p.run.truth is not None for p in plans)
    need = n_frames * (n_vertices * 2 * (2 if has_truth else 1) + n_chans * n_times * 2)
    _check_disk(out.parent, need)

    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out, ".tmp")
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as h5:
            _write_cache(h5, plans, split_of_clip, options, n_frames, n_vertices, has_truth, progress)
            h5.attrs.update(
                cache_key=key,
                version=CACHE_VERSION,
                subject=subject_dir.name,
                source=str(subject_dir.resolve()),
                options=json.dumps(asdict(options)),
                normalize=options.normalize,
                split=options.split,
                detrend=options.detrend,
                protocol=protocol(options),
                created=time.strftime("%Y-%m-%dT%H:%M:%S"),
            )
        os.chmod(tmp, new_file_mode())  # mkstemp's 0o600 would hide the cache from colleagues
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    log.info("wrote %s: %d frames x %d grayordinates in %.1f s", out, n_frames, n_vertices, time.perf_counter() - t0)
    return out


# --------------------------------------------------------------------------------------------
# Planning: read headers, check every run, decide which frames are kept
# --------------------------------------------------------------------------------------------


@dataclass
class RunPlan:
    run: Run
    tr: float
    indices: np.ndarray  # (V,) standard grayordinate index of each column of the cache (increasing)
    file_indices: np.ndarray  # (V,) standard index of each column of the run's file, in the file's order
    n_volumes: int
    sfreq: float
    n_times: int  # EEG samples per frame window
    ch_order: np.ndarray  # (C,) positions of options.ch_names in the file
    flat: list[str]  # channel names that are flat (repaired: zero after scaling)
    frames: np.ndarray  # (T_run,) kept volume indices
    window_starts: np.ndarray  # (T_run,) EEG sample where each kept frame's window starts
    frame_clip: np.ndarray  # (T_run,) index into clip_names
    clip_names: list[str] = field(default_factory=list)
    windowed: bool = False  # EEG given as one window per frame: window_starts index the windows side by side


def _check_options(o: PrepareOptions) -> None:
    if not 0 <= o.shift_s < 60:
        raise OptionError(f"shift_s={o.shift_s}: expected a hemodynamic shift in seconds in [0, 60)")
    if not 0 < o.l_freq < o.h_freq:
        raise OptionError(f"band-pass {o.l_freq}-{o.h_freq} Hz: expected 0 < l_freq < h_freq")
    if not (0 < o.test_fraction < 1 and 0 <= o.val_fraction < 1 and o.test_fraction + o.val_fraction < 1):
        raise OptionError(
            f"test_fraction={o.test_fraction}, val_fraction={o.val_fraction}: expected fractions in (0, 1) summing below 1"
        )
    if len(set(o.ch_names)) != len(o.ch_names):
        dup = sorted({c for c in o.ch_names if o.ch_names.count(c) > 1})
        raise OptionError(f"ch_names lists channel(s) {dup} twice")
    for name, value, allowed in (
        ("normalize", o.normalize, ("train", "all")),
        ("split", o.split, ("clips", "tail")),
        ("detrend", o.detrend, tuple(DETREND_ORDER)),
    ):
        if value not in allowed:
            raise OptionError(f"{name}={value!r}: expected one of {', '.join(allowed)}")


def _plan_run(run: Run, o: PrepareOptions) -> RunPlan:
    """Check one run (fMRI header, noise-free BOLD, EEG rate and montage) and decide which of its
    frames are kept, with the EEG window of each."""
    tr, indices, file_indices, n_volumes = _run_header(run)
    eeg = read_eeg(run.eeg, o.volume_marker)
    _check_rate(eeg, o)
    n_times = samples_per_tr(tr, eeg.sfreq, eeg.path)
    ch_order, flat = check_channels(eeg, o.ch_names)
    base = dict(
        run=run,
        tr=tr,
        indices=indices,
        file_indices=file_indices,
        n_volumes=n_volumes,
        sfreq=eeg.sfreq,
        n_times=n_times,
        ch_order=ch_order,
        flat=flat,
    )
    if eeg.windowed:
        return _plan_windowed(eeg, o, base)
    return _plan_continuous(eeg, o, base)


def _run_header(run: Run) -> tuple[float, np.ndarray, np.ndarray, int]:
    """(tr, indices, file_indices, n_volumes) of a run's fMRI (``indices``: the file's grayordinates
    sorted), with its noise-free BOLD checked to hold the same frames and grayordinates."""
    _, _, tr, file_indices = load_header(run.fmri)
    indices = np.sort(file_indices)
    n_volumes = _cifti_shape(run.fmri)[0]
    if run.truth is not None:
        _, _, tr_t, idx_t = load_header(run.truth)
        if _cifti_shape(run.truth)[0] != n_volumes or not np.array_equal(np.sort(idx_t), indices):
            raise CiftiError(f"{run.truth}: noise-free BOLD does not match {run.fmri.name} in frames or grayordinates")
    if not tr > 0:
        raise CiftiError(f"{run.fmri}: TR (SeriesAxis step) is {tr}; expected a positive repetition time in seconds")
    return tr, indices, file_indices, n_volumes


def _check_rate(eeg, o: PrepareOptions) -> None:
    """The EEG is sampled at the expected rate, and the low-pass edge lies below its Nyquist frequency."""
    if o.sfreq is not None and not math.isclose(eeg.sfreq, o.sfreq):
        raise RawDataError(
            f"{eeg.path}: sampling rate {eeg.sfreq:g} Hz; expected {o.sfreq:g} Hz. Resample the EEG, "
            f"or prepare with --sfreq {eeg.sfreq:g} (every run must share one rate)."
        )
    if o.h_freq >= eeg.sfreq / 2:
        raise OptionError(f"{eeg.path}: low-pass edge {o.h_freq} Hz is not below Nyquist ({eeg.sfreq / 2} Hz)")


def _plan_continuous(eeg, o: PrepareOptions, base: dict) -> RunPlan:
    """Frames of a run with a continuous recording: per clip, the volumes whose shifted EEG window
    lies inside the clip (:func:`clip_frames`); every window must lie inside the recording."""
    run, n_times = base["run"], base["n_times"]
    onsets = volume_onsets(eeg, base["n_volumes"], n_times)
    frames, starts, fclip, names = [], [], [], []
    for clip in run.clips:
        kept = _clip_plan(clip, eeg, onsets, o, base)
        if kept is None:
            continue
        frames.append(kept[0])
        starts.append(kept[1])
        fclip.append(np.full(len(kept[0]), len(names)))
        names.append(clip.name)
    if not frames:
        raise RawDataError(f"{run.beh}: no clip of run {run.run} keeps a frame")
    starts_all = np.concatenate(starts)
    lo, hi = int(starts_all.min()), int(starts_all.max()) + n_times
    check_covers(
        eeg,
        lo,
        hi,
        eeg.sfreq,
        f"the movie frames need samples {lo}..{hi} (with the {o.shift_s:g} s shift); the EEG is shorter than the "
        "fMRI it should cover (or prepare with --drop_unpaired true to drop the frames it does not cover, with a "
        "warning)",
    )
    return RunPlan(
        **base,
        frames=np.concatenate(frames),
        window_starts=starts_all,
        frame_clip=np.concatenate(fclip),
        clip_names=names,
    )


def _clip_plan(clip: Clip, eeg, onsets: np.ndarray, o: PrepareOptions, base: dict) -> tuple | None:
    """(kept volumes, their window starts) of one clip of a continuous run. A clip that plays past
    the fMRI (with the shift) or needs EEG outside the recording is refused, or with
    ``drop_unpaired`` loses those frames with a warning (None: it keeps none)."""
    run, tr, n_volumes, n_times = base["run"], base["tr"], base["n_volumes"], base["n_times"]
    # the movie's last needed volume: its EEG window (shifted) ends at the clip's end
    need_s = clip.stop + o.shift_s
    end_s = n_volumes * tr
    if need_s > end_s + 1e-9 and not o.drop_unpaired:
        raise RawDataError(
            f"{run.fmri}: clip {clip.name!r} of {run.beh.name} plays until {clip.stop:g} s, but the run's fMRI ends "
            f"at {end_s:g} s ({n_volumes} frames of {tr:g} s): the clip's last {need_s - end_s:g} s have no fMRI volume "
            f"{o.shift_s:g} s later (the hemodynamic shift), so their frames cannot be paired. Trim the clip "
            f"(videoStopTime <= {end_s - o.shift_s:g} in {run.beh}) or prepare with --drop_unpaired true, which "
            "drops the unpaired frames with a warning."
        )
    keep, st = clip_frames(onsets, clip.start, clip.stop, o.shift_s, eeg.sfreq, n_times)
    if need_s > end_s + 1e-9:  # drop_unpaired: say how many frames the missing volumes cost
        extra = int(math.ceil((need_s - end_s) / tr)) + 1
        longer = np.concatenate([onsets, onsets[-1] + n_times * np.arange(1, extra + 1)])
        lost = len(clip_frames(longer, clip.start, clip.stop, o.shift_s, eeg.sfreq, n_times)[0]) - len(keep)
        log.warning(
            "%s: clip %r plays until %g s but the fMRI ends at %g s: %d frame(s) at its end have no fMRI volume "
            "%g s later and are dropped (drop_unpaired)",
            run.fmri,
            clip.name,
            clip.stop,
            end_s,
            lost,
            o.shift_s,
        )
    n_samples = eeg.data.shape[1]
    inside = (st >= 0) & (st + n_times <= n_samples)
    if not inside.all() and o.drop_unpaired:
        log.warning(
            "%s: %d frame(s) of clip %r need EEG samples outside the recording (%d samples); dropped (drop_unpaired)",
            eeg.path,
            int((~inside).sum()),
            clip.name,
            n_samples,
        )
        keep, st = keep[inside], st[inside]
    if len(keep) == 0:
        if o.drop_unpaired:
            log.warning("%s: clip %r keeps no frame; left out", run.beh, clip.name)
            return None
        raise RawDataError(f"{run.beh}: clip {clip.name!r} ({clip.start:g}-{clip.stop:g} s) is shorter than one TR")
    return keep, st


def _plan_windowed(eeg, o: PrepareOptions, base: dict) -> RunPlan:
    """Frames of a run whose EEG is one window per frame: each window pairs with the volume its
    sidecar names (the pairing, shift included, was made when the windows were cut), and belongs to
    the clip that owns that volume by the CineBrain authors' rule (see release.authors_frames)."""
    from eeg2fmri.data.release import authors_frames

    run, tr, n_volumes, n_times = base["run"], base["tr"], base["n_volumes"], base["n_times"]
    side = eeg.path.with_suffix(".json").name
    w = window_length(eeg)
    if w != n_times:
        raise RawDataError(
            f"{eeg.path}: windows of {w} samples; expected {n_times} (one TR of {tr:g} s at {eeg.sfreq:g} Hz)"
        )
    if eeg.window_shift_s is not None and not math.isclose(eeg.window_shift_s, o.shift_s):
        raise RawDataError(
            f"{eeg.path}: the windows were paired with their volumes with a {eeg.window_shift_s:g} s shift ({side}), "
            f"not the {o.shift_s:g} s asked for; windows cut per frame cannot be re-paired: prepare with "
            f"--shift_s {eeg.window_shift_s:g}"
        )
    vols = eeg.window_volumes
    pos = np.arange(len(vols))
    keep = vols < n_volumes
    if not keep.all():
        msg = (
            f"{eeg.path}: {int((~keep).sum())} window(s) pair with volumes {int(vols[~keep][0])}..{int(vols[-1])}, but "
            f"{run.fmri.name} has {n_volumes} volumes (more windows than frames)"
        )
        if not o.drop_unpaired:
            raise RawDataError(msg + "; expected every window's volume in the run, or --drop_unpaired true")
        log.warning("%s; dropped (drop_unpaired)", msg)
    owner = np.full(len(vols), -1)
    for c, clip in enumerate(run.clips):
        first, n = authors_frames(clip.start, clip.stop, o.shift_s, tr)
        owner[(vols >= first) & (vols < first + n) & (owner < 0)] = c
    orphan = keep & (owner < 0)
    if orphan.any():
        msg = (
            f"{eeg.path}: window {int(pos[orphan][0])} pairs with volume {int(vols[orphan][0])}, which no clip of "
            f"{run.beh.name} covers ({int(orphan.sum())} such window(s))"
        )
        if not o.drop_unpaired:
            raise RawDataError(msg + "; expected windows of the movie's frames only")
        log.warning("%s; dropped (drop_unpaired)", msg)
    keep &= owner >= 0
    if not keep.any():
        raise RawDataError(f"{eeg.path}: no window pairs with a volume of the run's clips")
    used = sorted(set(owner[keep].tolist()))
    remap = {c: i for i, c in enumerate(used)}
    return RunPlan(
        **base,
        frames=vols[keep],
        window_starts=pos[keep] * n_times,
        frame_clip=np.array([remap[c] for c in owner[keep]]),
        clip_names=[run.clips[c].name for c in used],
        windowed=True,
    )


def clip_frames(
    onsets: np.ndarray, start_s: float, stop_s: float, shift_s: float, sfreq: float, n_times: int
) -> tuple[np.ndarray, np.ndarray]:
    """The alignment rule. Volume k (onset ``onsets[k]``, EEG samples) is paired with the EEG window
    [onsets[k] - shift, onsets[k] - shift + n_times), shift = round(shift_s * sfreq); it belongs to
    a clip [start_s, stop_s) (seconds from the first volume onset) when that window lies inside the
    clip. Returns the kept volume indices and their window starts."""
    shift = int(round(shift_s * sfreq))
    lo = onsets[0] + int(round(start_s * sfreq))
    hi = onsets[0] + int(round(stop_s * sfreq))
    starts = onsets - shift  # (n_volumes,) window start of each volume
    keep = np.flatnonzero((starts >= lo) & (starts + n_times <= hi))
    return keep, starts[keep]


def _cifti_shape(path: Path) -> tuple[int, int]:
    img, _, _, _ = load_header(path)
    return img.shape


def _check_headers(runs: list[Run]) -> None:
    """One grayordinate layout and one TR for every run, checked from the headers first."""
    first = None
    for run in runs:
        _, _, tr, indices = load_header(run.fmri)
        indices = np.sort(indices)  # runs may differ in column order (read by grayordinate), not in layout
        if first is None:
            first = (run, tr, indices)
            continue
        if not np.array_equal(indices, first[2]):
            raise CiftiError(
                f"{run.fmri}: {len(indices)} grayordinates, not the same as {first[0].fmri.name} "
                f"({len(first[2])}); expected one layout for every run of a subject"
            )
        if not math.isclose(tr, first[1], rel_tol=1e-6):
            raise CiftiError(f"{run.fmri}: TR {tr:g} s; expected {first[1]:g} s like {first[0].fmri.name}")


def _check_consistent(plans: list[RunPlan]) -> None:
    """One EEG sampling rate for every run (layout and TR: ``_check_headers``)."""
    first = plans[0]
    for p in plans[1:]:
        if p.sfreq != first.sfreq:
            raise RawDataError(f"{p.run.eeg}: {p.sfreq} Hz; expected {first.sfreq} Hz like {first.run.eeg.name}")


def _split_clips(names: list[str], o: PrepareOptions, where: Path) -> dict[str, int]:
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise RawDataError(f"{where}: clip name(s) {dup} appear in more than one row; expected unique clips")
    rng = np.random.default_rng(o.split_seed)
    order = [names[i] for i in rng.permutation(len(names))]
    n_test = max(1, round(o.test_fraction * len(names)))
    n_val = max(1, round(o.val_fraction * len(names))) if o.val_fraction > 0 else 0
    if len(names) - n_test - n_val < 1:
        raise RawDataError(
            f"{where}: {len(names)} clip(s) cannot be split into train/val/test with test_fraction="
            f"{o.test_fraction} and val_fraction={o.val_fraction}: the train split would be empty. "
            f"Record more clips or lower the fractions."
        )
    split = {n: SPLITS["test"] for n in order[:n_test]}
    split.update({n: SPLITS["val"] for n in order[n_test : n_test + n_val]})
    split.update({n: SPLITS["train"] for n in order[n_test + n_val :]})
    return split


def _tail_split(plans: list[RunPlan], o: PrepareOptions, where: Path) -> dict[str, int]:
    """The CineBrain authors' benchmark split: frames in recording order (runs, then volumes), the
    last ``test_fraction`` of them test, the ``val_fraction`` before them val, the rest train. A
    clip cut by a boundary becomes one clip per part (``<clip>#train``, ``#val``, ``#test``), so
    windows never cross it. Rewrites the plans' clip tables; returns clip name -> split."""
    n = sum(len(p.frames) for p in plans)
    n_test = max(1, round(o.test_fraction * n))
    n_val = max(1, round(o.val_fraction * n)) if o.val_fraction > 0 else 0
    if n - n_test - n_val < 1:
        raise RawDataError(
            f"{where}: {n} frames cannot be split into train/val/test with test_fraction={o.test_fraction}"
        )
    split = np.zeros(n, np.int8)  # (T,) in recording order
    split[n - n_test - n_val : n - n_test] = SPLITS["val"]
    split[n - n_test :] = SPLITS["test"]
    names = {v: k for k, v in SPLITS.items()}
    out: dict[str, int] = {}
    offset = 0
    for p in plans:
        sp = split[offset : offset + len(p.frames)]
        offset += len(p.frames)
        new_names: list[str] = []
        new_clip = np.empty(len(p.frames), np.int64)
        for c, name in enumerate(p.clip_names):
            rows = np.flatnonzero(p.frame_clip == c)
            parts = sorted(set(sp[rows].tolist()))
            for part in parts:
                label = name if len(parts) == 1 else f"{name}#{names[part]}"
                new_clip[rows[sp[rows] == part]] = len(new_names)
                new_names.append(label)
                out[label] = part
        p.clip_names, p.frame_clip = new_names, new_clip
    if len(out) != sum(len(p.clip_names) for p in plans):
        raise RawDataError(f"{where}: clip names repeat across runs; expected unique clips")
    return out


def _check_disk(folder: Path, need: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if free < need * 1.05:
        raise OSError(
            f"{folder}: the cache needs about {need / 2**30:.2f} GiB but only {free / 2**30:.2f} GiB is free; "
            "free space or choose another --out_dir"
        )


# --------------------------------------------------------------------------------------------
# Writing: two streaming passes (statistics from train frames, then normalised data)
# --------------------------------------------------------------------------------------------


def _write_cache(h5, plans, split_of_clip, o, n_frames, n_vertices, has_truth, progress) -> None:
    """Write a subject's cache into the open file ``h5``, streaming over the runs: pass 0 (detrend
    only) fits each run's trend, pass 1 gathers the fMRI statistics and writes the filtered EEG with
    its statistics, pass 2 scales the EEG in place and writes the z-scored fMRI; then the tables."""
    from tqdm.auto import tqdm

    n_chans, n_times = len(o.ch_names), plans[0].n_times
    tables = _frame_tables(plans, split_of_clip)
    train = tables["split"] == SPLITS["train"]
    if not train.any():
        raise RawDataError("no training frame: every clip fell in val/test")

    fmri = h5.create_dataset("fmri", (n_frames, n_vertices), np.float16)
    clean = h5.create_dataset("fmri_clean", (n_frames, n_vertices), np.float16) if has_truth else None
    eeg = h5.create_dataset("eeg", (n_frames, n_chans, n_times), np.float16)

    order = DETREND_ORDER[o.detrend]
    bar = tqdm(total=(4 if order >= 0 else 3) * len(plans), desc="prepare", unit="pass·run", disable=not progress)
    trends = _fit_trends(plans, order, has_truth, bar)
    use = train if o.normalize == "train" else np.ones_like(train)
    mean, std, dead = _fmri_statistics(plans, trends, order, use, o, n_vertices, bar)
    center, scale, unit, flat, flat_masks = _eeg_statistics(plans, eeg, train, o, bar)
    _scale_eeg(eeg, plans, center, scale, flat_masks)
    _write_fmri((fmri, clean), plans, mean, std, dead, trends, order, bar)
    bar.close()

    stats = {
        "fmri_mean": mean.astype(np.float32),
        "fmri_std": std.astype(np.float32),
        "eeg_center": (center * unit).astype(np.float64),
        "eeg_scale": (scale * unit).astype(np.float64),
    }
    _write_tables(h5, plans, tables, split_of_clip, stats)
    h5.attrs.update(
        tr=plans[0].tr,
        sfreq=plans[0].sfreq,
        shift_s=o.shift_s,
        n_times=n_times,
        ch_names=json.dumps(list(o.ch_names)),
        flat_channels=json.dumps(flat),
        n_vertices=n_vertices,
        layout="fsLR-32k 91k" if n_vertices == 91_282 else "fsLR-32k 91k subset",
        has_truth=has_truth,
    )


def _frame_tables(plans: list[RunPlan], split_of_clip: dict[str, int]) -> dict[str, np.ndarray | list[str]]:
    """Run, volume, clip and split of every kept frame, in cache order (runs, then their frames),
    and ``clip_names``, the subject's clips (a frame's clip indexes it)."""
    clip_names = [n for p in plans for n in p.clip_names]
    clip_id = {n: i for i, n in enumerate(clip_names)}
    frame_clip = np.concatenate([[clip_id[p.clip_names[c]] for c in p.frame_clip] for p in plans]).astype(np.int32)
    return {
        "frame_run": np.concatenate([np.full(len(p.frames), p.run.run) for p in plans]).astype(np.int32),
        "frame_volume": np.concatenate([p.frames for p in plans]).astype(np.int32),
        "frame_clip": frame_clip,
        "split": np.array([split_of_clip[clip_names[c]] for c in frame_clip], np.int8),
        "clip_names": clip_names,
    }


def _fit_trends(plans: list[RunPlan], order: int, has_truth: bool, bar) -> dict[tuple[int, str], np.ndarray]:
    """Pass 0 (detrend only): each run's polynomial trend per grayordinate, fitted on its kept
    frames: (plan, "fmri" | "truth") -> (order + 1, V) coefficients; empty without detrending."""
    trends: dict[tuple[int, str], np.ndarray] = {}
    if order >= 0:
        for i, p in enumerate(plans):
            for kind, path in (("fmri", p.run.fmri), ("truth", p.run.truth)):
                if path is not None and (kind == "fmri" or has_truth):
                    trends[(i, kind)] = _fit_trend(path, p, order)
            bar.update()
    return trends


def _run_blocks(p: RunPlan, kind: str, frames: np.ndarray, rows_of: np.ndarray, trend: np.ndarray | None, order: int):
    """(rows, block) of the frames ``frames`` of a run's fMRI (``kind`` "fmri") or noise-free BOLD
    ("truth"), minus the run's ``trend`` when detrending; ``rows_of`` maps rows to the plan's frames."""
    for rows, block in _cifti_blocks(p.run.fmri if kind == "fmri" else p.run.truth, frames):
        if trend is not None:
            block = block - _trend_basis(p.frames[rows_of[rows]], p.n_volumes, order) @ trend
        yield rows, block


def _fmri_statistics(plans, trends, order, use, o: PrepareOptions, n_vertices: int, bar):
    """Pass 1a: (mean, std, constant) per grayordinate over the frames ``use`` (the train frames,
    or every frame with normalize="all"), from float64 sums; constant grayordinates get std 1."""
    s1 = np.zeros(n_vertices)
    s2 = np.zeros(n_vertices)
    offset = 0
    for i, p in enumerate(plans):
        sel = np.flatnonzero(use[offset : offset + len(p.frames)])
        for _, block in _run_blocks(p, "fmri", p.frames[sel], sel, trends.get((i, "fmri")), order):
            s1 += block.sum(0, dtype=np.float64)
            s2 += np.square(block, dtype=np.float64).sum(0)
        offset += len(p.frames)
        bar.update()
    n_stat = int(use.sum())
    mean = s1 / n_stat
    # train: population std of the training frames; all: the authors' sample std (ddof = 1)
    ddof = 0 if o.normalize == "train" else 1
    std, dead = zscore_std(mean, np.sqrt(np.maximum((s2 - n_stat * mean**2) / max(n_stat - ddof, 1), 0.0)))
    if dead.any():
        log.warning("%d grayordinate(s) are constant over the statistics' frames; they are written as 0", dead.sum())
    return mean, std, dead


def _eeg_statistics(plans, eeg, train: np.ndarray, o: PrepareOptions, bar):
    """Pass 1b: every run's filtered EEG windows written to ``eeg`` provisionally as float16 in units
    of a per-channel scale ``unit`` from the first run (it only keeps float16 well inside its range
    whatever the recording's unit, volts or microvolts), and per channel the train windows' centre
    and the ``eeg_clip_quantile`` of |x − centre| (from a subsample), the scale that maps to 1.
    A channel flat in the first run takes the median unit of the others (its own would be ~0).
    Returns (center, scale, unit, flat channel names, per run the (C,) mask of the channels set to
    0: those flat in that run, and any without spread in the training windows)."""
    n_chans, n_times = len(o.ch_names), plans[0].n_times
    unit = None
    center_sum = np.zeros(n_chans)
    samples: list[np.ndarray] = []  # subsample of train |x| per channel, for the quantile
    offset = 0
    rng = np.random.default_rng(0)
    for p in plans:
        w = _filtered_windows(p, o)  # (T_run, C, W) float32
        if unit is None:
            sd = w.std(axis=(0, 2)).astype(np.float64)  # (C,)
            live = (sd > 0) & ~np.isin(o.ch_names, p.flat)
            unit = np.where(live, np.maximum(sd, 1e-30), np.median(sd[live]) if live.any() else 1.0)
        w /= unit[None, :, None].astype(np.float32)
        sel = train[offset : offset + len(w)]
        if sel.any():
            tw = w[sel]  # (T_train_run, C, W)
            center_sum += tw.sum(axis=(0, 2), dtype=np.float64)
            pick = rng.choice(tw.shape[0] * tw.shape[2], size=min(20_000, tw.shape[0] * tw.shape[2]), replace=False)
            samples.append(tw.transpose(1, 0, 2).reshape(n_chans, -1)[:, pick])
        eeg[offset : offset + len(w)] = w.astype(np.float16)
        offset += len(w)
        bar.update()
    center = center_sum / (train.sum() * n_times)  # (C,)
    dev = np.abs(np.concatenate(samples, axis=1) - center[:, None])  # (C, n_sub)
    scale = np.quantile(dev, o.eeg_clip_quantile, axis=1)  # (C,)
    flat = sorted({c for p in plans for c in p.flat})
    dead = scale <= 0  # (C,) no spread in any training window
    scale[dead] = 1.0
    flat_masks = [np.isin(o.ch_names, p.flat) | dead for p in plans]  # a channel flat in one run only is zero there
    return center, scale, unit, flat, flat_masks


def _filtered_windows(plan: RunPlan, o: PrepareOptions) -> np.ndarray:
    """Band-passed EEG windows of the kept frames of a run (:func:`eeg2fmri.data.eeg.filtered_windows`):
    (T_run, C, n_times) float32."""
    eeg = read_eeg(plan.run.eeg, o.volume_marker)
    volumes = plan.frames if plan.windowed else None
    return filtered_windows(eeg.data, plan.window_starts, plan.n_times, plan.ch_order, plan.sfreq, o, volumes)


def _scale_eeg(eeg, plans, center: np.ndarray, scale: np.ndarray, flat_masks: list[np.ndarray]) -> None:
    """Pass 2a: the stored EEG windows scaled in place (:func:`eeg2fmri.data.eeg.scale_windows`),
    run by run, each with its own flat channels set to 0."""
    offset = 0
    for p, flat_mask in zip(plans, flat_masks):
        end = offset + len(p.frames)
        for start in range(offset, end, 512):
            stop = min(start + 512, end)
            x = eeg[start:stop].astype(np.float32)  # (b, C, W)
            eeg[start:stop] = scale_windows(x, center, scale, flat_mask).astype(np.float16)
        offset = end


def _write_fmri(dsets, plans, mean, std, dead, trends, order: int, bar) -> None:
    """Pass 2b: every kept frame z-scored with the statistics (constant grayordinates 0) into
    ``dsets``, (fmri, fmri_clean or None): the measured fMRI and the noise-free BOLD alike."""
    offset = 0
    for i, p in enumerate(plans):
        for dset, kind in zip(dsets, ("fmri", "truth")):
            if dset is None:
                continue
            for rows, block in _run_blocks(p, kind, p.frames, np.arange(len(p.frames)), trends.get((i, kind)), order):
                z = (block - mean) / std
                z[:, dead] = 0.0
                dset[offset + rows.start : offset + rows.stop] = z.astype(np.float16)
        offset += len(p.frames)
        bar.update()


def _write_tables(h5, plans, tables: dict, split_of_clip: dict[str, int], stats: dict[str, np.ndarray]) -> None:
    """The frame, clip and run tables and the normalisation statistics (see data/README.md)."""
    for name in ("frame_run", "frame_volume", "frame_clip", "split"):
        h5[name] = tables[name]
    h5["frame_time"] = (tables["frame_volume"] * plans[0].tr).astype(np.float32)
    h5["indices"] = plans[0].indices.astype(np.int64)
    for name, value in stats.items():
        h5[name] = value
    clip_names = tables["clip_names"]
    h5["clip_names"] = np.array(clip_names, dtype=h5py.string_dtype())
    h5["clip_split"] = np.array([split_of_clip[n] for n in clip_names], np.int8)
    h5["run_files"] = np.array([str(p.run.fmri) for p in plans], dtype=h5py.string_dtype())
    h5["run_numbers"] = np.array([p.run.run for p in plans], np.int32)
    h5["run_n_volumes"] = np.array([p.n_volumes for p in plans], np.int32)
    h5["run_tasks"] = np.array([p.run.task for p in plans], dtype=h5py.string_dtype())
    # each run file's own column order (standard index per file column): predictions written back
    # for a run keep it, so they line up with the user's files column for column
    h5["run_file_indices"] = np.stack([p.file_indices for p in plans]).astype(np.int32)


def _trend_basis(volumes: np.ndarray, n_volumes: int, order: int) -> np.ndarray:
    """Legendre polynomials P_0..P_order of the volume index scaled to [-1, 1] over the run: (T, order + 1)."""
    x = 2.0 * np.asarray(volumes, np.float64) / max(n_volumes - 1, 1) - 1.0
    return np.polynomial.legendre.legvander(x, order)


def _fit_trend(path: Path, plan: RunPlan, order: int) -> np.ndarray:
    """Least-squares polynomial trend of every grayordinate of a run over its kept frames: (order + 1, V)."""
    X = _trend_basis(plan.frames, plan.n_volumes, order)  # (T_run, order + 1)
    if len(X) <= order:
        raise RawDataError(f"{path}: {len(X)} kept frames cannot fit a polynomial of order {order} (detrend)")
    xty = np.zeros((order + 1, len(plan.indices)))
    for rows, block in _cifti_blocks(path, plan.frames):
        xty += X[rows].T @ block.astype(np.float64)
    return np.linalg.solve(X.T @ X, xty)


def _cifti_blocks(path: Path, frames: np.ndarray):
    """Yield (row slice into ``frames``, (b, V) float32 block) reading only the needed volumes, with
    the columns in standard order whatever the file's order."""
    img, _, _, file_indices = load_header(path)
    order = standard_order(file_indices)
    for start in range(0, len(frames), _FMRI_BLOCK):
        sel = frames[start : start + _FMRI_BLOCK]
        if len(sel) == 0:
            return
        lo, hi = int(sel[0]), int(sel[-1]) + 1
        try:
            block = np.asarray(img.dataobj[lo:hi], np.float32)[sel - lo]  # (b, V)
            if order is not None:
                block = block[:, order]  # (b, V) standard order
        except Exception as e:
            raise CiftiError(
                f"{path}: cannot read volumes {lo}..{hi} (header promises {img.shape[0]} volumes x "
                f"{img.shape[1]} grayordinates): truncated or corrupt file? ({e})"
            ) from e
        if not np.isfinite(block).all():
            bad = np.argwhere(~np.isfinite(block))[0]
            raise CiftiError(
                f"{path}: NaN/Inf at volume {int(sel[bad[0]])}, grayordinate {int(bad[1])}; expected finite BOLD "
                "(censor those volumes by removing the clip, or fill them first with `eeg2fmri fill`)"
            )
        yield slice(start, start + len(sel)), block


# --------------------------------------------------------------------------------------------
# Cache identity
# --------------------------------------------------------------------------------------------


def _cache_key(runs: list[Run], o: PrepareOptions) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"version": CACHE_VERSION, "options": asdict(o)}, sort_keys=True).encode())
    for run in runs:
        for p in (run.fmri, run.beh, run.eeg, run.eeg.with_suffix(".json"), run.truth):
            if p is not None and p.exists():
                st = p.stat()
                h.update(f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _existing_key(path: Path) -> str | None:
    try:
        with h5py.File(path, "r") as h5:
            return str(h5.attrs.get("cache_key", ""))
    except Exception:  # a corrupt cache is rebuilt
        log.warning("%s exists but cannot be read: rebuilding it", path)
        return None


def prepare_subjects(
    subject_dir: str | list[str],
    out_dir: str = "data/prepared",
    shift_s: float = 4.0,
    l_freq: float = 0.1,
    h_freq: float = 75.0,
    notch_freq: float | None = 50.0,
    sfreq: float | None = 1000.0,
    ch_names: list[str] | str | None = None,
    test_fraction: float = 0.2,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    volume_marker: str = "R128",
    normalize: Literal["train", "all"] = "train",
    split: Literal["clips", "tail"] = "clips",
    detrend: Literal["none", "constant", "linear", "quadratic"] = "none",
    drop_unpaired: bool = False,
    force: bool = False,
    progress: bool = True,
) -> list[Path]:
    """Build the HDF5 cache of one or more raw subject folders (CineBrain layout; see data/README.md).

    Args:
        subject_dir: raw subject folder(s), e.g. data/raw/sub_0001.
        out_dir: folder of the caches (<subject>.h5).
        shift_s: hemodynamic shift between a frame and its EEG window, seconds.
        l_freq: EEG high-pass edge, Hz.
        h_freq: EEG low-pass edge, Hz.
        notch_freq: line-noise notch, Hz (null: none).
        sfreq: expected EEG sampling rate, Hz (null: accept the files' own rate).
        ch_names: expected EEG channels in cache order (default: the 64-channel actiCAP 10-10 montage,
            eeg2fmri.data.cinebrain.CHANNELS_64): a list, ``--ch_names [Fp1,Fp2,F7,...]``, or a text file
            with one name per line, ``--ch_names montage.txt``.
        test_fraction: fraction of clips (split=tail: of the frames) held out for testing.
        val_fraction: fraction of clips (split=tail: of the frames) used for validation.
        split_seed: seed of the clip-wise split.
        volume_marker: EEG annotation that marks fMRI volume onsets (MNE-readable formats).
        normalize: fMRI z-scoring statistics per grayordinate: train (the training frames', the
            default) or all (every kept frame, ddof 1: the CineBrain authors' choice, which lets
            test statistics into the normalisation).
        split: clips (random whole clips, the default) or tail (the last test_fraction of the
            recording's frames is test and the val_fraction before it val: the authors' benchmark).
        detrend: polynomial trend removed per run and grayordinate before z-scoring (fitted on the
            run's kept frames): none, constant (the run's mean), linear or quadratic.
        drop_unpaired: frames that lack their partner (a clip's final seconds with no fMRI volume
            shift_s later, EEG that does not cover a frame, windows beyond the run) are dropped with
            a warning instead of refusing the run.
        force: rebuild even if an up-to-date cache exists.
        progress: show a progress bar.
    """
    if isinstance(subject_dir, (str, Path)):
        subject_dir = [subject_dir]
    if Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise OutputError(f"--out_dir {out_dir}: a file; expected the folder the caches are written into")
    check_writable(out_dir, "the prepared caches", "--out_dir with a writable folder")
    options = PrepareOptions(
        shift_s=shift_s,
        l_freq=l_freq,
        h_freq=h_freq,
        notch_freq=notch_freq,
        sfreq=sfreq,
        ch_names=read_ch_names(ch_names, CHANNELS_64),
        test_fraction=test_fraction,
        val_fraction=val_fraction,
        split_seed=split_seed,
        volume_marker=volume_marker,
        normalize=normalize,
        split=split,
        detrend=detrend,
        drop_unpaired=drop_unpaired,
    )
    return [prepare(d, out_dir, options, force=force, progress=progress) for d in subject_dir]
