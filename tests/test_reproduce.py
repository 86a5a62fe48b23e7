"""make reproduce-table1 at the smallest scale: table shape, and every number equals what the
metrics give for the saved predictions."""

import csv
import json

import h5py
import numpy as np
import pytest
import torch

from eeg2fmri.data.regions import region_columns
from eeg2fmri.experiments.reproduce import reproduce
from eeg2fmri.experiments.tables import REGIONS
from eeg2fmri.metrics import RegionMetrics


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    root = tmp_path_factory.mktemp("repro")
    args = dict(
        scale="ci", subjects=[1], raw=str(root / "raw"), prepared=str(root / "prep"), results=str(root / "results")
    )
    md = reproduce("table1", methods=["mean", "ridge"], ks=[3], **args)
    return root, md, args


def test_table1_shape_and_numbers_match_saved_predictions(table):
    root, md, _ = table
    text = md.read_text()
    tables, _, floors = text.partition("# Table 1c")
    rows = [line for line in tables.splitlines() if line.startswith("| 3 |")]
    # Table 1, Table 1b and the per-subject table: (2 methods + ceiling) + (2 + ceiling) + 2 rows
    assert len(rows) == 3 + 3 + 2
    # Table 1c: the two session floors and the EEG model on shuffled EEG (the mean frame has no EEG)
    assert [line.split(" | ")[1] for line in floors.splitlines() if line.startswith("| 3 |")] == [
        "Run mean (train)",
        "Nearest train frame",
        "Ridge (EEG shuffled within run)",
    ]
    assert "Protocol: normalize=train: z-score with train-frame statistics; split=clips" in text
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
    import eeg2fmri.trainer

    def boom(*a, **k):
        raise AssertionError("a finished cell was recomputed")

    monkeypatch.setattr(eeg2fmri.trainer, "run_trainer", boom)
    assert reproduce("table1", methods=["mean", "ridge"], ks=[3], **args) == md


def test_a_cell_prints_its_progress_and_old_stamps_still_match(table, capfd, monkeypatch):
    """A cell's training prints progress lines (stderr is not a terminal here), and a cell stamped
    before that, with ``--trainer.enable_progress_bar false`` in its arguments, is still reused."""
    import eeg2fmri.trainer
    from eeg2fmri.experiments.cells import run_cell
    from eeg2fmri.experiments.scales import SCALES

    root, _, _ = table
    cache = root / "prep" / "ci" / "sub_0001.h5"
    cell = root / "results" / "ci" / "cells" / "sub1" / "K3" / "mean_progress"
    run_cell(1, 3, "mean", SCALES["ci"], cache, cell)
    err = capfd.readouterr().err
    assert "fit: " in err and "steps per epoch" in err and "epoch 1/1" in err
    stamp = cell / "cell_args.json"
    args = json.loads(stamp.read_text())
    assert "--trainer.enable_progress_bar" not in args
    stamp.write_text(json.dumps(args[:4] + ["--trainer.enable_progress_bar", "false"] + args[4:]))

    def boom(*a, **k):
        raise AssertionError("a finished cell was recomputed")

    monkeypatch.setattr(eeg2fmri.trainer, "run_trainer", boom)
    assert run_cell(1, 3, "mean", SCALES["ci"], cache, cell) == json.loads((cell / "test_metrics.json").read_text())
    # an edited config (the same arguments would now train another model) reruns the cell
    configs = cell / "cell_configs.json"
    saved = json.loads(configs.read_text())
    assert any(p.endswith("baselines/mean.yaml") for p in saved)
    configs.write_text(json.dumps({p: "0" * 64 for p in saved}))
    with pytest.raises(AssertionError, match="recomputed"):
        run_cell(1, 3, "mean", SCALES["ci"], cache, cell)
    configs.write_text(json.dumps(saved))
    args[args.index("--data.n_frames") + 1] = "4"  # a real change of the cell is not hidden by the filter
    stamp.write_text(json.dumps(args))
    with pytest.raises(AssertionError, match="recomputed"):
        run_cell(1, 3, "mean", SCALES["ci"], cache, cell)


