"""``eeg2fmri fill``: fill censored or lost frames of a user's CIFTI run from its EEG (InterRecon).

Motion scrubbing removes frames ("censoring"), and pipelines fill them by linear or spline
interpolation so that filters and connectivity can run on a regular time series. Here the
frames are filled by the paper's null-space sampling (InterRecon, Algorithm 1) conditioned on the
simultaneously recorded EEG, with every uncensored frame of each window as an anchor::

    eeg2fmri fill --ckpt_path model.ckpt --fmri run.dtseries.nii --eeg run_eeg.npy \\
                  --censor censor.tsv --out filled.dtseries.nii

What happens, in order (every check before any computation):

1. The output path must not exist (unless ``overwrite``) and its folder must be writable; the
   input files are only read.
2. The censor file (:func:`read_censor`) gives one flag per frame of the run.
3. ``interrecon``: the checkpoint's modelled grayordinates must all be in the file; each of them
   is z-scored with the run's own UNCENSORED frames' mean and std. Not the training statistics
   stored in the checkpoint: a new run or session has its own baseline and scale (scanner gain,
   intensity normalisation, drift), and the model was trained on per-grayordinate z-scores of its
   training data; the censored frames are left out because they are the corrupted (or missing)
   ones. The EEG is processed exactly as ``eeg2fmri prepare`` processed the training data, with
   the options stored in the checkpoint (filter, notch, shift, channel order, per-channel centre and
   scale, clip to ±1).
4. Windows of K frames (K = the checkpoint's ``n_frames``) slide over the run with ``stride``;
   every window holding at least one censored and one uncensored frame is sampled with the
   uncensored frames as InterRecon anchors. A censored frame covered by several windows gets the
   mean of their fills. A censored frame needs an uncensored frame within K − 1 frames; a run of
   censored frames too long for that is an error naming the frames.
5. Filled frames are mapped back to the run's units (z · std + mean). Uncensored frames are the
   input's values, copied bit for bit (never round-tripped through z-scores). Grayordinates the
   checkpoint does not model (a model trained on a region) are filled by linear interpolation in
   time, and the note in the output says so.
6. The output keeps the input's CIFTI header (brain models, series axis), NIfTI header and data
   type, plus a CIFTI metadata entry ``eeg2fmri_fill`` (JSON: method, checkpoint, censored
   frames, K, stride, steps, seed, date, ...). It is written to a temporary file and renamed.

``linear`` and ``cubic`` are the scrubbing pipelines' references (:mod:`eeg2fmri.interpolate`):
each grayordinate's time series over the whole run is interpolated between uncensored frames
(frames before the first / after the last uncensored frame take its value). They need neither a
checkpoint nor EEG.

Censored frames may hold anything, NaN included (lost volumes); uncensored frames must be finite.
"""

from __future__ import annotations

import copy
import datetime
import json
import logging
import math
import os
import tempfile
from dataclasses import fields
from pathlib import Path
from typing import Literal

import numpy as np

from eeg2fmri.data.cifti import CiftiError, atomic_save, atomic_write_text, load_header
from eeg2fmri.errors import EEG2fMRIError

log = logging.getLogger(__name__)

Method = Literal["interrecon", "linear", "cubic"]
METHODS = ("interrecon", "linear", "cubic")
_BLOCK = 8192  # grayordinates interpolated at a time (bounds memory at 91,282 x thousands of frames)


class FillError(EEG2fMRIError):
    """An input ``fill`` cannot use; the message names the file and what was expected."""


# --------------------------------------------------------------------------------------------
# Censor files
# --------------------------------------------------------------------------------------------

CENSOR_FORMATS = """\
Censor file formats (1 = censored unless stated):
  - TSV/CSV with a header (fMRIPrep / XCP-D confounds): the union of the one-hot columns
    motion_outlier00, motion_outlier01, ... ; or a column named `censored` or `outlier` (0/1).
    One row per frame.
  - no header, one 0/1 value per line, one line per frame (1 = censored). AFNI's censor files
    use the opposite convention (1 = keep, 0 = censored): pass censor_keep_is_one.
  - no header, 0-based frame indices of the censored frames, one per line or all on one line
    (separated by commas, tabs or spaces). A one-per-line list holding only 0s and 1s is read as
    a 0/1 column."""


