"""What the experiments' tables share: the regions and metrics they report, the mean over subjects,
CSV and PNG writing, the protocol line of a prepared cache, and the progress line every job prints."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from eeg2fmri.data.cifti import atomic_save, atomic_write_csv, atomic_write_text

REGIONS = ("whole", "V1", "V1+A1")
SPATIAL = ("mse", "r", "cos")  # the spatial metrics of every table, per region
SPATIAL_COLUMNS = " | ".join(f"{r} MSE | {r} r | {r} cos" for r in REGIONS)  # their markdown column titles
# the spatial metrics and the temporal r of every region (the floors' and the fill study's columns)
REGION_KEYS = [f"{r}/{m}" for r in REGIONS for m in SPATIAL] + [f"{r}/temporal_r_median" for r in REGIONS]


def say(msg: str) -> None:
    print(f"[reproduce {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and std of the finite values (the scores of several subjects), NaN for none."""
    v = np.array([x for x in values if x is not None and math.isfinite(x)], float)
    if len(v) == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std())


def write_csv(path: Path, rows: list[dict]) -> None:
    atomic_write_csv(path, rows, list(rows[0]))


def save_png(fig, path: Path) -> None:
    """A matplotlib figure written as a PNG, atomically."""
    atomic_save(path, lambda tmp: fig.savefig(tmp, format="png"))


def cache_protocol(cache: Path) -> str:
    """The protocol a prepared cache was made under (its normalisation and split), as one line."""
    import h5py

    with h5py.File(cache, "r") as h5:
        return str(h5.attrs.get("protocol", "normalize=train; split=clips; detrend=none"))


def stamp_protocol(md: Path, csv_path: Path, cache: Path) -> None:
    """The cache's protocol line under a markdown table's title, and as a column of its CSV."""
    protocol = cache_protocol(cache)
    head, _, rest = md.read_text().partition("\n")
    atomic_write_text(md, f"{head}\n\nProtocol: {protocol}\n{rest}")
    add_column(csv_path, "protocol", protocol)


def add_column(path: Path, name: str, value: str) -> None:
    """A column of one value appended to every row of a CSV file (unless it has that column)."""
    import csv

    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if rows and name not in rows[0]:
        atomic_write_csv(path, [{**r, name: value} for r in rows], [*rows[0], name])
