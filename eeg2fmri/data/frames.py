"""Frame bookkeeping shared by the data layer and the jobs above it.

Segments: the stretches of rows over which the frames follow each other in time (volume index
increasing by one, within one clip and split). Windows of K frames, EEG context, the filter of
windowed EEG and the censored bursts of the fill study never reach across a segment's edge.

Z-scoring: the per-grayordinate divisor, with constant grayordinates (outside the brain mask, or a
column that varies only by float32 rounding) left unscaled instead of blown up to unit variance.
"""

from __future__ import annotations

import numpy as np

# a grayordinate is constant when its std is below this fraction of max(1, |mean|): float32 data
# resolve about 1.2e-7 of the mean, so a smaller std is a few rounding steps, not a signal
CONSTANT_RTOL = 1e-6


# --------------------------------------------------------------------------------------------
# Segments of consecutive frames
# --------------------------------------------------------------------------------------------


def segment_starts(*consecutive: np.ndarray, same: tuple[np.ndarray, ...] = ()) -> np.ndarray:
    """(T,) bool, True at the first row of each segment. A segment is a stretch of rows over which
    every array of ``consecutive`` (volume indices, window positions) increases by exactly one and
    every array of ``same`` (clip, split) keeps its value; the first row always starts one."""
    n = len(consecutive[0]) if consecutive else len(same[0])
    new = np.zeros(n, bool)  # (T,)
    new[:1] = True
    for x in consecutive:
        new[1:] |= x[1:] != x[:-1] + 1
    for x in same:
        new[1:] |= x[1:] != x[:-1]
    return new


def segment_ids(*consecutive: np.ndarray, same: tuple[np.ndarray, ...] = ()) -> np.ndarray:
    """(T,) int64 id of the segment of each row (0, 1, ... in row order); see :func:`segment_starts`."""
    return np.cumsum(segment_starts(*consecutive, same=same)) - 1


def segment_bounds(*consecutive: np.ndarray, same: tuple[np.ndarray, ...] = ()) -> tuple[np.ndarray, np.ndarray]:
    """(starts, stops): each segment is rows [start, stop), in row order; see :func:`segment_starts`."""
    new = segment_starts(*consecutive, same=same)
    starts = np.flatnonzero(new)
    return starts, np.append(starts[1:], len(new))


def split_segments(frames: np.ndarray) -> list[np.ndarray]:
    """``frames`` (e.g. volume indices) cut into its stretches of consecutive values:
    [3, 4, 5, 9] -> [[3, 4, 5], [9]]."""
    return np.split(frames, np.flatnonzero(segment_starts(frames))[1:])


# --------------------------------------------------------------------------------------------
# Per-grayordinate z-scoring
# --------------------------------------------------------------------------------------------


def zscore_std(mean: np.ndarray, std: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(std, constant)``, both (V,): the divisor of per-grayordinate z-scoring, 1 where the
    grayordinate is constant (std below ``CONSTANT_RTOL`` of max(1, |mean|)), and that mask.
    A constant grayordinate thus stays at x − mean (exactly 0 for a truly constant column)."""
    constant = std < CONSTANT_RTOL * np.maximum(1.0, np.abs(mean))
    return np.where(constant, 1.0, std), constant
