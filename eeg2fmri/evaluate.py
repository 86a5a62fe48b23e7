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
- Units. Both series are z-scored per grayordinate with ONE mean and std (the same affine map for
  both), those of the measured data: the truth file's over all its usable frames, or with
  ``scale_from`` another run's (the measured run when the truth is its noise-free BOLD) or a
  prepared cache's training-frame statistics (exactly the units of ``eeg2fmri test``). This puts
  MSE in the paper's units and keeps the static mean map from inflating spatial r. A noise-free
  truth is refused without ``scale_from``: its own std is smaller than the data's, so its MSE would
  not be comparable. The output states the normalisation used. ``zscore=False`` scores raw values.
- Labels. The table names the prediction by ``label``, by default a short form of its file name
  (the BIDS ``desc-`` value when there is one); the JSON keeps both paths.
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

from eeg2fmri.data.censor import read_censor
from eeg2fmri.data.cifti import CiftiError, atomic_write_csv, atomic_write_text, load_header, read_dtseries
from eeg2fmri.data.frames import zscore_std
from eeg2fmri.errors import OptionError, check_writable
from eeg2fmri.results import CSV_COLUMNS, format_table, results_rows

log = logging.getLogger(__name__)

_CHUNK = 256  # frames per metric update (bounds memory at 91,282 grayordinates)
LABEL_WIDTH = 22  # the method column of results.format_table


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
        raise OptionError(f"none of the regions {list(regions)} has a grayordinate among the {len(indices)} scored")
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
    scale_from: str | None = None,
    label: str | None = None,
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
        zscore: z-score both series per grayordinate with one mean and std, the measured data's
            (see scale_from), before scoring (false: raw values, e.g. already z-scored files).
        scale_from: where that mean and std come from: a .dtseries.nii (its usable frames; give the
            measured run when --truth is noise-free BOLD) or a prepared cache .h5 (its training
            frames: the units of `eeg2fmri test`). Default: the truth file.
        label: the prediction's name in the table (default: a short form of its file name).
        identification: also compute identification among the scored frames.
        progress: print the table.

    Returns:
        {"pred", "truth", "n_frames_scored", "n_grayordinates", ..., "metrics": {"model": {"whole/r": ...}}}
    """
    pred_p, truth_p = Path(pred), Path(truth)
    out_json, out_csv = _out_paths(out)
    if out_json is not None:  # before the scoring, not after it
        check_writable(out_json.parent, "the scores", "--out with a writable folder")
    _, _, tr_p, _ = load_header(pred_p)
    img_t, _, tr_t, _ = load_header(truth_p)
    if not math.isclose(tr_p, tr_t, rel_tol=1e-4):
        raise CiftiError(f"{pred_p}: TR {tr_p:g} s but {truth_p} has TR {tr_t:g} s; expected the same TR")
    P = read_dtseries(pred_p, dtype=np.float64)
    Tr = read_dtseries(truth_p, dtype=np.float64)
    offset = _frame_offset(P, Tr, img_t)
    common, cp, ct = _common_grayordinates(P, Tr)
    x = P.data[:, cp]  # (n_p, V) prediction
    y = Tr.data[offset : offset + P.n_frames][:, ct]  # (n_p, V) truth frames under the prediction
    cand = _candidate_frames(frames, offset, P, Tr)  # (N,) prediction frames to score
    row_ok, col_ok = _finite_cells(x[cand], y[cand], pred_p)  # (N,), (V,)
    rows = cand[row_ok]
    x, y, idx = x[:, col_ok], y[:, col_ok], common[col_ok]

    if zscore:
        x, y, normalisation = _zscored(x[rows], y[rows], scale_from, img_t, truth_p, Tr, ct[col_ok], idx)
    else:
        x, y, normalisation = x[rows], y[rows], "none: raw values"
    metrics = score(x, y, idx, regions, identification=identification)

    results = {
        "method": label or short_label(pred_p),
        "pred": str(pred_p),
        "truth": str(truth_p),
        "tr": tr_t,
        "frame_offset": int(offset),
        "scored_frames": (rows + offset).tolist(),
        "n_frames_scored": int(len(rows)),
        "n_frames_excluded": int(len(cand) - len(rows)),
        "n_grayordinates": int(col_ok.sum()),
        "n_grayordinates_excluded": int(len(common) - col_ok.sum()),
        "zscore": zscore,
        "normalisation": normalisation,
        "metrics": {"model": metrics},
    }
    if progress:
        _print_summary(results)
    if out_json is not None:
        _write(results, out_json, out_csv)
        if progress:
            print(f"evaluate: wrote {out_json} and {out_csv}")
    return results


def _zscored(x, y, scale_from, img_t, truth_p: Path, Tr, columns, idx) -> tuple[np.ndarray, np.ndarray, str]:
    """Prediction ``x`` and truth ``y`` (N, V) z-scored per grayordinate with one mean and std, the
    measured data's (see ``scale_from``), and a line that says where they came from. Noise-free truth
    must name the measured data: its own smaller std would make the MSE incomparable."""
    if scale_from is None and _noise_free(img_t, truth_p):
        raise CiftiError(
            f"{truth_p}: noise-free BOLD; z-scored with its own (smaller) std its MSE would not be comparable "
            "to `eeg2fmri test`'s. Pass --scale_from with the measured run (.dtseries.nii) or the prepared "
            "cache (.h5), or --zscore false"
        )
    mean, std, normalisation = _statistics(scale_from, Tr, columns, idx)
    std, _ = zscore_std(mean, std)
    return (x - mean) / std, (y - mean) / std, normalisation


def _common_grayordinates(P, Tr) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The standard grayordinates in both files (G,), and their columns in the prediction and in
    the truth (G,), (G,)."""
    common, cp, ct = np.intersect1d(P.indices, Tr.indices, assume_unique=True, return_indices=True)
    if len(common) == 0:
        raise CiftiError(f"{P.path} and {Tr.path} share no grayordinate; expected files on the same fsLR-32k layout")
    if len(common) < max(len(P.indices), len(Tr.indices)):
        log.info(
            "scoring the %d grayordinates present in both files (pred %d, truth %d)",
            len(common),
            len(P.indices),
            len(Tr.indices),
        )
    return common, cp, ct


