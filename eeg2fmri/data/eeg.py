"""A run's EEG as the cache holds it: the montage checked and put in cache order, one window per
frame cut from the band-passed (and notched) recording, scaled per channel to (−1, 1).

``prepare`` applies these steps to a subject's runs: it checks every run before writing anything,
filters while it writes, and scales once the statistics of the training frames are known.
``eeg2fmri fill`` applies the same steps to a new run with the statistics its checkpoint carries,
so a filled run's EEG is processed exactly as the training data was.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
from scipy import signal

from eeg2fmri.data.cinebrain import EEGRecording, RawDataError
from eeg2fmri.data.frames import segment_bounds

if TYPE_CHECKING:
    from eeg2fmri.data.prepare import PrepareOptions

log = logging.getLogger(__name__)


def samples_per_tr(tr: float, sfreq: float, where: object) -> int:
    """EEG samples per frame window (n_times = TR · sfreq, 800 at 1000 Hz and TR 0.8 s); refuses
    a TR that is not a whole number of samples (``where`` names the file in the error)."""
    n_times = tr * sfreq
    if abs(n_times - round(n_times)) > 1e-6:
        raise RawDataError(f"{where}: TR {tr:g} s x {sfreq:g} Hz is not a whole number of EEG samples")
    return int(round(n_times))


def volume_onsets(eeg: EEGRecording, n_volumes: int, n_times: int) -> np.ndarray:
    """EEG sample of every fMRI volume's onset: the recorded triggers, else volume k at k * TR."""
    onsets = eeg.volume_onsets
    if onsets is None:
        return np.arange(n_volumes, dtype=np.int64) * n_times
    if len(onsets) < n_volumes:
        raise RawDataError(
            f"{eeg.path}: {len(onsets)} fMRI volume triggers but the fMRI run has {n_volumes} frames: the EEG is "
            "shorter than the fMRI (expected one trigger per volume)"
        )
    onsets = np.asarray(onsets[:n_volumes], np.int64)
    if np.any(np.diff(onsets) <= 0):
        raise RawDataError(f"{eeg.path}: volume onsets are not increasing")
    return onsets


def check_covers(eeg: EEGRecording, lo: int, hi: int, sfreq: float, need: str) -> None:
    """Refuse a recording that lacks samples [lo, hi), the span its frames' windows need; ``need``
    completes the error (which frames need which samples, and what to do)."""
    n_samples = eeg.data.shape[1]
    if lo < 0 or hi > n_samples:
        raise RawDataError(f"{eeg.path}: EEG has {n_samples} samples ({n_samples / sfreq:g} s) but {need}")


# --------------------------------------------------------------------------------------------
# Step 1: the montage
# --------------------------------------------------------------------------------------------


def check_channels(eeg: EEGRecording, ch_names: tuple[str, ...]) -> tuple[np.ndarray, list[str]]:
    """(order, flat): the row of each of ``ch_names`` in the recording (extra channels ignored
    with a warning), and the names of flat channels (a documented repair: zero after scaling; more
    than a quarter flat is refused). Missing or duplicated names and NaN/Inf samples are errors."""
    names = eeg.ch_names
    dup = sorted({c for c in names if names.count(c) > 1})
    if dup:
        raise RawDataError(f"{eeg.path}: channel name(s) {dup} appear more than once; expected unique channel names")
    missing = [c for c in ch_names if c not in names]
    if missing:
        _refuse_missing(eeg, ch_names, missing)
    extra = [c for c in names if c not in ch_names]
    if extra:
        log.warning("%s: ignoring %d channel(s) not in the montage: %s", eeg.path, len(extra), extra)
    order = np.array([names.index(c) for c in ch_names])
    flat = []
    for pos, name in zip(order, ch_names):
        x = np.asarray(eeg.data[pos])
        bad = ~np.isfinite(x)
        if bad.any():
            first = int(np.argmax(bad))
            raise RawDataError(
                f"{eeg.path}: channel {name} has {int(bad.sum())} NaN/Inf samples (first at sample {first}, "
                f"{first / eeg.sfreq:.3f} s); expected finite EEG. Interpolate or mark the segment, then re-run."
            )
        if np.ptp(x) == 0:
            flat.append(name)
    if flat:
        if len(flat) > len(ch_names) // 4:
            raise RawDataError(f"{eeg.path}: {len(flat)} flat channels ({flat}); expected at most {len(ch_names) // 4}")
        log.warning("%s: flat channel(s) %s are set to zero after scaling (documented repair)", eeg.path, flat)
    return order, flat