def read_censor(path: str | os.PathLike, n_frames: int, keep_is_one: bool = False) -> np.ndarray:
    """Censored frames of a run as a bool mask (n_frames,) (True = censored); see ``CENSOR_FORMATS``.

    Args:
        path: the censor file.
        n_frames: frames of the run (T); a per-frame file must have exactly T rows.
        keep_is_one: a headerless 0/1 column marks KEPT frames with 1 (AFNI's convention).
    """
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: censor file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise FillError(f"{path}: censor file cannot be read as text ({e})") from e
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        if keep_is_one:
            raise FillError(
                f"{path}: empty censor file, but censor_keep_is_one expects one 0/1 line per frame ({n_frames})"
            )
        log.warning("%s: empty censor file; no frame is censored", path)
        return np.zeros(n_frames, bool)
    delim = "\t" if "\t" in lines[0] else ("," if "," in lines[0] else None)
    rows = [[tok.strip().strip('"') for tok in ln.split(delim)] for ln in lines]
    if any(not _is_number(tok) for tok in rows[0]):
        if keep_is_one:
            raise FillError(
                f"{path}: censor_keep_is_one applies only to a headerless 0/1 column; this file has a header"
            )
        return _censor_from_table(path, rows[0], rows[1:], n_frames)
    if any(len(r) > 1 for r in rows):
        if len(rows) > 1:
            raise FillError(
                f"{path}: {len(rows)} lines of {max(len(r) for r in rows)} values without a header; expected one "
                f"column (0/1 per frame, or frame indices) or a header naming the censor column.\n{CENSOR_FORMATS}"
            )
        return _censor_from_indices(path, rows[0], n_frames, keep_is_one)
    values = [r[0] for r in rows]
    if all(float(v) in (0.0, 1.0) for v in values) and (len(values) > 1 or n_frames == 1):
        if len(values) != n_frames:
            raise FillError(
                f"{path}: {len(values)} rows of 0/1; expected one per frame of the fMRI run ({n_frames} frames). "
                "(A frame-index list holding only 0 and 1 is read as a 0/1 column: list more frames or write a mask.)"
            )
        flags = np.array([float(v) for v in values]) == 1.0
        return ~flags if keep_is_one else flags
    return _censor_from_indices(path, values, n_frames, keep_is_one)


def _is_number(tok: str) -> bool:
    try:
        return math.isfinite(float(tok))
    except ValueError:
        return False


def _censor_from_table(path: Path, names: list[str], rows: list[list[str]], n_frames: int) -> np.ndarray:
    lower = [n.lower() for n in names]
    cols = [i for i, n in enumerate(lower) if n.startswith("motion_outlier")]
    if not cols:
        cols = [i for i, n in enumerate(lower) if n in ("censored", "outlier")]
    if not cols:
        shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
        hint = (
            " `framewise_displacement` holds motion values, not a censor: threshold it yourself (e.g. FD > 0.5 mm) "
            "and write a `censored` column."
            if "framewise_displacement" in lower
            else ""
        )
        raise FillError(
            f"{path}: found columns {shown}; expected motion_outlier* columns (fMRIPrep confounds; a confounds file "
            f"without them flags no frame: nothing to fill) or a column named `censored` or `outlier` "
            f"(1 = censored).{hint}\n{CENSOR_FORMATS}"
        )
    if len(rows) != n_frames:
        raise FillError(
            f"{path}: {len(rows)} rows (after the header); expected one per frame of the fMRI run ({n_frames} frames)"
        )
    mask = np.zeros(n_frames, bool)
    for r, row in enumerate(rows):
        for c in cols:
            tok = row[c] if c < len(row) else ""
            try:
                v = float(tok)
            except ValueError:
                v = float("nan")
            if v not in (0.0, 1.0):
                raise FillError(f"{path}, row {r + 2}, column {names[c]}: {tok!r}; expected 0 or 1 (1 = censored)")
            mask[r] |= v == 1.0
    return mask


