"""``eeg2fmri fill``: fill censored or lost frames of a user's CIFTI run from its model and EEG.

Motion scrubbing removes frames ("censoring"), and pipelines fill them by linear or spline
interpolation so that filters and connectivity can run on a regular time series. Here the
frames are filled from the trained model: by default (``gaussian``) with the conditional mean of
the model's frame latents given the uncensored frames around each gap, around the EEG's
prediction μ; or by the paper's null-space sampling (``interrecon``, Algorithm 1) conditioned on the
simultaneously recorded EEG, with every uncensored frame of each window as an anchor::

    eeg2fmri fill --ckpt_path model.ckpt --fmri run.dtseries.nii --eeg run_eeg.npy \\
                  --censor censor.tsv --out filled.dtseries.nii [--method interrecon]

The default is the method closest to the recorded frames in the project's measurements (Table 2 and
the censored-frame study at SCALE=small and at the paper-length tier, notes/interrecon.md): the
Gaussian conditional fill, tied with InterRecon in Table 2 at the tier, a little ahead of it in the
study, both far ahead of linear interpolation; InterRecon is the closer of the two to the noise-free
signal in the study, and takes about twice the time.

What happens, in order (every check before any computation):

1. The output path must not exist (unless ``overwrite``) and its folder must be writable; the
   input files are only read.
2. The censor file (:func:`~eeg2fmri.data.censor.read_censor`) gives one flag per frame of the run.
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
   uncensored frames as InterRecon anchors, its DDIM chain started at the noise's mean x_T = 0
   (``start="zero"``: one deterministic chain, the estimate of the conditional mean; ``random``
   averages ``num_samples`` draws). A censored frame covered by several windows gets the mean of
   their fills. A censored frame needs an uncensored frame within K − 1 frames; a run of
   censored frames too long for that is an error naming the frames.
5. Filled frames are mapped back to the run's units (z · std + mean). Uncensored frames are the
   input's values, copied bit for bit (never round-tripped through z-scores). Grayordinates the
   checkpoint does not model (a model trained on a region) are filled by linear interpolation in
   time, and the note in the output says so.
6. The output keeps the input's CIFTI header (brain models, series axis), NIfTI header and data
   type, plus a CIFTI metadata entry ``eeg2fmri_fill`` (JSON: method, checkpoint, censored
   frames, K, stride, steps, seed, date, ...). It is written to a temporary file and renamed.

``gaussian`` (the default) is also the statistical reference the sampler has to beat (:mod:`eeg2fmri.gaussian`):
the same z-scoring and checkpoint checks as steps 1-3, then each latent dim's conditional mean given
the uncensored frames around each run of censored frames, under the stationary Gaussian model of
the latents that ``eeg2fmri fit`` estimated on the training split and stored in the checkpoint
(temporal autocovariance per dim). With a regression stage and ``eeg`` its mean is μ(EEG) of each
frame; without ``eeg`` the training latents' mean. The latents are decoded and mapped back as in
step 5. A checkpoint written before those statistics existed is refused (refit it).

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

from eeg2fmri.data.censor import read_censor
from eeg2fmri.data.cifti import CiftiError, atomic_save, load_header
from eeg2fmri.data.frames import segment_bounds, zscore_std
from eeg2fmri.errors import EEG2fMRIError, check_option, check_positive

log = logging.getLogger(__name__)

Method = Literal["interrecon", "gaussian", "linear", "cubic"]
METHODS = ("interrecon", "gaussian", "linear", "cubic")
Start = Literal["zero", "random"]  # where InterRecon's DDIM chain starts (fill_run's ``start``)
STARTS = ("zero", "random")
_BLOCK = 8192  # grayordinates interpolated at a time (bounds memory at 91,282 x thousands of frames)


class FillError(EEG2fMRIError):
    """An input ``fill`` cannot use; the message names the file and what was expected."""


def _ranges(frames: np.ndarray) -> str:
    """[3, 4, 5, 9] -> '3-5, 9'."""
    frames = np.asarray(frames)
    if len(frames) == 0:
        return "none"
    starts, stops = segment_bounds(frames)
    ends = stops - 1
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
    from eeg2fmri.checkpoint import check_checkpoint_file
    from eeg2fmri.module import EEG2fMRIDiffusion

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
    method: Method = "gaussian",
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
    start: Start = "zero",
) -> Path:
    """Fill the censored frames of one CIFTI run and write the result (see the module docstring).
    (Long only by its seventeen documented arguments, which ``eeg2fmri fill --help`` shows; the body
    is a sequence of named steps.)

    Args:
        ckpt_path: diffusion checkpoint (``eeg2fmri fit``); needed for ``interrecon`` and ``gaussian``.
        fmri: the run, a CIFTI-2 ``.dtseries.nii`` (standard fsLR-32k grayordinates or a subset).
        eeg: the run's EEG (``.npy`` + ``.json`` sidecar or an MNE-readable file); ``interrecon``, and
            ``gaussian`` for μ (optional there).
        censor: censor file (:func:`~eeg2fmri.data.censor.read_censor`) or a bool mask (T,) (True = censored).
        out: the filled ``.dtseries.nii`` to write.
        method: ``gaussian`` (the default: the latents' Gaussian conditional mean, around μ(EEG)
            with a regression stage and ``eeg``), ``interrecon`` (EEG-conditioned null-space
            sampling), ``linear`` or ``cubic``.
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
            the EEG and the anchors; one sample adds the posterior's spread to every filled frame);
            with ``start="random"`` only.
        start: where each window's DDIM chain starts: ``zero``, the noise's mean x_T = 0 (one
            deterministic chain, the estimate of the conditional mean: better than a mean of 4
            samples in Table 2, at the cost of one), or ``random`` draws, ``num_samples`` of them averaged.

    Returns:
        the path written.
    """
    fmri, out = Path(fmri), Path(out)
    ckpt_path = Path(ckpt_path) if ckpt_path is not None else None
    eeg = Path(eeg) if eeg is not None else None
    censor_path = None if isinstance(censor, np.ndarray) else Path(censor)
    check_positive("--", num_inference_steps=num_inference_steps, batch_size=batch_size)
    check_option("--eta", eta, eta >= 0, "DDIM's eta >= 0 (0: deterministic, 1: DDPM's variance)")
    _check_inputs(method, stride, num_samples, start, fmri, ckpt_path, eeg, censor_path, out, overwrite)

    img, bm, tr, indices = load_header(fmri)
    T = img.shape[0]
    censored = _censor_mask(censor, censor_path, fmri, T, censor_keep_is_one)  # (T,) True = censored
    data = _read_frames(img, fmri, censored)  # (T, V)
    n_cens = int(censored.sum())
    note = _fill_note(method, fmri, censor_path, censored)
    result = data.copy()
    if n_cens == 0:
        log.warning("%s: no frame is censored; the output is a copy of the input", censor_path)
    elif method in ("linear", "cubic"):
        result[censored] = interpolate_frames(data, censored, method).astype(data.dtype)
    elif method == "gaussian":
        filled, extra = _gaussian(ckpt_path, eeg, data, censored, indices, tr, fmri, device)
        result[censored] = filled.astype(data.dtype)
        note.update(extra)
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
            start,
        )
        result[censored] = filled.astype(data.dtype)
        note.update(extra)

    _write_filled(img, result, note, out)
    msg = f"fill: {n_cens} censored frames of {T} filled with {method} → {out}"
    if progress:
        print(msg, flush=True)
    else:
        log.info(msg)
    return out


def _check_inputs(
    method: str,
    stride: int,
    num_samples: int,
    start: str,
    fmri: Path,
    ckpt_path: Path | None,
    eeg: Path | None,
    censor_path: Path | None,
    out: Path,
    overwrite: bool,
) -> None:
    """Every check of the options and paths that needs no file read: a bad option or a missing
    input fails before anything is loaded."""
    if method not in METHODS:
        raise FillError(f"method {method!r}: expected one of {', '.join(METHODS)}")
    if stride < 1:
        raise FillError(f"stride={stride}: expected a positive number of frames")
    if num_samples < 1:
        raise FillError(f"num_samples={num_samples}: expected a positive number of InterRecon samples per window")
    if start not in STARTS:
        raise FillError(f"start {start!r}: expected one of {', '.join(STARTS)}")
    if start == "zero" and num_samples > 1:
        raise FillError(
            f"num_samples={num_samples} with start zero: the chain from x_T = 0 is one deterministic estimate of "
            "the mean; to average random samples give --start random"
        )
    if method == "interrecon" and (ckpt_path is None or eeg is None):
        raise FillError("method interrecon needs --ckpt_path (a diffusion checkpoint) and --eeg (the run's EEG)")
    if method == "gaussian" and ckpt_path is None:
        raise FillError(
            "method gaussian (the default) needs --ckpt_path (a diffusion checkpoint: its autoencoder and the "
            "statistics of its latents), and uses --eeg when given; without a checkpoint fill with --method linear "
            "or cubic"
        )
    model_based = method in ("interrecon", "gaussian")
    for p in (
        fmri,
        ckpt_path if model_based else None,
        eeg if model_based else None,
        censor_path,
    ):
        if p is not None and not p.exists():
            raise FileNotFoundError(f"{p}: no such file")
    _check_output(out, [fmri, eeg, censor_path, ckpt_path], overwrite)


def _censor_mask(
    censor: np.ndarray | Path, censor_path: Path | None, fmri: Path, n_volumes: int, keep_is_one: bool
) -> np.ndarray:
    """The run's censored frames, (n_volumes,) bool, from a censor file or a caller's mask; at least
    one frame must stay uncensored to anchor a fill."""
    if isinstance(censor, np.ndarray):
        censored = np.asarray(censor)
        if censored.dtype != bool or censored.shape != (n_volumes,):
            raise FillError(f"censor mask: {censored.dtype} {censored.shape}; expected bool ({n_volumes},) for {fmri}")
    else:
        censored = read_censor(censor_path, n_volumes, keep_is_one=keep_is_one)
    if int(censored.sum()) == n_volumes:
        raise FillError(
            f"{censor_path or 'censor mask'}: all {n_volumes} frames of {fmri} are censored; nothing to anchor a fill"
        )
    return censored


def _read_frames(img, fmri: Path, censored: np.ndarray) -> np.ndarray:
    """The run's data block (T, V) in the file's own dtype (uncensored frames are copied bit for
    bit); every uncensored frame must be finite."""
    try:
        data = np.array(img.dataobj)  # (T, V)
    except Exception as e:
        raise CiftiError(f"{fmri}: data block cannot be read (truncated or corrupt file?): {e}") from e
    bad = ~np.isfinite(data[~censored]).all(axis=1)
    if bad.any():
        frames = np.flatnonzero(~censored)[bad]
        raise FillError(f"{fmri}: uncensored frame(s) {_ranges(frames)} hold NaN/Inf; censor them or repair the file")
    return data


def _fill_note(method: str, fmri: Path, censor_path: Path | None, censored: np.ndarray) -> dict:
    """The output's ``eeg2fmri_fill`` entry: what was filled, from which files, when (InterRecon
    adds its settings)."""
    return {
        "method": method,
        "fmri": str(fmri),
        "censor": str(censor_path) if censor_path else None,
        "censored_frames": np.flatnonzero(censored).tolist(),
        "n_censored": int(censored.sum()),
        "n_frames": len(censored),  # the run's volumes (T), not the model's K
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }


def _write_filled(img, result: np.ndarray, note: dict, out: Path) -> None:
    """Write ``result`` (T, V) with the input's CIFTI and NIfTI headers and data type, plus the
    ``eeg2fmri_fill`` metadata entry (``note`` as JSON), through a temporary file renamed to ``out``."""
    header = copy.deepcopy(img.header)
    meta = dict(header.matrix.metadata or {})
    meta["eeg2fmri_fill"] = json.dumps(note)
    header.matrix.metadata = _metadata(meta)
    new = type(img)(result, header=header, nifti_header=img.nifti_header)
    atomic_save(out, lambda tmp: new.to_filename(tmp, dtype=img.get_data_dtype()))


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
    start,
) -> tuple[np.ndarray, dict]:
    """InterRecon fills of the censored frames, (n_censored, V) float64 in the run's units, and the note."""
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, prep, pos = _open_model(ckpt_path, indices, tr, fmri, device)  # pos: (V_model,) file columns
    K = int(model.hparams.n_frames)
    starts = plan_windows(censored, K, stride)  # (N,) checked before the EEG is read
    eeg = _WindowEEG(eeg_path, prep, model.eeg_context, K, starts, len(censored))
    z, mean, std = _run_zscores(data[:, pos], censored)  # (T, V_model), (V_model,), (V_model,)
    z_fill = _sample_windows(
        model,
        eeg,
        z,
        censored,
        starts,
        steps=steps,
        eta=eta,
        seed=seed,
        batch_size=batch_size,
        num_samples=num_samples,
        zero_noise=start == "zero",
        device=device,
        progress=progress,
    )  # (n_censored, V_model)
    filled, other = _in_run_units(data, censored, pos, z_fill, mean, std)  # (n_censored, V)
    note = {
        "checkpoint": str(ckpt_path),
        "eeg": str(eeg_path),
        "n_frames_window": K,
        "stride": stride,
        "num_inference_steps": steps,
        "eta": eta,
        "seed": seed,
        "num_samples": num_samples,
        "start": start,
        "n_windows": int(len(starts)),
        "grayordinates_interrecon": int(len(pos)),
        **_region_note(other, prep),
    }
    return filled, note