def test_floors_and_the_permutation_floor(table):
    """The shuffled-EEG floor is the Ridge checkpoint tested through the CLI on EEG permuted within
    each run: its numbers are that test's, its results say so and live beside the cell's own, which
    stay the recorded-EEG results; the protocol is a column of both CSVs."""
    root, md, _ = table
    out = root / "results" / "ci"
    cell = out / "cells" / "sub1" / "K3" / "ridge"
    own, shuffled = (json.loads((d / "test_metrics.json").read_text()) for d in (cell, cell / "eeg_shuffled"))
    assert own["eeg"] == "as recorded" and shuffled["eeg"].startswith("shuffled within each run")
    assert own["metrics"]["model"]["whole/r"] != shuffled["metrics"]["model"]["whole/r"]
    with open(out / "table1_floors.csv") as f:
        rows = {(r["method"], r["region"], r["metric"]): r for r in csv.DictReader(f)}
    got = rows[("Ridge (EEG shuffled within run)", "whole", "r")]
    assert float(got["mean"]) == pytest.approx(shuffled["metrics"]["model"]["whole/r"], rel=1e-9)
    assert got["protocol"].startswith("normalize=train") and ("Run mean (train)", "V1", "mse") in rows
    with open(out / "table1.csv") as f:
        assert all(r["protocol"].startswith("normalize=train") for r in csv.DictReader(f))


@pytest.mark.slow
def test_table1_paper_protocol_through_the_release_form(tmp_path):
    """make reproduce-table1 PROTOCOL=paper at the smallest size: the simulator writes the release
    form, import-cinebrain reads it, prepare applies the authors' normalisation and tail split, and
    the table says so."""
    from eeg2fmri.data.release import authors_frames

    args = dict(
        scale="ci",
        subjects=[1],
        raw=str(tmp_path / "raw"),
        prepared=str(tmp_path / "prep"),
        results=str(tmp_path / "results"),
    )
    md = reproduce("table1", methods=["mean", "ridge"], ks=[3], protocol="paper", **args)
    assert md == tmp_path / "results" / "ci-paper" / "table1.md"
    text = md.read_text()
    assert "Protocol: normalize=all: z-score over all frames (ddof 1); split=tail" in text and "# Table 1c" in text
    assert (tmp_path / "raw" / "ci" / "release" / "sub-0001" / "EEG_preprocessed_data.tar").exists()
    with h5py.File(tmp_path / "prep" / "ci-paper" / "sub_0001.h5") as h5:
        assert h5.attrs["normalize"] == "all" and h5.attrs["split"] == "tail" and "fmri_clean" in h5
        run, vol = h5["frame_run"][:], h5["frame_volume"][:]
    sim = json.loads((tmp_path / "raw" / "ci" / "release" / "sub-0001" / "simulation.json").read_text())
    for r in sim["runs"]:
        (clip,) = r["clips"]
        first, n = authors_frames(clip["start"], clip["stop"])
        np.testing.assert_array_equal(vol[run == r["run"]], first + np.arange(n))
    shuffled = json.loads(
        (md.parent / "cells" / "sub1" / "K3" / "ridge" / "eeg_shuffled" / "test_metrics.json").read_text()
    )
    assert shuffled["protocol"].startswith("normalize=all")


