"""eeg2fmri evaluate: every metric equals a numpy reference on two CIFTI files, NaN rows/columns of a
`predict`-style file are left out, frames are aligned by the SeriesAxis start, and bad pairs fail."""

import csv
import json

import numpy as np
import pytest

from eeg2fmri.cli import main
from eeg2fmri.data.cifti import CiftiError, write_dtseries
from eeg2fmri.data.regions import region_columns
from eeg2fmri.evaluate import evaluate
from tests.conftest import TINY_INDICES

T, V = 40, len(TINY_INDICES)
REGIONS = ("whole", "V1", "V1+A1")


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """truth: a static map + structured fluctuations, in BOLD units; pred: a noisy, scaled copy."""
    root = tmp_path_factory.mktemp("eval")
    rng = np.random.default_rng(0)
    mean_map = 1000 + 50 * rng.standard_normal(V)
    signal = rng.standard_normal((T, 3)) @ rng.standard_normal((3, V)) * 5
    truth = (mean_map + signal + rng.standard_normal((T, V))).astype(np.float32)
    pred = (mean_map + 0.6 * signal + 2 * rng.standard_normal((T, V))).astype(np.float32)
    return (
        write_dtseries(root / "pred.dtseries.nii", pred, 0.8, indices=TINY_INDICES),
        write_dtseries(root / "truth.dtseries.nii", truth, 0.8, indices=TINY_INDICES),
        pred.astype(np.float64),
        truth.astype(np.float64),
        root,
    )