def _gaussian(ckpt_path, eeg_path, data, censored, indices, tr, fmri, device) -> tuple[np.ndarray, dict]:
    """Gaussian conditional fills of the censored frames, (n_censored, V) float64 in the run's units,
    and the note: each latent dim's conditional mean given the run's uncensored frames under the
    checkpoint's stationary Gaussian model of its latents (:meth:`EEG2fMRIDiffusion.gaussian_fill`),
    around μ from the run's EEG when the model has a regression stage and ``eeg_path`` is given."""
    import torch

    from eeg2fmri.gaussian import valid_lags

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, prep, pos = _open_model(ckpt_path, indices, tr, fmri, device)  # pos: (V_model,) file columns
    if not model.has_gaussian:
        raise FillError(
            f"{ckpt_path}: the checkpoint holds no statistics of its latents for --method gaussian (it was written "
            "before `eeg2fmri fit` stored them); refit the model, or fill with --method interrecon, linear or cubic"
        )
    T = len(censored)
    use_mu = model.regression_head is not None and eeg_path is not None
    eeg = eeg_mask = None
    if use_mu:  # the EEG of every frame of the run, with the model's context: one window of T frames
        run = _WindowEEG(eeg_path, prep, model.eeg_context, T, np.zeros(1, np.int64), T)
        eeg, eeg_mask = (torch.from_numpy(a).to(device) for a in run.batch(np.zeros(1, np.int64)))
        del run  # (1, P + T + F, C, W) and (1, P + T + F)
    elif model.regression_head is not None:
        log.info("%s: no --eeg: the Gaussian fill's mean is the training latents' mean, not μ(EEG)", fmri)
    z, mean, std = _run_zscores(data[:, pos], censored)  # (T, V_model), (V_model,), (V_model,)
    x = torch.from_numpy(z)[None].to(device)  # (1, T, V_model)
    observed = torch.from_numpy(~censored)[None].to(device)  # (1, T)
    z_fill = model.gaussian_fill(x, observed, eeg, eeg_mask)[0][~observed[0]]  # (n_censored, V_model)
    filled, other = _in_run_units(data, censored, pos, z_fill.double().cpu().numpy(), mean, std)
    note = {
        "checkpoint": str(ckpt_path),
        "eeg": str(eeg_path) if use_mu else None,
        "mean": "μ, the regression stage's prediction from the run's EEG"
        if use_mu
        else "the training latents' mean (no EEG)",
        "lags": valid_lags(model.gauss_z_acov),
        "grayordinates_gaussian": int(len(pos)),
        **_region_note(other, prep),
    }
    return filled, note