def _refuse_missing(eeg: EEGRecording, ch_names: tuple[str, ...], missing: list[str]) -> None:
    """The error for expected channels the recording lacks (none of them found: likely another montage)."""
    names = eeg.ch_names
    how = (
        "(set --ch_names to the montage you recorded: a list, --ch_names [Fp1,Fp2,...], or a text file with "
        "one name per line, --ch_names montage.txt)"
    )
    if len(missing) == len(ch_names):
        shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        raise RawDataError(
            f"{eeg.path}: none of the {len(ch_names)} expected channel names match; first found: {shown} "
            f"({len(names)} channels) {how}"
        )
    shown = repr(missing) if len(missing) <= 8 else repr(missing[:8])[:-1] + f", ...] ({len(missing)} in all)"
    raise RawDataError(
        f"{eeg.path}: channel(s) {shown} missing; expected the {len(ch_names)} channels "
        f"{', '.join(ch_names[:4])}, ... {how}"
    )


# --------------------------------------------------------------------------------------------
# Step 2: filtered windows
# --------------------------------------------------------------------------------------------


def band_pass(sfreq: float, o: PrepareOptions) -> np.ndarray:
    """Second-order sections of the EEG filter: Butterworth band-pass ``l_freq``–``h_freq`` of
    order ``filter_order`` per edge, plus a notch (Q 30) at ``notch_freq`` when below Nyquist."""
    sos = signal.butter(o.filter_order, [o.l_freq, o.h_freq], btype="bandpass", fs=sfreq, output="sos")
    if o.notch_freq is not None and o.notch_freq < sfreq / 2:
        b, a = signal.iirnotch(o.notch_freq, Q=30.0, fs=sfreq)
        sos = np.concatenate([sos, signal.tf2sos(b, a)])
    return sos


def filtered_windows(
    data: np.ndarray,
    starts: np.ndarray,
    n_times: int,
    ch_order: np.ndarray,
    sfreq: float,
    o: PrepareOptions,
    volumes: np.ndarray | None = None,
) -> np.ndarray:
    """The windows ``data[ch_order, s : s + n_times]`` of a run for every start ``s``, band-passed
    and notched (:func:`band_pass`): (T, C, n_times) float32 in the recording's unit.

    A continuous recording is filtered once over the span the windows need (:func:`eeg_windows`).
    EEG cut into one window per frame (``data`` the windows side by side, ``volumes`` the volume of
    each window) is filtered per stretch of windows of consecutive volumes (contiguous in time), so
    the filter never runs across a gap between two windows."""
    sos = band_pass(sfreq, o)
    if volumes is None:
        return eeg_windows(data, starts, n_times, sos, ch_order, sfreq)
    pos = starts // n_times  # (T,) window of each frame
    out = np.empty((len(pos), len(ch_order), n_times), np.float32)
    for a, b in zip(*segment_bounds(pos, volumes)):
        lo, hi = int(pos[a]) * n_times, (int(pos[b - 1]) + 1) * n_times
        out[a:b] = eeg_windows(data[:, lo:hi], starts[a:b] - lo, n_times, sos, ch_order, sfreq)
    return out


def eeg_windows(
    data: np.ndarray, starts: np.ndarray, n_times: int, sos: np.ndarray, ch_order: np.ndarray, sfreq: float
) -> np.ndarray:
    """Band-passed windows ``data[ch_order, s : s + n_times]`` for every start ``s``: (T, C, n_times)
    float32. Each channel is filtered (zero phase) over the span the windows need plus 10 s on each
    side (clean edges), after removing its mean over that span. Samples outside the recording
    (a start before 0, or past its end) come back NaN, for the caller to refuse or pad."""
    starts = np.asarray(starts, np.int64)
    n_samples = data.shape[1]
    pad = int(10 * sfreq)  # filter a span a little wider than needed, to keep edges clean
    lo = min(max(0, int(starts.min()) - pad), n_samples)
    hi = max(min(n_samples, int(starts.max()) + n_times + pad), lo)
    out = np.empty((len(starts), len(ch_order), n_times), np.float32)
    gather = (starts - lo)[:, None] + np.arange(n_times)  # (T, n_times) into the span
    outside = (gather < 0) | (gather >= hi - lo)  # (T, n_times)
    gather = np.clip(gather, 0, max(hi - lo - 1, 0))
    for c, pos in enumerate(ch_order):
        x = np.asarray(data[pos, lo:hi], np.float64)  # (S,)
        if len(x) == 0:
            out[:, c] = np.nan
            continue
        x = signal.sosfiltfilt(sos, x - x.mean())
        out[:, c] = np.where(outside, np.nan, x[gather])
    return out


# --------------------------------------------------------------------------------------------
# Step 3: scaling
# --------------------------------------------------------------------------------------------


def scale_windows(x: np.ndarray, center: np.ndarray, scale: np.ndarray, zero) -> np.ndarray:
    """Filtered windows ``x`` (T, C, W) centred and scaled per channel, (x − center) / scale with
    ``center``, ``scale`` (C,) from the training frames, clipped to [−1, 1], and the channels
    ``zero`` (flat ones: a mask or indices) set to 0: (T, C, W) float64."""
    x = np.clip((x - center[None, :, None]) / scale[None, :, None], -1.0, 1.0)  # (T, C, W)
    x[:, zero] = 0.0
    return x
