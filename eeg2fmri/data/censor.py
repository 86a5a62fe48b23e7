"""Censor files: which frames (fMRI volumes) of a run motion scrubbing removed or that were lost.

A censor file is data the user brings beside a run (fMRIPrep / XCP-D confounds, an AFNI censor
file, a list of frame indices); ``eeg2fmri fill`` fills the frames it flags and ``eeg2fmri evaluate
--frames`` scores them. :data:`CENSOR_FORMATS` lists the formats read.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import numpy as np

from eeg2fmri.data.cifti import atomic_write_text
from eeg2fmri.errors import EEG2fMRIError

log = logging.getLogger(__name__)


class CensorError(EEG2fMRIError):
    """A censor file that cannot be read as one flag per frame of the run; the message names the
    file, the row or value, and the formats expected."""


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


def read_censor(path: str | os.PathLike, n_volumes: int, keep_is_one: bool = False) -> np.ndarray:
    """Censored frames of a run as a bool mask (n_volumes,) (True = censored); see ``CENSOR_FORMATS``.

    Args:
        path: the censor file.
        n_volumes: frames of the run (T); a per-frame file must have exactly T rows.
        keep_is_one: a headerless 0/1 column marks KEPT frames with 1 (AFNI's convention).
    """
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: censor file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise CensorError(f"{path}: censor file cannot be read as text ({e})") from e
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        if keep_is_one:
            raise CensorError(
                f"{path}: empty censor file, but censor_keep_is_one expects one 0/1 line per frame ({n_volumes})"
            )
        log.warning("%s: empty censor file; no frame is censored", path)
        return np.zeros(n_volumes, bool)
    delim = "\t" if "\t" in lines[0] else ("," if "," in lines[0] else None)
    rows = [[tok.strip().strip('"') for tok in ln.split(delim)] for ln in lines]
    if any(not _is_number(tok) for tok in rows[0]):
        if keep_is_one:
            raise CensorError(
                f"{path}: censor_keep_is_one applies only to a headerless 0/1 column; this file has a header"
            )
        return _censor_from_table(path, rows[0], rows[1:], n_volumes)
    if any(len(r) > 1 for r in rows):
        if len(rows) > 1:
            raise CensorError(
                f"{path}: {len(rows)} lines of {max(len(r) for r in rows)} values without a header; expected one "
                f"column (0/1 per frame, or frame indices) or a header naming the censor column.\n{CENSOR_FORMATS}"
            )
        return _censor_from_indices(path, rows[0], n_volumes, keep_is_one)
    values = [r[0] for r in rows]
    if all(float(v) in (0.0, 1.0) for v in values) and (len(values) > 1 or n_volumes == 1):
        if len(values) != n_volumes:
            raise CensorError(
                f"{path}: {len(values)} rows of 0/1; expected one per frame of the fMRI run ({n_volumes} frames). "
                "(A frame-index list holding only 0 and 1 is read as a 0/1 column: list more frames or write a mask.)"
            )
        flags = np.array([float(v) for v in values]) == 1.0
        return ~flags if keep_is_one else flags
    return _censor_from_indices(path, values, n_volumes, keep_is_one)


def _is_number(tok: str) -> bool:
    try:
        return math.isfinite(float(tok))
    except ValueError:
        return False


def _censor_from_table(path: Path, names: list[str], rows: list[list[str]], n_volumes: int) -> np.ndarray:
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
        raise CensorError(
            f"{path}: found columns {shown}; expected motion_outlier* columns (fMRIPrep confounds; a confounds file "
            f"without them flags no frame: nothing to fill) or a column named `censored` or `outlier` "
            f"(1 = censored).{hint}\n{CENSOR_FORMATS}"
        )
    if len(rows) != n_volumes:
        raise CensorError(
            f"{path}: {len(rows)} rows (after the header); expected one per frame of the fMRI run ({n_volumes} frames)"
        )
    mask = np.zeros(n_volumes, bool)
    for r, row in enumerate(rows):
        for c in cols:
            tok = row[c] if c < len(row) else ""
            try:
                v = float(tok)
            except ValueError:
                v = float("nan")
            if v not in (0.0, 1.0):
                raise CensorError(f"{path}, row {r + 2}, column {names[c]}: {tok!r}; expected 0 or 1 (1 = censored)")
            mask[r] |= v == 1.0
    return mask


def _censor_from_indices(path: Path, values: list[str], n_volumes: int, keep_is_one: bool) -> np.ndarray:
    if keep_is_one:
        raise CensorError(f"{path}: censor_keep_is_one applies only to a headerless 0/1 column (one line per frame)")
    idx = []
    for v in values:
        f = float(v)
        if f != int(f) or not 0 <= f < n_volumes:
            raise CensorError(
                f"{path}: frame index {v}; expected 0-based frame indices in 0..{n_volumes - 1} "
                f"(the fMRI run has {n_volumes} frames)"
            )
        idx.append(int(f))
    mask = np.zeros(n_volumes, bool)
    mask[idx] = True
    return mask


def write_censor(path: str | os.PathLike, censored: np.ndarray) -> Path:
    """Write a censor mask as a TSV with one column ``censored`` (1 = censored), readable by
    :func:`read_censor` (and by pandas / XCP-D-style tools)."""
    text = "censored\n" + "".join(f"{int(c)}\n" for c in np.asarray(censored, bool))
    return atomic_write_text(path, text)
