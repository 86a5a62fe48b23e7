"""CIFTI-2 dense time series (``.dtseries.nii``) on the fsLR-32k 91,282-grayordinate layout.

The layout is read from every file's header and checked against the HCP standard, never assumed.
A file may hold the whole standard layout or a declared subset of it (some vertices / voxels of
the standard brain models); :func:`read_dtseries` returns, with the data, the index of every
column in the 91,282 standard layout, which is how regions and predictions are mapped back to the
whole brain. Columns in another order (fMRIPrep <= 23.1 wrote the subcortical voxels row-major,
nipreps/niworkflows#814) are read by grayordinate with one warning per file; writers that start
from a user's file keep that file's column order.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.cifti2 import cifti2_axes

from eeg2fmri.errors import EEG2fMRIError

N_GRAYORDINATES = 91_282
N_CORTEX_LEFT = 29_696
N_CORTEX_RIGHT = 29_716
N_SUBCORTICAL = 31_870
_LAYOUT_FILE = Path(__file__).with_name("layout_91k.npz")
log = logging.getLogger(__name__)


class CiftiError(EEG2fMRIError):
    """A CIFTI file that cannot be used as it is; the message names the file and what was expected."""


@lru_cache(maxsize=1)
def _layout() -> dict[str, np.ndarray]:
    with np.load(_LAYOUT_FILE) as f:
        return {k: f[k] for k in f.files}


@lru_cache(maxsize=1)
def standard_brain_models() -> cifti2_axes.BrainModelAxis:
    """The HCP standard 91,282-grayordinate BrainModelAxis (see tools/extract_layout.py), built in
    one constructor call (adding the 21 structures' axes one by one costs seconds per process)."""
    lay = _layout()
    n_mesh = int(lay["surface_n_vertices"])
    left, right = np.asarray(lay["vertices_left"], np.int64), np.asarray(lay["vertices_right"], np.int64)
    ijk = np.asarray(lay["voxels_ijk"], np.int64)  # (31870, 3)
    names = ["CIFTI_STRUCTURE_CORTEX_LEFT"] * len(left) + ["CIFTI_STRUCTURE_CORTEX_RIGHT"] * len(right)
    for name, count in zip(lay["structures"][2:], lay["counts"][2:]):
        names += [str(name)] * int(count)
    n_surf = len(left) + len(right)
    vertex = np.concatenate([left, right, np.full(len(ijk), -1, np.int64)])  # (91282,)
    voxel = np.concatenate([np.full((n_surf, 3), -1, np.int64), ijk])  # (91282, 3)
    bm = cifti2_axes.BrainModelAxis(
        name=np.array(names, dtype=object),
        voxel=voxel,
        vertex=vertex,
        affine=lay["volume_affine"],
        volume_shape=tuple(int(s) for s in lay["volume_shape"]),
        nvertices={"CIFTI_STRUCTURE_CORTEX_LEFT": n_mesh, "CIFTI_STRUCTURE_CORTEX_RIGHT": n_mesh},
    )
    assert len(bm) == N_GRAYORDINATES
    return bm


def _vertex_mask(vertices: np.ndarray, n_mesh: int) -> np.ndarray:
    mask = np.zeros(n_mesh, bool)
    mask[vertices] = True
    return mask


def subset_brain_models(indices: np.ndarray) -> cifti2_axes.BrainModelAxis:
    """Brain models of a subset of the standard layout (indices into 91,282, increasing)."""
    indices = np.asarray(indices, np.int64)
    if indices.ndim != 1 or len(indices) == 0 or np.any(np.diff(indices) <= 0):
        raise ValueError("grayordinate indices must be a non-empty increasing 1-D array")
    if indices[0] < 0 or indices[-1] >= N_GRAYORDINATES:
        raise ValueError(f"grayordinate indices must lie in [0, {N_GRAYORDINATES})")
    if len(indices) == N_GRAYORDINATES:
        return standard_brain_models()
    return standard_brain_models()[indices]


@lru_cache(maxsize=1)
def _standard_keys() -> dict[tuple, int]:
    """(structure, vertex or voxel ijk) -> standard index, to locate a file's columns."""
    bm = standard_brain_models()
    keys: dict[tuple, int] = {}
    for i, (name, vertex, voxel) in enumerate(zip(bm.name, bm.vertex, bm.voxel)):
        keys[(str(name), int(vertex)) if vertex >= 0 else (str(name), *map(int, voxel))] = i
    return keys


def standard_indices(bm: cifti2_axes.BrainModelAxis, path: str | os.PathLike = "<brain models>") -> np.ndarray:
    """Index in the 91,282 standard layout of each column of ``bm``, in the file's own column order.

    Each column's structure and vertex (or voxel) are in the header, so a file whose columns are
    standard grayordinates in another order is read by grayordinate: fMRIPrep up to 23.1
    (niworkflows < 1.8.1, nipreps/niworkflows#814) wrote the subcortical voxels of each structure in
    row-major (i, j, k) order instead of the HCP order, and such files are common. The returned
    indices are then not increasing (:func:`standard_order` sorts them), and a warning says so once
    per file. Raises CiftiError if a column is not a standard grayordinate or appears twice."""
    std = standard_brain_models()
    if len(bm) == N_GRAYORDINATES and _same_models(bm, std):
        return np.arange(N_GRAYORDINATES)
    if len(bm) > N_GRAYORDINATES:
        raise CiftiError(
            f"{path} has {len(bm)} grayordinates; expected {N_GRAYORDINATES} (fsLR-32k, HCP 91k "
            "grayordinates) or a subset of them. Re-export with the standard HCP brain models."
        )
    for name, _, sub in bm.iter_structures():
        if sub.nvertices and sub.surface_mask.any():
            n = sub.nvertices.get(name)
            if n is not None and n != std.nvertices.get(name):
                raise CiftiError(
                    f"{path}: {name} is defined on a {n}-vertex surface; expected "
                    f"{std.nvertices.get(name)} (fsLR-32k). Resample to fsLR-32k first."
                )
    if bm.volume_shape is not None and bm.volume_mask.any():
        if tuple(bm.volume_shape) != tuple(std.volume_shape) or not np.allclose(bm.affine, std.affine):
            raise CiftiError(
                f"{path}: subcortical voxels are on a {_ints(bm.volume_shape)} grid; expected the 2 mm "
                f"MNI grid {_ints(std.volume_shape)} of the HCP 91k grayordinates."
            )
    keys = _standard_keys()
    idx = np.empty(len(bm), np.int64)
    for i, (name, vertex, voxel) in enumerate(zip(bm.name, bm.vertex, bm.voxel)):
        key = (str(name), int(vertex)) if vertex >= 0 else (str(name), *map(int, voxel))
        j = keys.get(key)
        if j is None:
            raise CiftiError(
                f"{path}: grayordinate {i} ({name}, {_where(vertex, voxel)}) is not in the standard fsLR-32k "
                f"91,282 layout; expected {N_GRAYORDINATES} standard grayordinates or a subset of them."
            )
        idx[i] = j
    if np.any(np.diff(idx) <= 0):
        order = np.argsort(idx, kind="stable")
        same = np.flatnonzero(np.diff(idx[order]) == 0)
        if len(same):
            a, b = sorted(order[same[0] : same[0] + 2])
            raise CiftiError(
                f"{path}: columns {int(a)} and {int(b)} are the same grayordinate ({bm.name[a]}, "
                f"{_where(bm.vertex[a], bm.voxel[a])}); expected each grayordinate once."
            )
        _note_reordered(bm, idx, path)
    return idx


def _ints(values) -> tuple[int, ...]:
    """Plain ints for messages: (0, 0, 0), not numpy's (np.int64(0), ...)."""
    return tuple(int(v) for v in values)


def fmriprep_row_major_order(bm: cifti2_axes.BrainModelAxis) -> np.ndarray:
    """The column permutation that turns standard-order brain models into what fMRIPrep <= 23.1
    wrote: ``bm[perm]`` has each subcortical structure's voxels sorted by (i, j, k), k fastest
    (nipreps/niworkflows#814). For writing test and simulated files in that order."""
    perm = []
    for _, sl, sub in bm.iter_structures():
        cols = np.arange(len(bm))[sl]
        if sub.volume_mask.any():
            v = np.asarray(sub.voxel, np.int64)
            cols = cols[np.lexsort((v[:, 2], v[:, 1], v[:, 0]))]
        perm.append(cols)
    return np.concatenate(perm)


def standard_order(indices: np.ndarray) -> np.ndarray | None:
    """The permutation that puts a file's columns in standard order (``data[:, order]`` has columns
    ``indices[order]``, increasing), or None when they already are."""
    indices = np.asarray(indices)
    if len(indices) < 2 or np.all(np.diff(indices) > 0):
        return None
    return np.argsort(indices, kind="stable")


def _where(vertex, voxel) -> str:
    return f"vertex {int(vertex)}" if vertex >= 0 else f"voxel {tuple(int(v) for v in voxel)}"


_REORDER_NOTED: set[str] = set()  # files already reported as reordered (one warning per file)


def _note_reordered(bm: cifti2_axes.BrainModelAxis, idx: np.ndarray, path) -> None:
    key = str(Path(path).resolve()) if str(path) != "<brain models>" else None
    if key is not None and key in _REORDER_NOTED:
        return
    if key is not None:
        _REORDER_NOTED.add(key)
    if is_fmriprep_row_major(bm, idx):
        what = (
            "its subcortical voxels are in the row-major (i, j, k) order of fMRIPrep <= 23.1 "
            "(niworkflows < 1.8.1, nipreps/niworkflows#814), not the HCP order"
        )
    else:
        what = "its columns are not in the HCP standard order"
    log.warning(
        "%s: %s. It is read by grayordinate (each column's structure and voxel are in its header); "
        "files written from it keep its column order",
        path,
        what,
    )


def is_fmriprep_row_major(bm: cifti2_axes.BrainModelAxis, idx: np.ndarray) -> bool:
    """True when ``bm`` differs from the standard order only inside subcortical structures, whose
    voxels are sorted by (i, j, k) with k fastest: what fMRIPrep <= 23.1 wrote (HCP: i fastest)."""
    if np.any(np.diff(idx[bm.surface_mask]) <= 0):
        return False
    for _, _, sub in bm.iter_structures():
        if sub.volume_mask.any():
            v = np.asarray(sub.voxel, np.int64)
            if not np.array_equal(np.lexsort((v[:, 2], v[:, 1], v[:, 0])), np.arange(len(v))):
                return False
    # structures themselves in standard order: each structure's columns all follow the previous one's
    blocks = [np.sort(idx[sl]) for _, sl, _ in bm.iter_structures()]
    return all(a[-1] < b[0] for a, b in zip(blocks, blocks[1:]))


def _same_models(a: cifti2_axes.BrainModelAxis, b: cifti2_axes.BrainModelAxis) -> bool:
    return (
        np.array_equal(a.name, b.name)
        and np.array_equal(a.vertex, b.vertex)
        and np.array_equal(a.voxel, b.voxel)
        and a.nvertices == b.nvertices
    )


@dataclass
class DenseSeries:
    """A dtseries read from disk: data (n_frames, n_vertices) with its columns in standard order
    (whatever the file's order), their indices into 91,282, TR. ``order`` is how the file's columns
    were permuted (``data = file_data[:, order]``; None: the file was in standard order) and
    ``brain_models`` the file's own, so a result can be written back in the file's order."""

    data: np.ndarray  # (T, V) columns in standard order
    indices: np.ndarray  # (V,) standard grayordinate index of each column (increasing)
    tr: float  # seconds
    brain_models: cifti2_axes.BrainModelAxis
    path: Path
    order: np.ndarray | None = None  # (V,) file column of each returned column; None: unchanged

    @property
    def n_frames(self) -> int:
        return self.data.shape[0]


def load_header(path: str | os.PathLike) -> tuple[nib.Cifti2Image, cifti2_axes.BrainModelAxis, float, np.ndarray]:
    """Open a .dtseries.nii lazily: (image, brain models, TR in seconds, standard index of each of
    the file's columns, in the file's order: see :func:`standard_indices` and :func:`standard_order`)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such CIFTI file")
    try:
        img = nib.load(path)
    except Exception as e:  # nibabel raises many types on corrupt files
        raise CiftiError(f"{path}: cannot be read as CIFTI-2 ({type(e).__name__}: {e})") from e
    if not isinstance(img, nib.Cifti2Image):
        raise CiftiError(f"{path}: is a {type(img).__name__}, expected a CIFTI-2 .dtseries.nii")
    try:
        series, bm = img.header.get_axis(0), img.header.get_axis(1)
    except Exception as e:
        raise CiftiError(f"{path}: CIFTI header is not a dense time series ({e})") from e
    if not isinstance(series, cifti2_axes.SeriesAxis) or not isinstance(bm, cifti2_axes.BrainModelAxis):
        raise CiftiError(
            f"{path}: axes are ({type(series).__name__}, {type(bm).__name__}); expected "
            "(SeriesAxis, BrainModelAxis) as in a .dtseries.nii"
        )
    if series.unit.upper() != "SECOND":
        raise CiftiError(f"{path}: series unit is {series.unit}; expected SECOND (a time series with TR in seconds)")
    tr = float(series.step)
    return img, bm, tr, standard_indices(bm, path)


def read_dtseries(path: str | os.PathLike, frames: slice | None = None, dtype=np.float32) -> DenseSeries:
    """Read a dense time series, checking its layout, with its columns in standard order.
    ``frames`` selects rows without reading all."""
    img, bm, tr, idx = load_header(path)
    try:
        data = np.asarray(img.dataobj[frames if frames is not None else slice(None)], dtype=dtype)
    except Exception as e:
        raise CiftiError(
            f"{path}: data block cannot be read (truncated or corrupt file? header promises "
            f"{img.shape[0]} frames x {img.shape[1]} grayordinates): {e}"
        ) from e
    order = standard_order(idx)
    if order is not None:
        data, idx = data[:, order], idx[order]  # (T, V) in standard order
    return DenseSeries(data=data, indices=idx, tr=tr, brain_models=bm, path=Path(path), order=order)


def read_first_map(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """First map of any dense CIFTI (.dlabel/.dscalar/.dtseries): (values (V,), standard indices)."""
    path = Path(path)
    try:
        img = nib.load(path)
        bm = img.header.get_axis(1)
        values = np.asarray(img.dataobj[0])
    except Exception as e:
        raise CiftiError(f"{path}: cannot be read as a dense CIFTI-2 file ({e})") from e
    if not isinstance(bm, cifti2_axes.BrainModelAxis):
        raise CiftiError(f"{path}: second axis is {type(bm).__name__}; expected brain models")
    return values, standard_indices(bm, path)


def write_dtseries(
    path: str | os.PathLike,
    data: np.ndarray,
    tr: float,
    indices: np.ndarray | None = None,
    brain_models: cifti2_axes.BrainModelAxis | None = None,
    start: float = 0.0,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write (n_frames, n_vertices) data as a CIFTI-2 .dtseries.nii with a SeriesAxis of step ``tr``
    seconds. Columns are the standard grayordinates ``indices`` (default: all 91,282) or the given
    ``brain_models``. Written to a temporary file in the same folder, then renamed."""
    data = np.asarray(data, np.float32)
    if data.ndim != 2:
        raise ValueError(f"{path}: data must be (n_frames, n_vertices), got shape {data.shape}")
    if brain_models is None:
        brain_models = subset_brain_models(np.arange(data.shape[1]) if indices is None else indices)
    if len(brain_models) != data.shape[1]:
        raise ValueError(f"{path}: data has {data.shape[1]} columns but brain models have {len(brain_models)}")
    series = cifti2_axes.SeriesAxis(start=start, step=float(tr), size=data.shape[0], unit="SECOND")
    header = nib.Cifti2Header.from_axes((series, brain_models))
    if metadata:
        header.matrix.metadata = nib.cifti2.Cifti2MetaData(metadata)
    img = nib.Cifti2Image(data, header)
    img.nifti_header.set_intent("ConnDenseSeries")
    return atomic_save(path, img.to_filename)


STALE_AFTER_S = 600  # a writer touches its temporary file or folder far more often than this


def remove_stale_temps(target: str | os.PathLike, suffix: str) -> list[Path]:
    """Remove the hidden temporaries that a killed writer of ``target`` left beside it
    (``.<name>.<random><suffix>``, files or folders), and return them. Only those untouched for
    ``STALE_AFTER_S``: a live writer of the same target (another process) keeps its own fresh."""
    target = Path(target)
    head, now, removed = f".{target.name}.", time.time(), []
    if not target.parent.is_dir():
        return removed
    for p in target.parent.iterdir():
        if not (p.name.startswith(head) and p.name.endswith(suffix)) or len(p.name) <= len(head) + len(suffix):
            continue
        try:
            if now - p.lstat().st_mtime < STALE_AFTER_S:
                continue
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
        except OSError:
            continue  # gone already, or not ours to remove
        removed.append(p)
        log.info("removed %s, left by an earlier run that was killed while writing %s", p, target)
    return removed


def atomic_save(path: str | os.PathLike, save) -> Path:
    """Call ``save(tmp_path)`` then rename over ``path``: a half-written file never replaces a good one.

    The file's mode is 0o666 minus the process umask, as for a file opened for writing (mkstemp's
    own 0o600 would make a lab's shared data and results unreadable to colleagues)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes) or ".tmp"
    remove_stale_temps(path, suffix)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        save(tmp)
        os.chmod(tmp, new_file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def new_file_mode() -> int:
    """0o666 minus the process umask: the mode ``open(path, "w")`` gives a new file. The umask is
    read from /proc on Linux (no side effect), elsewhere set and restored at once."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """``text`` written to ``path`` through :func:`atomic_save`."""
    return atomic_save(path, lambda tmp: Path(tmp).write_text(text))


def swap_in_dir(new: Path, target: Path, aside: Path) -> Path:
    """Put the finished folder ``new`` at ``target``: an existing ``target`` is first moved to
    ``aside`` (on the same file system; the caller removes it) and moved back if the swap fails,
    so ``target`` is never left half-written or missing."""
    if target.exists():
        target.rename(aside)
    try:
        new.rename(target)
    except BaseException:
        if aside.exists():
            aside.rename(target)
        raise
    return target


def atomic_write_csv(path: str | os.PathLike, rows, fieldnames: list[str]) -> Path:
    """Dict ``rows`` as a CSV with a header of ``fieldnames``, written through :func:`atomic_save`."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fieldnames)
    w.writeheader()
    w.writerows(rows)
    return atomic_write_text(path, buf.getvalue())