def _censor_from_indices(path: Path, values: list[str], n_frames: int, keep_is_one: bool) -> np.ndarray:
    if keep_is_one:
        raise FillError(f"{path}: censor_keep_is_one applies only to a headerless 0/1 column (one line per frame)")
    idx = []
    for v in values:
        f = float(v)
        if f != int(f) or not 0 <= f < n_frames:
            raise FillError(
                f"{path}: frame index {v}; expected 0-based frame indices in 0..{n_frames - 1} "
                f"(the fMRI run has {n_frames} frames)"
            )
        idx.append(int(f))
    mask = np.zeros(n_frames, bool)
    mask[idx] = True
    return mask


def write_censor(path: str | os.PathLike, censored: np.ndarray) -> Path:
    """Write a censor mask as a TSV with one column ``censored`` (1 = censored), readable by
    :func:`read_censor` (and by pandas / XCP-D-style tools)."""
    text = "censored\n" + "".join(f"{int(c)}\n" for c in np.asarray(censored, bool))
    return atomic_write_text(path, text)


def _ranges(frames: np.ndarray) -> str:
    """[3, 4, 5, 9] -> '3-5, 9'."""
    frames = np.asarray(frames)
    if len(frames) == 0:
        return "none"
    breaks = np.flatnonzero(np.diff(frames) != 1)
    starts = np.concatenate([[0], breaks + 1])
    ends = np.concatenate([breaks, [len(frames) - 1]])
    return ", ".join(f"{frames[a]}" if a == b else f"{frames[a]}-{frames[b]}" for a, b in zip(starts, ends))


# --------------------------------------------------------------------------------------------
# Windows: which K-frame windows to sample
# --------------------------------------------------------------------------------------------


def plan_windows(censored: np.ndarray, n_frames: int, stride: int = 1) -> np.ndarray:
    """Starts of the K-frame windows (K = ``n_frames``) to sample: the stride grid (plus a window
    ending at the last frame) restricted to windows holding at least one censored and one
    uncensored frame, then, for any censored frame still uncovered (a coarse stride), the
    stride-1 window nearest to centring it. Raises FillError naming the frames no window can
    anchor (no uncensored frame within K − 1 frames)."""
    censored = np.asarray(censored, bool)
    T, K = len(censored), n_frames
    if T < K:
        raise FillError(f"the run has {T} frames; the model's windows are K = {K} frames: the run is too short")
    # censored frames per window start, by cumulative sums: (T - K + 1,)
    c = np.concatenate([[0], np.cumsum(censored)])
    n_cens = c[K:] - c[: T - K + 1]
    useful = (n_cens > 0) & (n_cens < K)
    grid = np.arange(0, T - K + 1, stride)
    grid = np.union1d(grid, [T - K])
    starts = set(int(s) for s in grid[useful[grid]])
    covered = np.zeros(T, bool)
    for s in starts:
        covered[s : s + K] = True
    for f in np.flatnonzero(censored & ~covered):
        if covered[f]:
            continue
        cand = np.arange(max(0, f - K + 1), min(f, T - K) + 1)
        cand = cand[useful[cand]]
        if len(cand) == 0:
            continue
        s = int(cand[np.argmin(np.abs(cand + (K - 1) / 2 - f))])
        starts.add(s)
        covered[s : s + K] = True
    lost = np.flatnonzero(censored & ~covered)
    if len(lost):
        raise FillError(
            f"censored frame(s) {_ranges(lost)} cannot be anchored: InterRecon needs an uncensored frame within "
            f"K - 1 = {K - 1} frames of each censored frame (the model's window is K = {K} frames), and these lie in "
            f"runs of consecutive censored frames that are too long. Use a model with a longer window, or "
            f"fill these frames with --method linear or cubic."
        )
    return np.array(sorted(starts), np.int64)


# --------------------------------------------------------------------------------------------
# Checkpoint and EEG
# --------------------------------------------------------------------------------------------