def reference(pred, truth, indices, mean=None, std=None, identification=True) -> dict:
    """The metric suite in numpy: frames as 1-frame windows; z-scored with (mean, std) if given."""
    if mean is not None:
        pred, truth = (pred - mean) / std, (truth - mean) / std
    out = {}
    for region in REGIONS:
        c = region_columns(region, indices)
        p, t = pred[:, c], truth[:, c]
        mse = ((p - t) ** 2).mean(1)
        pc, tc = p - p.mean(1, keepdims=True), t - t.mean(1, keepdims=True)
        r = (pc * tc).sum(1) / np.sqrt((pc**2).sum(1) * (tc**2).sum(1))
        cos = (p * t).sum(1) / np.sqrt((p**2).sum(1) * (t**2).sum(1))
        for name, v in (("mse", mse), ("r", r), ("cos", cos)):
            out[f"{region}/{name}"], out[f"{region}/{name}_std"] = v.mean(), v.std()
        pt, tt = p - p.mean(0), t - t.mean(0)
        rt = (pt * tt).sum(0) / np.sqrt((pt**2).sum(0) * (tt**2).sum(0))  # temporal r per grayordinate
        out[f"{region}/temporal_r_median"] = np.sort(rt)[(len(rt) - 1) // 2]  # the lower median (torch's)
        out[f"{region}/temporal_r_mean"] = rt.mean()
        if identification:
            zp = pc / pc.std(1, keepdims=True)
            zt = tc / tc.std(1, keepdims=True)
            corr = zp @ zt.T / len(c)  # (N, N)
            own = np.diag(corr)[:, None]
            rank = 1 + (corr > own).sum(1) + 0.5 * ((corr == own).sum(1) - 1)
            out[f"{region}/identification_top1"] = (rank <= 1).mean()
            out[f"{region}/identification_mean_rank"] = rank.mean()
    return out


def check(got: dict, expect: dict, rel=1e-6):
    for key, value in expect.items():
        assert got[key] == pytest.approx(value, rel=rel, abs=1e-9), key


def test_metrics_equal_numpy_with_truth_zscoring(pair):
    pred_p, truth_p, pred, truth, _ = pair
    res = evaluate(str(pred_p), str(truth_p), progress=False)
    mean, std = truth.mean(0), truth.std(0)
    check(res["metrics"]["model"], reference(pred, truth, TINY_INDICES, mean, std), rel=1e-5)
    assert res["n_frames_scored"] == T and res["n_grayordinates"] == V and res["zscore"]


def test_raw_values_and_frame_selection(pair, tmp_path):
    pred_p, truth_p, pred, truth, _ = pair
    frames = [2, 3, 10, 11, 12, 30]
    res = evaluate(str(pred_p), str(truth_p), frames=frames, zscore=False, progress=False)
    check(res["metrics"]["model"], reference(pred[frames], truth[frames], TINY_INDICES))
    # a censor file selects its censored frames
    censor = tmp_path / "censor.tsv"
    censor.write_text("censored\n" + "".join(f"{int(i in frames)}\n" for i in range(T)))
    res2 = evaluate(str(pred_p), str(truth_p), frames=str(censor), zscore=False, progress=False)
    assert res2["scored_frames"] == frames and res2["metrics"] == res["metrics"]


def test_predict_style_nan_rows_columns_and_offset(pair, tmp_path):
    """A prediction like `eeg2fmri predict` writes: starting at a later volume, NaN for volumes it did not
    predict and for grayordinates outside its region."""
    _, truth_p, pred, truth, _ = pair
    first, n = 5, 30  # the prediction covers truth frames 5..34
    p = pred[first : first + n].copy()
    outside = ~np.isin(np.arange(V), region_columns("V1+A1", TINY_INDICES))
    p[:, outside] = np.nan
    nan_rows = [0, 1, 17]
    p[nan_rows] = np.nan
    path = write_dtseries(
        tmp_path / "p.dtseries.nii",
        p.astype(np.float32),
        0.8,
        indices=TINY_INDICES,
        start=first * 0.8,
        metadata={"eeg2fmri": "predicted from EEG by EEG2fMRIDiffusion; NaN = not predicted"},
    )
    res = evaluate(str(path), str(truth_p), regions=["V1+A1", "V1"], progress=False)
    rows = np.setdiff1d(np.arange(n), nan_rows)
    keep = ~outside
    mean, std = truth[:, keep].mean(0), truth[:, keep].std(0)
    expect = reference(pred[first + rows][:, keep], truth[first + rows][:, keep], TINY_INDICES[keep], mean, std)
    check(res["metrics"]["model"], {k: v for k, v in expect.items() if not k.startswith("whole")}, rel=1e-5)
    assert res["scored_frames"] == (rows + first).tolist() and res["frame_offset"] == first
    assert res["n_frames_excluded"] == len(nan_rows) and res["n_grayordinates_excluded"] == int(outside.sum())


def test_different_layouts_score_the_common_grayordinates(pair, tmp_path):
    _, truth_p, pred, truth, _ = pair
    cols = np.arange(0, V, 2)
    path = write_dtseries(
        tmp_path / "half.dtseries.nii", pred[:, cols].astype(np.float32), 0.8, indices=TINY_INDICES[cols]
    )
    res = evaluate(str(path), str(truth_p), progress=False, identification=False)
    mean, std = truth[:, cols].mean(0), truth[:, cols].std(0)
    expect = reference(pred[:, cols], truth[:, cols], TINY_INDICES[cols], mean, std, identification=False)
    check(res["metrics"]["model"], expect, rel=1e-5)
    assert res["n_grayordinates"] == len(cols)


def test_bad_pairs(pair, tmp_path):
    pred_p, truth_p, pred, _, _ = pair
    short = write_dtseries(tmp_path / "short.dtseries.nii", pred[:30].astype(np.float32), 0.8, indices=TINY_INDICES)
    shifted = write_dtseries(
        tmp_path / "shifted.dtseries.nii",
        pred[:30].astype(np.float32),
        0.8,
        indices=TINY_INDICES,
        start=20 * 0.8,
        metadata={"eeg2fmri": "predicted"},
    )
    slow = write_dtseries(tmp_path / "slow.dtseries.nii", pred.astype(np.float32), 2.0, indices=TINY_INDICES)
    apart = write_dtseries(
        tmp_path / "apart.dtseries.nii", pred[:, :3].astype(np.float32), 0.8, indices=TINY_INDICES[:3] + 1
    )
    with pytest.raises(
        CiftiError, match=r"short\.dtseries\.nii has 30 frames \(from 0 s\) and .*truth\.dtseries\.nii has 40"
    ):
        evaluate(str(short), str(truth_p), progress=False)
    with pytest.raises(CiftiError, match=r"has 30 frames \(from 16 s\)"):  # a predict file ending past the truth's end
        evaluate(str(shifted), str(truth_p), progress=False)
    with pytest.raises(CiftiError, match=r"TR 2 s but .* has TR 0.8 s"):
        evaluate(str(slow), str(truth_p), progress=False)
    with pytest.raises(CiftiError, match="share no grayordinate"):
        evaluate(str(apart), str(truth_p), progress=False)
    with pytest.raises(ValueError, match=r"frames \[40\]: expected 0-based frame indices in 0\.\.39"):
        evaluate(str(pred_p), str(truth_p), frames=[40], progress=False)


def test_cli_writes_json_and_csv(pair, capsys):
    pred_p, truth_p, _, _, root = pair
    out = root / "scores" / "s.json"
    main(["evaluate", "--pred", str(pred_p), "--truth", str(truth_p), "--out", str(out)])
    text = capsys.readouterr().out
    assert "spatial r" in text and "V1+A1" in text
    saved = json.loads(out.read_text())
    with open(out.with_suffix(".csv")) as f:
        rows = list(csv.DictReader(f))
    assert [r["region"] for r in rows] == list(REGIONS)
    for r in rows:
        for key in ("mse", "r", "cos", "temporal_r_median", "identification_top1"):
            assert float(r[key]) == pytest.approx(saved["metrics"]["model"][f"{r['region']}/{key}"])


def test_one_normalisation_the_measured_datas_stated_in_the_output(pair, tmp_path, capsys):
    """Against noise-free BOLD, the z-scoring must use the measured data's statistics (its own, much
    smaller std would inflate MSE against `test`'s units): refused without scale_from; with a run or a
    prepared cache as scale_from, both series are z-scored with that one mean and std, as stated."""
    pred_p, _, pred, truth, _ = pair
    rng = np.random.default_rng(1)
    measured = (truth + 5 * rng.standard_normal(truth.shape)).astype(np.float32)  # the truth plus scanner noise
    measured_p = write_dtseries(tmp_path / "measured.dtseries.nii", measured, 0.8, indices=TINY_INDICES)
    measured = measured.astype(np.float64)
    clean_p = write_dtseries(
        tmp_path / "sub-01_task-shape_run-1_desc-noisefree_bold.dtseries.nii",
        truth.astype(np.float32),
        0.8,
        indices=TINY_INDICES,
        metadata={"eeg2fmri": "simulated BOLD", "desc": "noise-free"},
    )
    with pytest.raises(CiftiError, match=r"noise-free BOLD.*--scale_from"):
        evaluate(str(pred_p), str(clean_p), progress=False)
    res = evaluate(str(pred_p), str(clean_p), scale_from=str(measured_p), progress=False)
    check(res["metrics"]["model"], reference(pred, truth, TINY_INDICES, measured.mean(0), measured.std(0)), rel=1e-5)
    assert str(measured_p) in res["normalisation"] and f"over its {T} frames" in res["normalisation"]
    own = reference(pred, truth, TINY_INDICES, truth.mean(0), truth.std(0))  # what the truth's own std gave
    assert own["whole/mse"] > 1.5 * res["metrics"]["model"]["whole/mse"]
    # a prepared cache: its training-frame statistics, the units of `eeg2fmri test`
    import h5py

    cache = tmp_path / "sub_0001.h5"
    m, s = truth.mean(0) + 3.0, truth.std(0) * 2.0
    with h5py.File(cache, "w") as h5:
        h5["fmri_mean"], h5["fmri_std"], h5["indices"] = m.astype(np.float32), s.astype(np.float32), TINY_INDICES
        h5["split"] = np.array([0, 0, 1, 2], np.int8)
    res = evaluate(str(pred_p), str(clean_p), scale_from=str(cache), progress=False)
    check(
        res["metrics"]["model"],
        reference(pred, truth, TINY_INDICES, m.astype(np.float32), s.astype(np.float32)),
        rel=1e-5,
    )
    capsys.readouterr()
    main(["evaluate", "--pred", str(pred_p), "--truth", str(clean_p), "--scale_from", str(cache)])
    out = capsys.readouterr().out
    assert (
        f"units: z-scored per grayordinate with the training-frame mean and std of the cache {cache} (2 frames" in out
    )


def test_table_labels_are_short(pair, tmp_path, capsys):
    _, truth_p, pred, _, _ = pair
    long = write_dtseries(
        tmp_path / "sub-0001_task-shape_run-1_space-fsLR_den-91k_desc-eeg2fmri_bold.dtseries.nii",
        pred.astype(np.float32),
        0.8,
        indices=TINY_INDICES,
    )
    other = write_dtseries(
        tmp_path / "a_very_long_output_name_of_another_tool_v2.dtseries.nii",
        pred.astype(np.float32),
        0.8,
        indices=TINY_INDICES,
    )
    assert evaluate(str(long), str(truth_p), progress=False)["method"] == "eeg2fmri"
    res = evaluate(str(other), str(truth_p), progress=False, identification=False)
    assert len(res["method"]) == 22 and res["method"].startswith("a_very_lon") and res["method"].endswith("_tool_v2")
    assert res["pred"] == str(other)
    assert evaluate(str(other), str(truth_p), label="theirs", progress=False)["method"] == "theirs"
    capsys.readouterr()
    evaluate(str(other), str(truth_p), identification=False)
    table = capsys.readouterr().out.splitlines()[:4]
    assert len({len(line) for line in table}) == 1, table  # rows as wide as the header