def _open_model(ckpt_path, indices: np.ndarray, tr: float, fmri: Path, device: str):
    """(model, preprocessing, the file's column of each modelled grayordinate (V_model,)) of a
    diffusion checkpoint, with the run's layout and TR checked against it."""
    model, prep = load_model(ckpt_path, device)
    pos = _model_columns(indices, prep, fmri, ckpt_path)  # (V_model,)
    if not math.isclose(tr, float(prep["tr"]), rel_tol=1e-4):
        raise CiftiError(f"{fmri}: TR {tr:g} s; the checkpoint was trained on TR {float(prep['tr']):g} s")
    return model, prep, pos


def _in_run_units(
    data: np.ndarray, censored: np.ndarray, pos: np.ndarray, z_fill: np.ndarray, mean: np.ndarray, std: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The censored frames in the run's units, (n_censored, V) float64: the model's fills ``z_fill``
    (n_censored, V_model) of the modelled columns mapped back (z · std + mean), the other columns
    (outside the model's region) interpolated linearly in time; and those other columns."""
    filled = np.empty((int(censored.sum()), data.shape[1]), np.float64)
    other = np.setdiff1d(np.arange(data.shape[1]), pos)
    if len(other):  # grayordinates the model does not cover: linear interpolation in time
        filled[:, other] = interpolate_frames(data[:, other], censored, "linear")
    filled[:, pos] = z_fill * std + mean
    return filled, other


def _region_note(other: np.ndarray, prep: dict) -> dict:
    note = {
        "grayordinates_linear": int(len(other)),
        "normalisation": "each modelled grayordinate z-scored with the run's uncensored frames' mean/std",
    }
    if len(other):
        note["linear_note"] = (
            f"{len(other)} grayordinates outside the model's region ({prep.get('region', '?')}) were filled by "
            "linear interpolation in time"
        )
    return note


def _model_columns(indices: np.ndarray, prep: dict, fmri: Path, ckpt_path: Path) -> np.ndarray:
    """The file's column of each grayordinate the checkpoint models, (V_model,). The file may be in
    any column order (fMRIPrep <= 23.1 wrote subcortical voxels row-major), so the output keeps the
    file's own order; every modelled grayordinate must be in the file."""
    gray = np.asarray(prep["grayordinates"], np.int64)  # (V_model,) standard indices
    srt = np.argsort(indices, kind="stable")
    at = np.minimum(np.searchsorted(indices[srt], gray), len(indices) - 1)
    inside = indices[srt][at] == gray
    if not inside.all():
        raise CiftiError(
            f"{fmri}: has {len(indices)} grayordinates but the checkpoint {ckpt_path} models {len(gray)}, of which "
            f"{int((~inside).sum())} are not in the file (region {prep.get('region', '?')!r}); expected a file holding "
            "every grayordinate the model was trained on (the same layout, or a superset)"
        )
    return srt[at]


def _run_zscores(x: np.ndarray, censored: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The modelled columns ``x`` (T, V_model) z-scored with the run's own uncensored frames (see
    the module docstring): (z float32 with censored frames at 0, mean, std)."""
    kept = x[~censored]  # (T_kept, V_model)
    mean = kept.mean(0, dtype=np.float64)  # (V_model,)
    std = kept.std(0, dtype=np.float64)
    del kept
    std, _ = zscore_std(mean, std)  # constant columns stay at 0
    z = ((x - mean) / std).astype(np.float32)  # (T, V_model)
    z[censored] = 0.0  # censored values (maybe NaN) are never anchors
    return z, mean, std


class _WindowEEG:
    """The EEG of the sampled windows, each frame's window read and processed once.

    A window starting at frame s sees the EEG windows of frames s − P .. s + K − 1 + F (the model's
    ``eeg_context`` (P, F), as in training); context frames beyond the run's ends are missing
    (zeros, masked out).
    """

    def __init__(self, eeg_path, prep: dict, eeg_context: tuple[int, int], K: int, starts: np.ndarray, T: int):
        before, after = eeg_context
        self.T = T
        self.span = np.arange(-before, K + after)  # (N,) EEG frames of a window, relative to its start
        rows = np.unique(np.clip(starts[:, None] + self.span, 0, T - 1))  # frames whose EEG any window needs
        self.rows = run_eeg_windows(eeg_path, prep, T, rows)  # (R, C, W)
        self.row_of = np.full(T, -1)
        self.row_of[rows] = np.arange(len(rows))

    def batch(self, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(EEG (B, N, C, W), mask (B, N) True = present) of the windows starting at ``s`` (B,)."""
        efr = s[:, None] + self.span  # (B, N) EEG frames, context included
        inside = (efr >= 0) & (efr < self.T)  # context beyond the run's ends is missing
        return self.rows[self.row_of[np.clip(efr, 0, self.T - 1)]] * inside[..., None, None], inside


def _sample_windows(
    model,
    eeg: _WindowEEG,
    z: np.ndarray,
    censored: np.ndarray,
    starts: np.ndarray,
    *,
    steps: int,
    eta: float,
    seed: int,
    batch_size: int,
    num_samples: int,
    zero_noise: bool,
    device: str,
    progress: bool,
) -> np.ndarray:
    """InterRecon over the windows starting at ``starts``, every uncensored frame an anchor: the mean
    fill of each censored frame over the windows covering it, (n_censored, V_model) float64 z-scores."""
    import torch
    from tqdm.auto import tqdm

    K = int(model.hparams.n_frames)
    cens = np.flatnonzero(censored)
    slot = np.full(len(censored), -1)
    slot[cens] = np.arange(len(cens))
    acc = np.zeros((len(cens), z.shape[1]), np.float64)  # sum of the fills of each censored frame
    count = np.zeros(len(cens), np.int64)
    bar = tqdm(total=len(starts), desc="fill", unit="window", disable=not progress)
    with torch.no_grad():
        for i, b in enumerate(range(0, len(starts), batch_size)):
            s = starts[b : b + batch_size]
            frames = s[:, None] + np.arange(K)  # (B, K)
            eeg_b, eeg_mask = eeg.batch(s)  # (B, N, C, W), (B, N)
            eeg_b, eeg_mask = torch.from_numpy(eeg_b).to(device), torch.from_numpy(eeg_mask).to(device)
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
                zero_noise=zero_noise,
            )  # (B, K, V_model)
            pred = pred.double().cpu().numpy()
            fill = censored[frames]  # (B, K)
            np.add.at(acc, slot[frames[fill]], pred[fill])
            np.add.at(count, slot[frames[fill]], 1)
            bar.update(len(s))
    bar.close()
    assert (count > 0).all(), "plan_windows guarantees every censored frame a window"
    return acc / count[:, None]  # (n_censored, V_model) mean over the windows that filled it


def fill(
    fmri: str,
    censor: str,
    out: str,
    ckpt_path: str | None = None,
    eeg: str | None = None,
    method: Method = "gaussian",
    stride: int = 1,
    num_inference_steps: int = 50,
    eta: float = 0.0,
    seed: int = 0,
    batch_size: int = 16,
    overwrite: bool = False,
    censor_keep_is_one: bool = False,
    progress: bool = True,
    num_samples: int = 1,
    start: Start = "zero",
) -> Path:
    """Fill censored (motion-scrubbed) or lost frames of a CIFTI run from the model and the run's
    EEG: by the Gaussian conditional mean of the model's latents (the default, the best fill
    measured), with InterRecon, or by linear / cubic-spline interpolation; uncensored frames are
    kept bit for bit.

    Args:
        fmri: the run to fill, a CIFTI-2 .dtseries.nii (fsLR-32k grayordinates or a subset of them).
        censor: censor file, one flag per frame (frames = fMRI volumes, TR apart): a TSV/CSV with
            motion_outlier* columns (fMRIPrep confounds) or a `censored` / `outlier` column (1 =
            censored); or a headerless 0/1 column (1 = censored); or headerless 0-based frame indices.
        out: the filled .dtseries.nii to write (refused if it exists, unless --overwrite).
        ckpt_path: diffusion checkpoint from `eeg2fmri fit` (interrecon and gaussian).
        eeg: the run's EEG: .npy + .json sidecar (sfreq in Hz, ch_names, volume_onsets in samples or
            volume_onsets_s in seconds) or an MNE-readable file with volume markers (interrecon;
            optional for gaussian), a continuous recording (not per-frame windows). Frame k gets the EEG
            of one TR starting shift_s seconds (the checkpoint's, 4 s by default) before volume k's onset.
        method: gaussian, the default and the closest to the recorded frames measured (each latent dim's conditional
            mean given the uncensored frames within the checkpoint's autocovariance lags, under the
            stationary Gaussian model of the latents fitted on its training split; its mean is μ, the
            regression stage's prediction from --eeg, when the checkpoint has a regression stage and
            --eeg is given, else the training latents' mean; no sampling, seconds per run);
            interrecon (the paper's EEG-conditioned null-space sampling: tied with gaussian on the
            recorded frames, closer to the noise-free signal in the project's study); linear or cubic
            (interpolation in time, no checkpoint needed).
        stride: frames (TRs) between consecutive K-frame InterRecon windows; overlapping fills are averaged.
        num_inference_steps: DDIM steps per InterRecon sample.
        eta: DDIM eta (0: deterministic given the seed).
        seed: seed of the sampler's noise.
        batch_size: windows sampled at once.
        overwrite: replace an existing output file.
        censor_keep_is_one: a headerless 0/1 censor column marks KEPT frames with 1 (AFNI's convention).
        progress: show a progress bar and a summary line.
        num_samples: InterRecon samples per window, averaged (toward the posterior mean; each costs a
            sampling run of every window); with --start random only.
        start: where InterRecon's chain starts: zero (the default), the noise's mean x_T = 0, one
            deterministic chain that estimates the conditional mean (ahead of a mean of 4 random samples
            in the project's Table 2, at the cost of one); or random (--num_samples draws averaged).
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
        start=start,
    )