def load_model(ckpt_path: str | os.PathLike, device: str = "cpu"):
    """(model in eval mode, preprocessing dict) of a diffusion checkpoint written by ``eeg2fmri fit``."""
    from eeg2fmri.module import EEG2fMRIDiffusion, check_checkpoint_file

    ckpt_path = Path(ckpt_path)
    ckpt = check_checkpoint_file(ckpt_path)  # missing, unreadable or not a checkpoint: a clear error
    prep = ckpt.get("eeg2fmri_data")
    if prep is None:
        raise FillError(
            f"{ckpt_path}: the checkpoint carries no preprocessing (`eeg2fmri_data`: EEG filter, shift, scaling, "
            "grayordinates); expected a checkpoint written by `eeg2fmri fit` with a prepared cache"
        )
    hp = ckpt.get("hyper_parameters", {})
    if "latent_dim" not in hp:
        raise FillError(
            f"{ckpt_path}: not a checkpoint of the diffusion model (EEG2fMRIDiffusion); fill needs InterRecon, "
            "which the frame-by-frame baselines lack"
        )
    del ckpt
    model = EEG2fMRIDiffusion.load_from_checkpoint(ckpt_path, map_location="cpu").eval().to(device)
    return model, prep


def _options(prep: dict):
    from eeg2fmri.data.prepare import PrepareOptions

    names = {f.name for f in fields(PrepareOptions)}
    opts = {k: v for k, v in prep.get("options", {}).items() if k in names}
    if "ch_names" in opts:
        opts["ch_names"] = tuple(opts["ch_names"])
    elif prep.get("ch_names"):
        opts["ch_names"] = tuple(prep["ch_names"])
    return PrepareOptions(**opts)


def run_eeg_windows(eeg_path: str | os.PathLike, prep: dict, n_volumes: int, frames: np.ndarray) -> np.ndarray:
    """EEG windows of ``frames`` of a run, processed as ``eeg2fmri prepare`` processed the training
    data (the checkpoint's options and statistics): (len(frames), C, n_times) float32 in [-1, 1].

    Frame k is paired with samples [onset_k − shift·sfreq, onset_k − shift·sfreq + n_times). Samples
    before the recording's start (the first shift_s seconds of a run whose EEG starts with the
    scan) are set to 0, the scaled EEG's centre, with a warning; an EEG that ends before the last
    frame's window is an error (the EEG is shorter than the fMRI)."""
    from eeg2fmri.data.cinebrain import RawDataError, read_eeg
    from eeg2fmri.data.eeg import check_channels, check_covers, filtered_windows, scale_windows, volume_onsets

    o = _options(prep)
    eeg = read_eeg(Path(eeg_path), o.volume_marker)
    if eeg.windowed:
        raise RawDataError(
            f"{eeg.path}: EEG cut into one window per frame (window_volumes in its sidecar, e.g. an imported "
            "CineBrain release); fill needs the run's continuous recording to cut the windows of every frame it fills"
        )
    sfreq, n_times = float(prep["sfreq"]), int(prep["n_times"])
    if not math.isclose(eeg.sfreq, sfreq):
        raise RawDataError(
            f"{eeg.path}: sampling rate {eeg.sfreq:g} Hz; the checkpoint was trained on EEG at {sfreq:g} Hz. "
            "Resample the EEG to that rate first."
        )
    ch_order, flat = check_channels(eeg, o.ch_names)
    onsets = volume_onsets(eeg, n_volumes, n_times)
    shift = int(round(o.shift_s * sfreq))
    need = int(onsets[-1]) - shift + n_times  # end of the last frame's window (an early start is padded below)
    check_covers(
        eeg,
        0,
        need,
        sfreq,
        f"the fMRI run's {n_volumes} frames need samples up to {need} ({need / sfreq:g} s, windows {o.shift_s:g} s "
        "before each volume): the EEG is shorter than the fMRI",
    )
    starts = onsets[frames] - shift  # (F,)
    w = filtered_windows(eeg.data, starts, n_times, ch_order, sfreq, o)  # (F, C, W)
    center = np.asarray(prep["eeg_center"], np.float64)  # (C,)
    scale = np.asarray(prep["eeg_scale"], np.float64)  # (C,)
    if len(center) != len(ch_order):
        raise FillError(
            f"the checkpoint has EEG statistics for {len(center)} channels but lists {len(ch_order)} channel names"
        )
    flat_rows = [o.ch_names.index(c) for c in flat]  # flat channels: zero, as prepare repairs them
    x = scale_windows(w, center, scale, flat_rows).astype(np.float32)  # (F, C, W)
    outside = np.isnan(x)
    if outside.any():
        early = frames[outside.any(axis=(1, 2))]
        log.warning(
            "%s: the EEG windows of frame(s) %s (%g s before each volume) start before the recording; the missing "
            "samples are set to 0 (the scaled EEG's centre)",
            eeg.path,
            _ranges(early),
            o.shift_s,
        )
        x[outside] = 0.0
    return x


