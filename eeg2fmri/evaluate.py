"""``eeg2fmri evaluate``: the metric suite on any two CIFTI dense time series.

Scores a prediction (this package's ``predict`` / ``fill`` output, or any other tool's) against a
reference run, so methods can be compared on the same numbers::

    eeg2fmri evaluate --pred other_tool.dtseries.nii --truth run.dtseries.nii --out scores.json

Conventions (each a documented choice):

- Frames. Both files must have the same number of frames, matched one to one. Only a file written
  by ``eeg2fmri predict`` (its CIFTI metadata has an ``eeg2fmri`` entry) may be shorter: it starts
  at the first predicted volume, so its SeriesAxis start places it among the truth's frames. Same
  TR required.
- Grayordinates. Only grayordinates present in both files are scored (their standard fsLR-32k
  indices are intersected); the result says how many.
- Missing values. A prediction of ``eeg2fmri predict`` has NaN rows (volumes it did not predict)
  and NaN columns (grayordinates outside its model's region). Columns that are non-finite in every
  candidate frame of either file are left out; then frames that are non-finite anywhere in the
  remaining columns of either file are left out. The counts are reported.
- Units. By default both series are z-scored per grayordinate with the TRUTH's mean and std over
  all of its usable frames (the same affine map for both), which puts MSE in the paper's units
  and keeps the static mean map from inflating spatial r. ``zscore=False`` scores raw values.
- Metrics (:mod:`eeg2fmri.metrics`): every scored frame is a 1-frame window, so spatial MSE / r /
  cosine are mean ± std over frames; temporal r is per grayordinate over all scored frames (median
  over the region); identification ranks each frame's truth among all scored frames.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

import numpy as np

from eeg2fmri.data.cifti import CiftiError, atomic_write_csv, atomic_write_text, load_header, read_dtseries

log = logging.getLogger(__name__)

_CHUNK = 256  # frames per metric update (bounds memory at 91,282 grayordinates)


def score(
    pred: np.ndarray,
    truth: np.ndarray,
    indices: np.ndarray,
    regions=("whole", "V1", "V1+A1"),
    identification: bool = True,
) -> dict[str, float]:
    """Region metrics of frames ``pred`` vs ``truth`` (N, V) over the columns with standard
    grayordinate ``indices`` (V,), each frame a 1-frame window: {"whole/r": ..., "V1/mse": ...}.
    Regions without a grayordinate among ``indices`` are skipped with a warning."""
    import torch

    from eeg2fmri.data.regions import region_columns
    from eeg2fmri.metrics import RegionMetrics

    if pred.shape != truth.shape or pred.ndim != 2:
        raise ValueError(f"pred {pred.shape} and truth {truth.shape} must both be (frames, grayordinates)")
    cols = {}
    for region in regions:
        try:
            cols[region] = torch.as_tensor(region_columns(region, indices))
        except ValueError:
            log.warning("region %s has no grayordinate among the %d scored; not scored", region, len(indices))
    if not cols:
        raise ValueError(f"none of the regions {list(regions)} has a grayordinate among the {len(indices)} scored")
    metrics = RegionMetrics(cols, pred.shape[1], identification=identification)
    for a in range(0, pred.shape[0], _CHUNK):
        p = torch.as_tensor(pred[a : a + _CHUNK], dtype=torch.float64)[:, None]  # (n, 1, V)
        t = torch.as_tensor(truth[a : a + _CHUNK], dtype=torch.float64)[:, None]  # (n, 1, V)
        metrics.update(p, t)
    return metrics.compute()


def evaluate(
    pred: str,
    truth: str,
    regions: list[str] = ["whole", "V1", "V1+A1"],  # noqa: B006 (jsonargparse shows it)
    out: str | None = None,
    frames: list[int] | str | None = None,
    zscore: bool = True,
    identification: bool = True,
    progress: bool = True,
) -> dict:
    """Score a predicted CIFTI run against a reference with every metric of the suite (spatial MSE /
    r / cosine per frame, temporal r per grayordinate, identification among frames), per region.

    Args:
        pred: predicted .dtseries.nii (any tool's output on fsLR-32k grayordinates or a subset).
        truth: reference .dtseries.nii (same TR and number of frames; a shorter `eeg2fmri predict`
            file is placed among the truth's frames by its SeriesAxis start, in seconds).
        regions: regions to score: whole, V1, V1+A1 or mask files (.npy/.txt/.dlabel.nii).
        out: where to write the scores: a .json path (a .csv is written beside it), a .csv path,
            or a folder (evaluate.json + evaluate.csv in it). None: print only.
        frames: score only these frames: 0-based frame indices of the truth (TRs from its first
            frame), or a censor file (its censored frames are scored; see `eeg2fmri fill --help`).
        zscore: z-score both series per grayordinate with the truth's mean and std over its usable
            frames before scoring (false: raw values, e.g. already z-scored files).
        identification: also compute identification among the scored frames.
        progress: print the table.

    Returns:
        {"pred", "truth", "n_frames_scored", "n_grayordinates", ..., "metrics": {"model": {"whole/r": ...}}}
    """
    from eeg2fmri.callbacks import format_table

    pred_p, truth_p = Path(pred), Path(truth)
    out_json, out_csv = _out_paths(out)
    _, _, tr_p, _ = load_header(pred_p)
    img_t, _, tr_t, _ = load_header(truth_p)
    if not math.isclose(tr_p, tr_t, rel_tol=1e-4):
        raise CiftiError(f"{pred_p}: TR {tr_p:g} s but {truth_p} has TR {tr_t:g} s; expected the same TR")
    P = read_dtseries(pred_p, dtype=np.float64)
    Tr = read_dtseries(truth_p, dtype=np.float64)
    offset = _frame_offset(P, Tr, img_t)
    n_p, n_t = P.n_frames, Tr.n_frames

    # grayordinates in both files
    common, cp, ct = np.intersect1d(P.indices, Tr.indices, assume_unique=True, return_indices=True)
    if len(common) == 0:
        raise CiftiError(f"{pred_p} and {truth_p} share no grayordinate; expected files on the same fsLR-32k layout")
    if len(common) < max(len(P.indices), len(Tr.indices)):
        log.info("scoring the %d grayordinates present in both files (pred %d, truth %d)",
                 len(common), len(P.indices), len(Tr.indices))  # fmt: skip
    x = P.data[:, cp]  # (n_p, V) prediction
    y = Tr.data[offset : offset + n_p][:, ct]  # (n_p, V) truth frames under the prediction

    # frames to score: the requested truth frames that the prediction covers
    cand = np.arange(n_p)
    if frames is not None:
        want = _frames(frames, n_t)
        outside = want[(want < offset) | (want >= offset + n_p)]
        if len(outside):
            log.warning("frames %s of %s are not in %s; not scored", outside.tolist(), truth_p, pred_p)
        cand = want[(want >= offset) & (want < offset + n_p)] - offset
        if len(cand) == 0:
            raise ValueError(f"none of the requested frames lies in {pred_p} (truth frames {offset}..{offset + n_p - 1})")
    fin_x, fin_y = np.isfinite(x[cand]), np.isfinite(y[cand])  # (N, V)
    col_ok = fin_x.any(0) & fin_y.any(0)  # (V,) columns with data in both
    if not col_ok.any():
        raise ValueError(f"{pred_p}: no grayordinate is finite in both files over the scored frames")
    row_ok = fin_x[:, col_ok].all(1) & fin_y[:, col_ok].all(1)  # (N,)
    if not row_ok.any():
        raise ValueError(f"{pred_p}: no frame is finite at every scored grayordinate in both files")
    rows = cand[row_ok]
    x, y, idx = x[:, col_ok], y[:, col_ok], common[col_ok]

    if zscore:  # the truth's statistics over all its usable frames (not only the scored ones)
        yt = Tr.data[:, ct[col_ok]]  # (n_t, V)
        usable = np.isfinite(yt).all(1)  # (n_t,) includes every scored frame
        mean, std = yt[usable].mean(0), yt[usable].std(0)
        std = np.where(std < 1e-12 * np.maximum(1.0, np.abs(mean)), 1.0, std)
        x, y = (x[rows] - mean) / std, (y[rows] - mean) / std
    else:
        x, y = x[rows], y[rows]
    metrics = score(x, y, idx, regions, identification=identification)

    results = {
        "method": pred_p.name, "pred": str(pred_p), "truth": str(truth_p), "tr": tr_t,
        "frame_offset": int(offset), "scored_frames": (rows + offset).tolist(), "n_frames_scored": int(len(rows)),
        "n_frames_excluded": int(len(cand) - len(rows)), "n_grayordinates": int(col_ok.sum()),
        "n_grayordinates_excluded": int(len(common) - col_ok.sum()), "zscore": zscore,
        "metrics": {"model": metrics},
    }  # fmt: skip
    if progress:
        print(format_table(results))
        excluded = results["n_frames_excluded"]
        print(f"evaluate: {len(rows)} frames x {int(col_ok.sum())} grayordinates scored"
              + (f" ({excluded} frames excluded: non-finite)" if excluded else ""))  # fmt: skip
    if out_json is not None:
        _write(results, out_json, out_csv)
        if progress:
            print(f"evaluate: wrote {out_json} and {out_csv}")
    return results


def _frame_offset(P, Tr, img_t) -> int:
    """Index of the truth frame matching the prediction's first frame."""
    if P.n_frames == Tr.n_frames:
        return 0
    import nibabel as nib

    header = nib.load(P.path).header
    start_p, start_t = float(header.get_axis(0).start), float(img_t.header.get_axis(0).start)
    ours = "eeg2fmri" in (header.matrix.metadata or {})  # written by `eeg2fmri predict`
    off = (start_p - start_t) / Tr.tr
    if ours and abs(off - round(off)) < 1e-3 and 0 <= round(off) and round(off) + P.n_frames <= Tr.n_frames:
        return int(round(off))
    raise CiftiError(
        f"{P.path} has {P.n_frames} frames (from {start_p:g} s) and {Tr.path} has {Tr.n_frames} (from {start_t:g} s); "
        "expected the same number of frames (only a file written by `eeg2fmri predict` may be shorter: it is placed "
        "by its SeriesAxis start, and must lie inside the truth's frames)"
    )


def _frames(frames, n_frames: int) -> np.ndarray:
    if isinstance(frames, (str, os.PathLike)):
        from eeg2fmri.fill import read_censor

        return np.flatnonzero(read_censor(frames, n_frames))
    f = np.unique(np.asarray(frames, np.int64))
    if len(f) and (f[0] < 0 or f[-1] >= n_frames):
        raise ValueError(f"frames {f.tolist()}: expected 0-based frame indices in 0..{n_frames - 1}")
    return f


def _out_paths(out: str | None) -> tuple[Path | None, Path | None]:
    if out is None:
        return None, None
    out = Path(out)
    if out.suffix == ".json":
        return out, out.with_suffix(".csv")
    if out.suffix == ".csv":
        return out.with_suffix(".json"), out
    return out / "evaluate.json", out / "evaluate.csv"


def _write(results: dict, out_json: Path, out_csv: Path) -> None:
    from eeg2fmri.callbacks import CSV_COLUMNS, results_rows

    atomic_write_text(out_json, json.dumps(results, indent=2, default=float))
    rows = results_rows(results)
    for row in rows:
        row["temporal_n_valid"] = results["metrics"]["model"].get(f"{row['region']}/temporal_n_valid", float("nan"))
    atomic_write_csv(out_csv, rows, ["method", "source", "region", *CSV_COLUMNS, "temporal_n_valid"])
