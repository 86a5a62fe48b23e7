"""make reproduce-table1 at the smallest scale: table shape, and every number equals what the
metrics give for the saved predictions."""

import csv
import json

import h5py
import numpy as np
import pytest
import torch

from eeg2fmri.data.regions import region_columns
from eeg2fmri.metrics import RegionMetrics
from eeg2fmri.reproduce import REGIONS, reproduce


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    root = tmp_path_factory.mktemp("repro")
    args = dict(scale="ci", subjects=[1], raw=str(root / "raw"), prepared=str(root / "prep"), results=str(root / "results"))
    md = reproduce("table1", methods=["mean", "ridge"], ks=[3], **args)
    return root, md, args


def test_table1_shape_and_numbers_match_saved_predictions(table):
    root, md, _ = table
    text = md.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| 3 |")]
    # Table 1, Table 1b and the per-subject table: (2 methods + ceiling) + (2 + ceiling) + 2 rows
    assert len(rows) == 3 + 3 + 2
    header = next(line for line in text.splitlines() if line.startswith("| K | method | EEG s | whole MSE"))
    assert header.count("|") == 3 + 3 * len(REGIONS) + 1
    assert "| 3 | Ridge | 0.8 |" in text  # the seconds of EEG a frame's prediction sees
    with open(md.with_suffix(".csv")) as f:
        table_rows = list(csv.DictReader(f))
    cache = root / "prep" / "ci" / "sub_0001.h5"
    with h5py.File(cache) as h5:
        fmri, indices = h5["fmri"][:].astype(np.float32), h5["indices"][:]
    checked = 0
    for slug, name in (("mean", "Mean frame"), ("ridge", "Ridge")):
        cell = root / "results" / "ci" / "cells" / "sub1" / "K3" / slug
        saved = np.load(cell / "test_predictions.npz")
        pred, rows_idx = torch.as_tensor(saved["pred"]), torch.as_tensor(saved["frame_index"])
        truth = torch.as_tensor(fmri)[rows_idx]  # (N, K, V)
        metrics = RegionMetrics({r: torch.as_tensor(region_columns(r, indices)) for r in REGIONS}, fmri.shape[1])
        metrics.update(pred, truth)
        expect = metrics.compute()
        for r in table_rows:
            if r["method"] != name or r["metric"] in ("identification_mean_rank",) and False:
                continue
            key = f"{r['region']}/{r['metric']}"
            got = float(r["mean"])
            if np.isnan(expect[key]):
                assert np.isnan(got), key
            else:
                assert got == pytest.approx(expect[key], rel=1e-6, abs=1e-9), (name, key)
            checked += 1
    assert checked == 2 * len(REGIONS) * 7


def test_finished_cells_are_reused(table, monkeypatch):
    root, md, args = table
    import eeg2fmri.cli

    def boom(*a, **k):
        raise AssertionError("a finished cell was recomputed")

    monkeypatch.setattr(eeg2fmri.cli, "main", boom)
    assert reproduce("table1", methods=["mean", "ridge"], ks=[3], **args) == md