# --------------------------------------------------------------------------------------------
# Filling
# --------------------------------------------------------------------------------------------


def interpolate_frames(data: np.ndarray, censored: np.ndarray, method: Literal["linear", "cubic"]) -> np.ndarray:
    """Censored frames of ``data`` (T, V) by linear or cubic-spline interpolation in time over the
    whole run (:mod:`eeg2fmri.interpolate`), in float32: (n_censored, V)."""
    import torch

    from eeg2fmri.interpolate import cubic_fill, linear_fill

    fn = linear_fill if method == "linear" else cubic_fill
    observed = torch.as_tensor(~np.asarray(censored, bool))[None]  # (1, T)
    out = np.empty((int(censored.sum()), data.shape[1]), np.float32)
    for a in range(0, data.shape[1], _BLOCK):
        x = np.asarray(data[:, a : a + _BLOCK], np.float32)  # (T, b)
        x = np.where(censored[:, None], np.float32(0), x)  # censored values (maybe NaN) are never used
        out[:, a : a + _BLOCK] = fn(torch.from_numpy(x)[None], observed)[0, censored].numpy()  # (n_censored, b)
    return out


def _check_output(out: Path, inputs: list[Path], overwrite: bool) -> None:
    if out.suffix != ".nii":
        raise FillError(f"{out}: expected an output path ending in .dtseries.nii")
    for p in inputs:
        if p is not None and p.exists() and out.resolve() == p.resolve():
            raise FillError(f"{out}: is an input of this fill; the inputs are never modified: choose another --out")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out}: exists; refusing to replace it (pass --overwrite to replace it)")
    folder = out.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".probe", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise PermissionError(
            f"{folder}: output folder is not writable ({e.strerror or e}); choose another --out"
        ) from e