def test_table1_gives_each_k_its_own_eeg_span(tmp_path):
    """The windowed model sees more EEG at a larger K: each K's row prints that K's span, not the last K's."""
    from eeg2fmri.experiments.table1 import write_table1

    metrics = {
        src: {f"{region}/{key}": 0.5 for region in REGIONS for key in ("mse", "r", "cos", "temporal_r_median")}
        for src in ("model", "model_sample", "ceiling")
    }
    for src in metrics:
        metrics[src].update({f"{region}/{key}_std": 0.1 for region in REGIONS for key in ("mse", "r", "cos")})
    res = {
        (1, 3, "diffusion"): {"eeg_seconds": 6.4, "metrics": metrics},
        (1, 10, "diffusion"): {"eeg_seconds": 16.0, "metrics": metrics},
    }
    write_table1(res, tmp_path, [1], (3, 10), ["diffusion"])
    lines = (tmp_path / "table1.md").read_text().partition("# Table 1b")[0].splitlines()
    mean_rows = [line for line in lines if "posterior mean" in line and line.startswith("| ")]
    spans = {line.split("|")[1].strip(): line.split("|")[3].strip() for line in mean_rows}
    assert spans == {"3": "6.4", "10": "16.0"}, mean_rows
    rows = list(csv.DictReader(open(tmp_path / "table1.csv")))
    assert {(r["K"], r["eeg_seconds"]) for r in rows if r["source"] == "model"} == {("3", "6.4"), ("10", "16.0")}


@pytest.mark.slow
def test_table2_rows_and_the_linear_row_against_numpy(tmp_path):
    """make reproduce-table2 at the smallest scale: every row and the gap sweep are written, the
    posterior-mean row averages the scale's number of samples, and the linear row equals numpy's
    interpolation between frames 0 and K-1 scored by spatial Pearson r per filled frame."""
    from eeg2fmri.data.datamodule import EEGfMRIDataModule
    from eeg2fmri.experiments.scales import SCALES

    args = dict(
        scale="ci",
        subjects=[1],
        raw=str(tmp_path / "raw"),
        prepared=str(tmp_path / "prep"),
        results=str(tmp_path / "results"),
    )
    md = reproduce("table2", **args)
    rows = {r["method"]: r for r in csv.DictReader(open(md.parent / "table2.csv"))}
    n = SCALES["ci"].interrecon_samples
    assert set(rows) == {
        "Linear",
        "Cubic spline",
        "Gaussian conditional",
        "Gaussian conditional + EEG μ",
        "FIR ridge (EEG only)",
        "Ours, EEG only (posterior mean)",
        "Without null space",
        "With null space (one sample)",
        f"With null space (mean of {n} samples)",
        "With null space (chain from x_T = 0)",
    }
    assert f"mean of {n} samples" in md.read_text()
    zero, one = rows["With null space (chain from x_T = 0)"], rows["With null space (one sample)"]
    assert np.isfinite(float(zero["whole/r"])) and zero["whole/mse"] != one["whole/mse"]
    sweep = list(csv.DictReader(open(md.parent / "fig3_gap_sweep.csv")))
    assert [int(r["gap"]) for r in sweep] == list(range(1, 9))
    # the Gaussian conditional rows: finite, the EEG's μ changes the fill, and lines of Figure 3
    g, g_mu = rows["Gaussian conditional"], rows["Gaussian conditional + EEG μ"]
    assert np.isfinite([float(g["whole/r"]), float(g_mu["whole/r"]), float(g["whole/mse"])]).all()
    assert g["whole/mse"] != g_mu["whole/mse"]
    assert all(np.isfinite(float(r["Gaussian conditional + EEG μ"])) for r in sweep)
    dm = EEGfMRIDataModule(str(tmp_path / "prep" / "ci" / "sub_0001.h5"), n_frames=10, batch_size=16)
    dm.setup("test")
    rs, errs = [], []
    for b in dm.test_dataloader():
        x = b["fmri"].double().numpy()  # (B, 10, V)
        w = np.arange(1, 9)[None, :, None] / 9.0
        fill = (1 - w) * x[:, :1] + w * x[:, -1:]  # (B, 8, V)
        for p, t in zip(fill.reshape(-1, x.shape[-1]), x[:, 1:-1].reshape(-1, x.shape[-1])):
            rs.append(np.corrcoef(p, t)[0, 1])
            errs.append(np.mean((p - t) ** 2))
    assert float(rows["Linear"]["whole/r"]) == pytest.approx(np.mean(rs), abs=1e-4)
    assert float(rows["Linear"]["whole/mse"]) == pytest.approx(np.mean(errs), rel=1e-4)