def _candidate_frames(frames, offset: int, P, Tr) -> np.ndarray:
    """The prediction's frames to score: all of them, or the requested truth frames (indices or a
    censor file) that the prediction covers."""
    n_p = P.n_frames
    if frames is None:
        return np.arange(n_p)
    want = _frames(frames, Tr.n_frames)
    outside = want[(want < offset) | (want >= offset + n_p)]
    if len(outside):
        log.warning("frames %s of %s are not in %s; not scored", outside.tolist(), Tr.path, P.path)
    cand = want[(want >= offset) & (want < offset + n_p)] - offset
    if len(cand) == 0:
        raise OptionError(f"none of the requested frames lies in {P.path} (truth frames {offset}..{offset + n_p - 1})")
    return cand


def _finite_cells(x: np.ndarray, y: np.ndarray, pred_p: Path) -> tuple[np.ndarray, np.ndarray]:
    """Which candidate frames (N,) and grayordinates (V,) of ``x`` and ``y`` (N, V) are scored:
    columns with data in both files, then frames finite at every such column in both."""
    fin_x, fin_y = np.isfinite(x), np.isfinite(y)  # (N, V)
    col_ok = fin_x.any(0) & fin_y.any(0)  # (V,) columns with data in both
    if not col_ok.any():
        raise OptionError(f"{pred_p}: no grayordinate is finite in both files over the scored frames")
    row_ok = fin_x[:, col_ok].all(1) & fin_y[:, col_ok].all(1)  # (N,)
    if not row_ok.any():
        raise OptionError(f"{pred_p}: no frame is finite at every scored grayordinate in both files")
    return row_ok, col_ok


def _print_summary(results: dict) -> None:
    """The table and three lines: what was scored against what, how much of it, in which units."""
    print(format_table(results))
    excluded = results["n_frames_excluded"]
    print(f"evaluate: {results['method']} = {results['pred']}, against {results['truth']}")
    print(
        f"evaluate: {results['n_frames_scored']} frames x {results['n_grayordinates']} grayordinates scored"
        + (f" ({excluded} frames excluded: non-finite)" if excluded else "")
    )
    print(f"evaluate: units: {results['normalisation']}")