def fill_run(
    ckpt_path: str | os.PathLike | None,
    fmri: str | os.PathLike,
    eeg: str | os.PathLike | None,
    censor: str | os.PathLike | np.ndarray,
    out: str | os.PathLike,
    method: Method = "interrecon",
    stride: int = 1,
    num_inference_steps: int = 50,
    eta: float = 0.0,
    seed: int = 0,
    overwrite: bool = False,
    censor_keep_is_one: bool = False,
    progress: bool = True,
    batch_size: int = 16,
    device: str | None = None,
    num_samples: int = 1,
) -> Path:
    """Fill the censored frames of one CIFTI run and write the result (see the module docstring).

    Args:
        ckpt_path: diffusion checkpoint (``eeg2fmri fit``); needed for ``interrecon`` only.
        fmri: the run, a CIFTI-2 ``.dtseries.nii`` (standard fsLR-32k grayordinates or a subset).
        eeg: the run's EEG (``.npy`` + ``.json`` sidecar or an MNE-readable file); ``interrecon`` only.
        censor: censor file (:func:`read_censor`) or a bool mask (T,) (True = censored).
        out: the filled ``.dtseries.nii`` to write.
        method: ``interrecon`` (EEG-conditioned null-space sampling), ``linear`` or ``cubic``.
        stride: frames between consecutive sampled windows (1 = every window; overlaps are averaged).
        num_inference_steps: DDIM steps of each InterRecon sample.
        eta: DDIM η (0 = deterministic given the seed).
        seed: seed of the sampler's noise (window batch i, sample j uses seed + i * num_samples + j).
        overwrite: replace an existing output file.
        censor_keep_is_one: a headerless 0/1 censor column marks kept frames with 1 (AFNI).
        progress: show a progress bar over windows and print a summary line.
        batch_size: windows sampled at once.
        device: torch device (default: cuda if available, else cpu).
        num_samples: InterRecon samples drawn per window and averaged (toward the posterior mean given
            the EEG and the anchors; one sample adds the posterior's spread to every filled frame).

    Returns:
        the path written.
    """
    if method not in METHODS:
        raise FillError(f"method {method!r}: expected one of {', '.join(METHODS)}")
    if stride < 1:
        raise FillError(f"stride={stride}: expected a positive number of frames")
    if num_samples < 1:
        raise FillError(f"num_samples={num_samples}: expected a positive number of InterRecon samples per window")
    fmri, out = Path(fmri), Path(out)
    ckpt_path = Path(ckpt_path) if ckpt_path is not None else None
    eeg = Path(eeg) if eeg is not None else None
    censor_path = None if isinstance(censor, np.ndarray) else Path(censor)
    if method == "interrecon" and (ckpt_path is None or eeg is None):
        raise FillError("method interrecon needs --ckpt_path (a diffusion checkpoint) and --eeg (the run's EEG)")
    for p in (
        fmri,
        ckpt_path if method == "interrecon" else None,
        eeg if method == "interrecon" else None,
        censor_path,
    ):
        if p is not None and not p.exists():
            raise FileNotFoundError(f"{p}: no such file")
    _check_output(out, [fmri, eeg, censor_path, ckpt_path], overwrite)

    img, bm, tr, indices = load_header(fmri)
    T, V = img.shape
    if isinstance(censor, np.ndarray):
        censored = np.asarray(censor)
        if censored.dtype != bool or censored.shape != (T,):
            raise FillError(f"censor mask: {censored.dtype} {censored.shape}; expected bool ({T},) for {fmri}")
    else:
        censored = read_censor(censor_path, T, keep_is_one=censor_keep_is_one)
    n_cens = int(censored.sum())
    if n_cens == T:
        raise FillError(
            f"{censor_path or 'censor mask'}: all {T} frames of {fmri} are censored; nothing to anchor a fill"
        )

    try:
        data = np.array(img.dataobj)  # (T, V) the file's own dtype: uncensored frames copied bit for bit
    except Exception as e:
        raise CiftiError(f"{fmri}: data block cannot be read (truncated or corrupt file?): {e}") from e
    bad = ~np.isfinite(data[~censored]).all(axis=1)
    if bad.any():
        frames = np.flatnonzero(~censored)[bad]
        raise FillError(f"{fmri}: uncensored frame(s) {_ranges(frames)} hold NaN/Inf; censor them or repair the file")

    note: dict = {
        "method": method,
        "fmri": str(fmri),
        "censor": str(censor_path) if censor_path else None,
        "censored_frames": np.flatnonzero(censored).tolist(),
        "n_censored": n_cens,
        "n_frames": T,
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    result = data.copy()
    if n_cens == 0:
        log.warning("%s: no frame is censored; the output is a copy of the input", censor_path)
    elif method in ("linear", "cubic"):
        result[censored] = interpolate_frames(data, censored, method).astype(data.dtype)
    else:
        filled, extra = _interrecon(
            ckpt_path,
            eeg,
            data,
            censored,
            indices,
            tr,
            fmri,
            stride,
            num_inference_steps,
            eta,
            seed,
            batch_size,
            device,
            progress,
            num_samples,
        )
        result[censored] = filled.astype(data.dtype)
        note.update(extra)

    header = copy.deepcopy(img.header)
    meta = dict(header.matrix.metadata or {})
    meta["eeg2fmri_fill"] = json.dumps(note)
    header.matrix.metadata = _metadata(meta)
    new = type(img)(result, header=header, nifti_header=img.nifti_header)
    atomic_save(out, lambda tmp: new.to_filename(tmp, dtype=img.get_data_dtype()))
    msg = f"fill: {n_cens} censored frames of {T} filled with {method} → {out}"
    if progress:
        print(msg, flush=True)
    else:
        log.info(msg)
    return out


def _metadata(d: dict):
    from nibabel.cifti2 import Cifti2MetaData

    return Cifti2MetaData(d)


def _interrecon(
    ckpt_path,
    eeg_path,
    data,
    censored,
    indices,
    tr,
    fmri,
    stride,
    steps,
    eta,
    seed,
    batch_size,
    device,
    progress,
    num_samples,
) -> tuple[np.ndarray, dict]:
    """InterRecon fills of the censored frames, (n_censored, V) float64 in the run's units, and the note."""
    import torch
    from tqdm.auto import tqdm

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, prep = load_model(ckpt_path, device)
    K = int(model.hparams.n_frames)
    gray = np.asarray(prep["grayordinates"], np.int64)  # (V_model,) standard indices
    # the file's column of each modelled grayordinate (the file may be in any column order: fMRIPrep
    # <= 23.1 wrote subcortical voxels row-major), so the output keeps the file's own order
    srt = np.argsort(indices, kind="stable")
    at = np.minimum(np.searchsorted(indices[srt], gray), len(indices) - 1)
    inside = indices[srt][at] == gray
    pos = srt[at]  # (V_model,) file columns
    if not inside.all():
        raise CiftiError(
            f"{fmri}: has {len(indices)} grayordinates but the checkpoint {ckpt_path} models {len(gray)}, of which "
            f"{int((~inside).sum())} are not in the file (region {prep.get('region', '?')!r}); expected a file holding "
            "every grayordinate the model was trained on (the same layout, or a superset)"
        )
    if not math.isclose(tr, float(prep["tr"]), rel_tol=1e-4):
        raise CiftiError(f"{fmri}: TR {tr:g} s; the checkpoint was trained on TR {float(prep['tr']):g} s")
    starts = plan_windows(censored, K, stride)  # (N,) checked before the EEG is read

    T = data.shape[0]
    before, after = model.eeg_context  # EEG windows of frames before / after each window, as in training
    span = np.arange(-before, K + after)  # (N,) EEG frames of a window, relative to its start
    rows = np.unique(np.clip(starts[:, None] + span, 0, T - 1))  # frames whose EEG any window needs
    eeg_rows = run_eeg_windows(eeg_path, prep, T, rows)  # (R, C, W)
    row_of = np.full(T, -1)
    row_of[rows] = np.arange(len(rows))

    # z-score the modelled grayordinates with the run's own uncensored frames (see module docstring)
    x = data[:, pos]  # (T, V_model)
    kept = x[~censored]  # (T_kept, V_model)
    mean = kept.mean(0, dtype=np.float64)  # (V_model,)
    std = kept.std(0, dtype=np.float64)
    del kept
    std = np.where(std < 1e-6 * np.maximum(1.0, np.abs(mean)), 1.0, std)  # constant columns stay at 0
    z = ((x - mean) / std).astype(np.float32)  # (T, V_model)
    z[censored] = 0.0  # censored values (maybe NaN) are never anchors

    cens = np.flatnonzero(censored)
    slot = np.full(T, -1)
    slot[cens] = np.arange(len(cens))
    acc = np.zeros((len(cens), len(gray)), np.float64)  # sum of the fills of each censored frame
    count = np.zeros(len(cens), np.int64)
    bar = tqdm(total=len(starts), desc="fill", unit="window", disable=not progress)
    with torch.no_grad():
        for i, b in enumerate(range(0, len(starts), batch_size)):
            s = starts[b : b + batch_size]
            frames = s[:, None] + np.arange(K)  # (B, K)
            efr = s[:, None] + span  # (B, N) EEG frames, context included
            inside = (efr >= 0) & (efr < T)  # context beyond the run's ends is missing
            eeg_b = eeg_rows[row_of[np.clip(efr, 0, T - 1)]] * inside[..., None, None]  # (B, N, C, W)
            eeg_b, eeg_mask = torch.from_numpy(eeg_b).to(device), torch.from_numpy(inside).to(device)
            obs = torch.from_numpy(z[frames]).to(device)  # (B, K, V_model)
            mask = torch.from_numpy(~censored[frames]).to(device)  # (B, K) True = anchor
            pred = model.sample_mean(
                eeg_b,
                num_samples,
                seed=seed + i * num_samples,
                num_inference_steps=steps,
                eta=eta,
                observed=obs,
                observed_mask=mask,
                null_space=True,
                eeg_mask=eeg_mask,
            )  # (B, K, V_model)
            pred = pred.double().cpu().numpy()
            fill = censored[frames]  # (B, K)
            np.add.at(acc, slot[frames[fill]], pred[fill])
            np.add.at(count, slot[frames[fill]], 1)
            bar.update(len(s))
    bar.close()
    assert (count > 0).all(), "plan_windows guarantees every censored frame a window"
    z_fill = acc / count[:, None]  # (n_censored, V_model) mean over the windows that filled it
    filled = np.empty((len(cens), data.shape[1]), np.float64)
    other = np.setdiff1d(np.arange(data.shape[1]), pos)
    if len(other):  # grayordinates the model does not cover: linear interpolation in time
        filled[:, other] = interpolate_frames(data[:, other], censored, "linear")
    filled[:, pos] = z_fill * std + mean
    note = {
        "checkpoint": str(ckpt_path),
        "eeg": str(eeg_path),
        "n_frames_window": K,
        "stride": stride,
        "num_inference_steps": steps,
        "eta": eta,
        "seed": seed,
        "num_samples": num_samples,
        "n_windows": int(len(starts)),
        "grayordinates_interrecon": int(len(pos)),
        "grayordinates_linear": int(len(other)),
        "normalisation": "each modelled grayordinate z-scored with the run's uncensored frames' mean/std",
    }
    if len(other):
        note["linear_note"] = (
            f"{len(other)} grayordinates outside the model's region ({prep.get('region', '?')}) were filled by "
            "linear interpolation in time"
        )
    return filled, note


def fill(
    fmri: str,
    censor: str,
    out: str,
    ckpt_path: str | None = None,
    eeg: str | None = None,
    method: Method = "interrecon",
    stride: int = 1,
    num_inference_steps: int = 50,
    eta: float = 0.0,
    seed: int = 0,
    batch_size: int = 16,
    overwrite: bool = False,
    censor_keep_is_one: bool = False,
    progress: bool = True,
    num_samples: int = 1,
) -> Path:
    """Fill censored (motion-scrubbed) or lost frames of a CIFTI run from its EEG with InterRecon,
    or by linear / cubic-spline interpolation; uncensored frames are kept bit for bit.

    Args:
        fmri: the run to fill, a CIFTI-2 .dtseries.nii (fsLR-32k grayordinates or a subset of them).
        censor: censor file, one flag per frame (frames = fMRI volumes, TR apart): a TSV/CSV with
            motion_outlier* columns (fMRIPrep confounds) or a `censored` / `outlier` column (1 =
            censored); or a headerless 0/1 column (1 = censored); or headerless 0-based frame indices.
        out: the filled .dtseries.nii to write (refused if it exists, unless --overwrite).
        ckpt_path: diffusion checkpoint from `eeg2fmri fit` (interrecon only).
        eeg: the run's EEG: .npy + .json sidecar (sfreq in Hz, ch_names, volume_onsets in samples or
            volume_onsets_s in seconds) or an MNE-readable file with volume markers (interrecon only),
            a continuous recording (not per-frame windows). Frame k gets the EEG of one
            TR starting shift_s seconds (the checkpoint's, 4 s by default) before volume k's onset.
        method: interrecon (EEG-conditioned null-space sampling), linear or cubic (interpolation in time).
        stride: frames (TRs) between consecutive K-frame windows; overlapping fills are averaged.
        num_inference_steps: DDIM steps per InterRecon sample.
        eta: DDIM eta (0: deterministic given the seed).
        seed: seed of the sampler's noise.
        batch_size: windows sampled at once.
        overwrite: replace an existing output file.
        censor_keep_is_one: a headerless 0/1 censor column marks KEPT frames with 1 (AFNI's convention).
        progress: show a progress bar and a summary line.
        num_samples: InterRecon samples per window, averaged (toward the posterior mean; each costs a
            sampling run of every window).
    """
    return fill_run(
        ckpt_path,
        fmri,
        eeg,
        censor,
        out,
        method=method,
        stride=stride,
        num_inference_steps=num_inference_steps,
        eta=eta,
        seed=seed,
        overwrite=overwrite,
        censor_keep_is_one=censor_keep_is_one,
        progress=progress,
        batch_size=batch_size,
        num_samples=num_samples,
    )