def short_label(path: Path) -> str:
    """A table label for a file: its BIDS ``desc-`` value if it has one, else its name without
    ``.dtseries.nii``; names longer than the table's column are cut in the middle."""
    name = path.name.removesuffix(".dtseries.nii").removesuffix(".nii")
    desc = [part[5:] for part in name.split("_") if part.startswith("desc-") and len(part) > 5]
    name = desc[0] if desc else name
    if len(name) <= LABEL_WIDTH:
        return name
    head = (LABEL_WIDTH - 1) // 2
    return f"{name[:head]}…{name[-(LABEL_WIDTH - 1 - head) :]}"


def _noise_free(img, path: Path) -> bool:
    """Whether a CIFTI file is noise-free BOLD (the simulator marks it in metadata and name)."""
    meta = dict(img.header.matrix.metadata or {})
    return meta.get("desc") == "noise-free" or "desc-noisefree" in path.name


def _statistics(
    scale_from: str | None, Tr, truth_cols: np.ndarray, idx: np.ndarray
) -> tuple[np.ndarray, np.ndarray, str]:
    """Per-grayordinate (mean, std) of the standard grayordinates ``idx`` for the z-scoring, and the
    sentence that states where they come from."""
    if scale_from is None:  # the truth's usable frames (not only the scored ones)
        yt = Tr.data[:, truth_cols]  # (n_t, V)
        usable = np.isfinite(yt).all(1)  # (n_t,) includes every scored frame
        return (
            yt[usable].mean(0),
            yt[usable].std(0),
            (
                f"z-scored per grayordinate with the mean and std of the truth {Tr.path} over its {int(usable.sum())} frames"
            ),
        )
    src = Path(scale_from)
    if src.suffix in (".h5", ".hdf5"):
        import h5py

        from eeg2fmri.data.datamodule import CacheError

        try:
            with h5py.File(src, "r") as h5:
                mean, std, have = h5["fmri_mean"][:], h5["fmri_std"][:], h5["indices"][:]
                n_train = int((h5["split"][:] == 0).sum())
        except (OSError, KeyError) as e:
            raise CacheError(f"{src}: not a prepared cache with fmri_mean / fmri_std / indices ({e})") from None
        how = f"the training-frame mean and std of the cache {src} ({n_train} frames; the units of `eeg2fmri test`)"
    else:
        ref = read_dtseries(src, dtype=np.float64)
        have = ref.indices
        usable = np.isfinite(ref.data).all(1)
        mean, std = ref.data[usable].mean(0), ref.data[usable].std(0)
        how = f"the mean and std of {src} over its {int(usable.sum())} frames"
    pos = np.searchsorted(have, idx)
    found = (pos < len(have)) & (have[np.minimum(pos, len(have) - 1)] == idx)
    if not found.all():
        raise CiftiError(
            f"{src}: lacks {int((~found).sum())} of the {len(idx)} scored grayordinates; expected statistics "
            "for every grayordinate of the prediction and truth (the same fsLR-32k layout)"
        )
    return mean[pos].astype(np.float64), std[pos].astype(np.float64), f"z-scored per grayordinate with {how}"


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


def _frames(frames, n_volumes: int) -> np.ndarray:
    """The requested truth frames as sorted 0-based indices: ``frames`` itself, or the frames a
    censor file flags."""
    if isinstance(frames, (str, os.PathLike)):
        return np.flatnonzero(read_censor(frames, n_volumes))
    f = np.unique(np.asarray(frames, np.int64))
    if len(f) and (f[0] < 0 or f[-1] >= n_volumes):
        raise OptionError(f"frames {f.tolist()}: expected 0-based frame indices in 0..{n_volumes - 1}")
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
    atomic_write_text(out_json, json.dumps(results, indent=2, default=float))
    rows = results_rows(results)
    for row in rows:
        row["temporal_n_valid"] = results["metrics"]["model"].get(f"{row['region']}/temporal_n_valid", float("nan"))
    atomic_write_csv(out_csv, rows, ["method", "source", "region", *CSV_COLUMNS, "temporal_n_valid"])
