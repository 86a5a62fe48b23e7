"""eeg2fmri fill: censor formats, the InterRecon round trip on a tiny trained checkpoint (uncensored
frames bit-identical, header kept, wb_command agrees), the interpolation references, every bad
input (inputs never modified), and the reproduce-fill study at a tiny size."""

import hashlib
import json
import re
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from eeg2fmri.cli import main
from eeg2fmri.data.censor import CensorError, read_censor, write_censor
from eeg2fmri.data.cifti import CiftiError, fmriprep_row_major_order, write_dtseries
from eeg2fmri.data.cinebrain import RawDataError, eeg_stem, fmri_path
from eeg2fmri.data.prepare import prepare
from eeg2fmri.fill import FillError, fill_run, plan_windows
from eeg2fmri.interpolate import cubic_fill, linear_fill
from tests.cli_errors import cli_error
from tests.conftest import TINY_INDICES, make_raw_subject, wb_command
from tests.test_cli import TINY_MODEL

T = 90  # frames per run of make_raw_subject
K = 4  # the tiny model's window
# bursts: the first two frames, three frames, six frames (the longest a K = 4 model anchors is
# 2K - 2 = 6), and the last frame
CENSORED = [0, 1, 10, 11, 12, 40, 41, 42, 43, 44, 45, 89]


def _mask(frames, n=T) -> np.ndarray:
    m = np.zeros(n, bool)
    m[list(frames)] = True
    return m


def _hashes(*paths) -> dict:
    out = {}
    for p in paths:
        for f in [p] if Path(p).is_file() else sorted(Path(p).rglob("*")):
            if f.is_file():
                out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A raw subject, and a diffusion checkpoint (K = 4) trained 1 epoch on it through the CLI."""
    root = tmp_path_factory.mktemp("fill")
    subject = make_raw_subject(root / "raw")
    cache = prepare(subject, root / "prep", progress=False)
    main(
        [
            "fit",
            "--data.data_path",
            str(cache),
            "--data.n_frames",
            str(K),
            "--data.batch_size",
            "8",
            "--trainer.default_root_dir",
            str(root / "run"),
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.logger",
            "false",
            "--evaluator.every_n_epochs",
            "1000",
            "--trainer.num_sanity_val_steps",
            "0",
            *TINY_MODEL,
            "--trainer.max_epochs",
            "1",
        ]
    )
    ckpt = root / "run" / "checkpoints" / "last.ckpt"
    run = dict(
        root=root,
        ckpt=ckpt,
        cache=cache,
        fmri=fmri_path(root / "raw", 1, 1),
        eeg=Path(str(eeg_stem(root / "raw", 1, 1)) + ".npy"),
        raw=root / "raw",
    )
    censor = write_censor(root / "censor.tsv", _mask(CENSORED))
    return {**run, "censor": censor}


@pytest.fixture(scope="module")
def filled(tiny):
    before = _hashes(tiny["raw"], tiny["ckpt"], tiny["censor"])
    out = fill_run(
        tiny["ckpt"],
        tiny["fmri"],
        tiny["eeg"],
        tiny["censor"],
        tiny["root"] / "out" / "filled.dtseries.nii",
        num_inference_steps=4,
        progress=False,
        method="interrecon",
    )
    assert _hashes(tiny["raw"], tiny["ckpt"], tiny["censor"]) == before, "an input file was modified"
    return out


# ------------------------------------------------------------------------------------------------
# The round trip
# ------------------------------------------------------------------------------------------------


def test_interrecon_round_trip(tiny, filled):
    src, out = nib.load(tiny["fmri"]), nib.load(filled)
    a, b = np.asarray(src.dataobj), np.asarray(out.dataobj)
    cens = _mask(CENSORED)
    assert b.dtype == a.dtype and b.shape == a.shape
    assert a[~cens].tobytes() == b[~cens].tobytes()  # uncensored frames bit-identical
    assert np.isfinite(b[cens]).all() and not np.array_equal(a[cens], b[cens])
    # the filled frames are in the run's units (BOLD around 1000), not z-scores
    assert abs(float(b[cens].mean()) - float(a[~cens].mean())) < 1.0
    # the input's header: brain models, series axis, NIfTI intent
    assert out.header.get_axis(1) == src.header.get_axis(1)
    assert out.header.get_axis(0) == src.header.get_axis(0)
    assert out.nifti_header.get_intent()[0] == src.nifti_header.get_intent()[0]
    note = json.loads(out.header.matrix.metadata["eeg2fmri_fill"])
    assert note["method"] == "interrecon" and note["censored_frames"] == CENSORED
    assert note["n_frames_window"] == K and note["stride"] == 1 and note["num_inference_steps"] == 4
    assert note["checkpoint"] == str(tiny["ckpt"]) and note["grayordinates_linear"] == 0 and "date" in note


def test_interrecon_mean_of_samples_is_their_average(tiny, tmp_path):
    """num_samples=2 fills each censored frame with the average of the two draws that seeds 0 and 1
    give alone (one batch holds every window, so each run's draws use exactly those seeds)."""
    args = dict(method="interrecon", num_inference_steps=3, progress=False, batch_size=512, start="random")
    draws = [
        np.asarray(
            nib.load(
                fill_run(
                    tiny["ckpt"],
                    tiny["fmri"],
                    tiny["eeg"],
                    tiny["censor"],
                    tmp_path / f"seed{s}.dtseries.nii",
                    seed=s,
                    **args,
                )
            ).dataobj,
            np.float64,
        )
        for s in (0, 1)
    ]
    two = fill_run(
        tiny["ckpt"], tiny["fmri"], tiny["eeg"], tiny["censor"], tmp_path / "two.dtseries.nii", num_samples=2, **args
    )
    mean = np.asarray(nib.load(two).dataobj, np.float64)
    cens = _mask(CENSORED)
    assert not np.allclose(draws[0][cens], draws[1][cens])  # the seeds differ, so the test can fail
    np.testing.assert_allclose(mean[cens], (draws[0][cens] + draws[1][cens]) / 2, rtol=0, atol=1e-3)
    assert json.loads(nib.load(two).header.matrix.metadata["eeg2fmri_fill"])["num_samples"] == 2


def test_interrecon_default_start_is_the_one_chain_from_zero_noise(tiny, tmp_path):
    """``fill --method interrecon`` starts each window's chain at x_T = 0 (``start="zero"``): with
    η = 0 the fill does not depend on the seed, and it is not what a random start gives."""
    args = dict(method="interrecon", num_inference_steps=3, progress=False, batch_size=512)

    def run(name, **kw):
        path = fill_run(tiny["ckpt"], tiny["fmri"], tiny["eeg"], tiny["censor"], tmp_path / name, **args, **kw)
        return np.asarray(nib.load(path).dataobj, np.float64), json.loads(
            nib.load(path).header.matrix.metadata["eeg2fmri_fill"]
        )

    zero0, note = run("z0.dtseries.nii", seed=0)
    zero5, _ = run("z5.dtseries.nii", seed=5)
    rand0, rnote = run("r0.dtseries.nii", seed=0, start="random")
    cens = _mask(CENSORED)
    assert note["start"] == "zero" and rnote["start"] == "random"
    np.testing.assert_array_equal(zero0, zero5)
    assert not np.allclose(zero0[cens], rand0[cens])
    with pytest.raises(FillError, match="num_samples=2 with start zero.*--start random"):
        run("z2.dtseries.nii", num_samples=2)
    with pytest.raises(FillError, match="start 'mean': expected one of zero, random"):
        run("zm.dtseries.nii", start="mean")


def test_wb_command_reads_the_filled_file(filled):
    wb = wb_command()
    info = subprocess.run([wb, "-file-information", str(filled)], capture_output=True, text=True, check=True).stdout
    assert "Dense Data Series" in info and f"Number of Maps:                 {T}" in info
    stats = subprocess.run(
        [wb, "-cifti-stats", str(filled), "-reduce", "MEAN"], capture_output=True, text=True, check=True
    ).stdout
    wb_mean = np.array([float(v) for v in stats.split()])  # one line per frame (map)
    data = np.asarray(nib.load(filled).dataobj, np.float64)
    cens = _mask(CENSORED)
    np.testing.assert_allclose(wb_mean[cens], data[cens].mean(1), rtol=0, atol=2e-3)  # wb prints 3 decimals
    np.testing.assert_allclose(wb_mean, data.mean(1), rtol=0, atol=2e-3)


def test_interrecon_on_a_file_in_fmriprep_row_major_order(tiny, filled, tmp_path):
    """The same run with its subcortical columns in fMRIPrep <= 23.1's order (nipreps/niworkflows#814):
    fill finds every modelled grayordinate's column, so the result is the standard file's fill with
    its columns permuted, and the output keeps the input's own column order."""
    src = nib.load(tiny["fmri"])
    bm = src.header.get_axis(1)
    perm = fmriprep_row_major_order(bm)
    assert not np.array_equal(perm, np.arange(len(perm)))
    old = write_dtseries(tmp_path / "old.dtseries.nii", np.asarray(src.dataobj)[:, perm], 0.8, brain_models=bm[perm])
    out = fill_run(
        tiny["ckpt"],
        old,
        tiny["eeg"],
        tiny["censor"],
        tmp_path / "out.dtseries.nii",
        num_inference_steps=4,
        progress=False,
        method="interrecon",
    )
    assert nib.load(out).header.get_axis(1) == bm[perm]
    np.testing.assert_allclose(
        np.asarray(nib.load(out).dataobj), np.asarray(nib.load(filled).dataobj)[:, perm], rtol=1e-6, atol=1e-4
    )


@pytest.mark.parametrize("method", ["linear", "cubic"])
def test_interpolation_methods_equal_interpolate(tiny, tmp_path, method):
    out = fill_run(
        None, tiny["fmri"], None, tiny["censor"], tmp_path / f"{method}.dtseries.nii", method=method, progress=False
    )
    a = np.asarray(nib.load(tiny["fmri"]).dataobj)
    b = np.asarray(nib.load(out).dataobj)
    cens = _mask(CENSORED)
    fn = linear_fill if method == "linear" else cubic_fill
    expect = fn(torch.from_numpy(a)[None], torch.from_numpy(~cens)[None])[0].numpy()
    np.testing.assert_array_equal(b[cens], expect[cens])
    assert a[~cens].tobytes() == b[~cens].tobytes()
    assert json.loads(nib.load(out).header.matrix.metadata["eeg2fmri_fill"])["method"] == method


def test_lost_frames_and_uncovered_grayordinates(tiny, tmp_path):
    """A file with NaN (lost) censored frames and more grayordinates than the model covers: the model's
    columns get InterRecon, the others linear interpolation, and the note says so."""
    extra = np.union1d(TINY_INDICES, TINY_INDICES[:-1] + 1)  # a superset of the model's layout
    rng = np.random.default_rng(1)
    data = (1000 + rng.standard_normal((T, len(extra)))).astype(np.float32)
    cens = _mask([5, 6, 30])
    data[cens] = np.nan
    path = write_dtseries(tmp_path / "run.dtseries.nii", data, 0.8, indices=extra)
    out = fill_run(
        tiny["ckpt"],
        path,
        tiny["eeg"],
        cens,
        tmp_path / "out.dtseries.nii",
        num_inference_steps=2,
        stride=2,
        progress=False,
        method="interrecon",
    )
    b = np.asarray(nib.load(out).dataobj)
    assert np.isfinite(b).all()
    modelled = np.isin(extra, TINY_INDICES)
    lin = linear_fill(torch.from_numpy(np.nan_to_num(data))[None], torch.from_numpy(~cens)[None])[0].numpy()
    np.testing.assert_array_equal(b[cens][:, ~modelled], lin[cens][:, ~modelled])
    assert not np.allclose(b[cens][:, modelled], lin[cens][:, modelled])
    note = json.loads(nib.load(out).header.matrix.metadata["eeg2fmri_fill"])
    assert note["grayordinates_linear"] == int((~modelled).sum()) and "linear interpolation" in note["linear_note"]


def test_cli_fill_with_bare_overwrite_flag(tiny, tmp_path, capsys):
    out = tmp_path / "cli.dtseries.nii"
    args = [
        "fill",
        "--fmri",
        str(tiny["fmri"]),
        "--censor",
        str(tiny["censor"]),
        "--out",
        str(out),
        "--method",
        "linear",
    ]
    main(args)
    assert f"fill: {len(CENSORED)} censored frames of {T} filled with linear" in capsys.readouterr().out
    assert "--overwrite" in cli_error(capsys, args)
    main([*args, "--overwrite"])
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["fill", "--help"])
    help_text = capsys.readouterr().out
    assert "--censor_keep_is_one" in help_text and "frames" in help_text and "TR" in help_text


def test_eeg_windows_reproduce_the_training_cache(tiny):
    """fill processes a run's EEG from the checkpoint alone exactly as prepare did for training."""
    import h5py

    from eeg2fmri.fill import run_eeg_windows

    prep = torch.load(tiny["ckpt"], map_location="cpu", weights_only=False)["eeg2fmri_data"]
    with h5py.File(tiny["cache"]) as h5:
        rows = np.flatnonzero(h5["frame_run"][:] == 1)
        volumes, cached = h5["frame_volume"][rows], h5["eeg"][rows].astype(np.float32)
    got = run_eeg_windows(tiny["eeg"], prep, T, volumes)  # (F, C, W)
    assert got.shape == cached.shape
    np.testing.assert_allclose(got, cached, rtol=0, atol=1e-3)  # the cache is float16


# ------------------------------------------------------------------------------------------------
# Windows
# ------------------------------------------------------------------------------------------------


def test_plan_windows_cover_every_censored_frame_or_fail():
    for stride in (1, 2, 3, 7):
        cens = _mask(CENSORED)
        starts = plan_windows(cens, K, stride)
        frames = starts[:, None] + np.arange(K)
        assert all(cens[f].any() and (~cens[f]).any() for f in frames)  # every window fills and is anchored
        assert set(np.flatnonzero(cens)) <= set(frames.ravel().tolist())
    plan_windows(_mask(range(20, 20 + 2 * K - 2)), K)  # 2K - 2 consecutive censored frames: anchored
    with pytest.raises(FillError, match=r"frame\(s\) 23 cannot be anchored.*K = 4"):
        plan_windows(_mask(range(20, 20 + 2 * K - 1)), K)  # 2K - 1: the middle frame has no anchor
    with pytest.raises(FillError, match=r"frame\(s\) 0 cannot"):
        plan_windows(_mask(range(0, K)), K)  # at the run's start only later anchors exist
    with pytest.raises(FillError, match="too short"):
        plan_windows(_mask([1], n=3), K)


# ------------------------------------------------------------------------------------------------
# Censor files
# ------------------------------------------------------------------------------------------------

FMRIPREP = "framewise_displacement\ttrans_x\tmotion_outlier00\tmotion_outlier01\n" + "".join(
    f"{'n/a' if i == 0 else '0.1'}\t0.0\t{int(i == 3)}\t{int(i == 7)}\n" for i in range(10)
)


@pytest.mark.parametrize(
    "name, text, keep_is_one",
    [
        ("confounds.tsv", FMRIPREP, False),  # fMRIPrep: union of the one-hot motion_outlier columns
        ("outliers.csv", "outlier,fd\n" + "".join(f"{int(i in (3, 7))},0.2\n" for i in range(10)), False),
        ("censor.tsv", "censored\n" + "".join(f"{int(i in (3, 7))}\n" for i in range(10)), False),
        ("mask.1D", "".join(f"{int(i in (3, 7))}\n" for i in range(10)), False),  # headerless 0/1
        ("afni.1D", "".join(f"{int(i not in (3, 7))}\n" for i in range(10)), True),  # AFNI: 1 = keep
        ("frames.txt", "3\n7\n", False),  # 0-based indices, one per line
        ("frames_row.txt", "7, 3, 3\n", False),  # or on one line
    ],
)
def test_censor_formats(tmp_path, name, text, keep_is_one):
    path = tmp_path / name
    path.write_text(text)
    np.testing.assert_array_equal(read_censor(path, 10, keep_is_one=keep_is_one), _mask([3, 7], n=10))


@pytest.mark.parametrize(
    "text, keep_is_one, match",
    [
        (
            "censored\n0\n1\n",
            False,
            r"bad\.tsv: 2 rows \(after the header\); expected one per frame of the fMRI run \(10 frames\)",
        ),
        ("0\n1\n0\n", False, r"bad\.tsv: 3 rows of 0/1; expected one per frame of the fMRI run \(10 frames\)"),
        (
            "framewise_displacement\n" + "0.1\n" * 10,
            False,
            r"found columns framewise_displacement; expected motion_outlier.*`framewise_displacement` holds motion values",
        ),
        ("3\n12\n", False, r"frame index 12; expected 0-based frame indices in 0\.\.9"),
        ("censored\n" + "2\n" * 10, False, r"row 2, column censored: '2'; expected 0 or 1"),
        ("censored\n" + "0\n" * 10, True, "censor_keep_is_one applies only to a headerless 0/1 column"),
        ("1 0\n0 1\n", False, "expected one column"),
    ],
)
def test_bad_censor_files(tmp_path, text, keep_is_one, match):
    path = tmp_path / "bad.tsv"
    path.write_text(text)
    with pytest.raises(CensorError, match=match):
        read_censor(path, 10, keep_is_one=keep_is_one)


# ------------------------------------------------------------------------------------------------
# Bad inputs: a clear error, and the inputs untouched
# ------------------------------------------------------------------------------------------------


def _copy_eeg(tiny, tmp_path, n_samples=None, n_onsets=None) -> Path:
    data = np.load(tiny["eeg"])
    meta = json.loads(tiny["eeg"].with_suffix(".json").read_text())
    if n_samples is not None:
        data = data[:, :n_samples]
    if n_onsets is not None:
        meta["volume_onsets"] = meta["volume_onsets"][:n_onsets]
    path = tmp_path / "short_eeg.npy"
    np.save(path, data)
    path.with_suffix(".json").write_text(json.dumps(meta))
    return path


def test_bad_inputs_are_refused_and_inputs_unchanged(tiny, tmp_path, monkeypatch):
    args = dict(
        ckpt_path=tiny["ckpt"],
        fmri=tiny["fmri"],
        eeg=tiny["eeg"],
        censor=tiny["censor"],
        method="interrecon",
        num_inference_steps=2,
        progress=False,
    )
    out = tmp_path / "out.dtseries.nii"
    short = _copy_eeg(tiny, tmp_path, n_samples=40_000)
    few = tmp_path / "few"
    few.mkdir()
    few_triggers = _copy_eeg(tiny, few, n_onsets=50)
    other = write_dtseries(
        tmp_path / "other.dtseries.nii", np.ones((T, 305), np.float32), 0.8, indices=np.arange(0, 91_282, 300)
    )
    wrong_len = write_censor(tmp_path / "wrong.tsv", np.zeros(T - 3, bool))
    too_long = write_censor(tmp_path / "long.tsv", _mask(range(30, 30 + 2 * K - 1)))
    all_cens = write_censor(tmp_path / "all.tsv", np.ones(T, bool))
    inputs = [tiny["raw"], tiny["ckpt"], tiny["censor"], short, few_triggers, other, wrong_len, too_long, all_cens]
    before = _hashes(*inputs)

    with pytest.raises(CensorError, match=rf"wrong\.tsv: {T - 3} rows .*\({T} frames\)"):
        fill_run(**{**args, "censor": wrong_len}, out=out)
    with pytest.raises(FillError, match=r"frame\(s\) 33 cannot be anchored.*K = 4 frames"):
        fill_run(**{**args, "censor": too_long}, out=out)
    with pytest.raises(FillError, match=f"all {T} frames .* are censored"):
        fill_run(**{**args, "censor": all_cens}, out=out)
    with pytest.raises(FillError, match="num_samples=0: expected a positive number of InterRecon samples"):
        fill_run(**args, out=out, num_samples=0)
    with pytest.raises(
        RawDataError, match=r"short_eeg\.npy: EEG has 40000 samples .* the EEG is shorter than the fMRI"
    ):
        fill_run(**{**args, "eeg": short}, out=out)
    with pytest.raises(
        RawDataError, match=r"50 fMRI volume triggers but the fMRI run has 90 frames: the EEG is shorter"
    ):
        fill_run(**{**args, "eeg": few_triggers}, out=out)
    with pytest.raises(
        CiftiError,
        match=r"other\.dtseries\.nii: has 305 grayordinates but the checkpoint .* models 457, of which \d+ are not in the file",
    ):
        fill_run(**{**args, "fmri": other, "censor": _mask(CENSORED)}, out=out)
    with pytest.raises(FillError, match="is an input of this fill"):
        fill_run(**args, out=tiny["fmri"], overwrite=True)
    with pytest.raises(FillError, match="needs --ckpt_path"):
        fill_run(**{**args, "ckpt_path": None}, out=out)
    assert not out.exists()

    # an existing output is refused unless overwrite
    out.write_bytes(b"keep me")
    with pytest.raises(FileExistsError, match=r"out\.dtseries\.nii: exists; .*--overwrite"):
        fill_run(**{**args, "method": "linear"}, out=out)
    assert out.read_bytes() == b"keep me"
    fill_run(**{**args, "method": "linear"}, out=out, overwrite=True)
    assert nib.load(out).shape == (T, len(TINY_INDICES))

    # an unwritable output folder is found before anything is read or computed
    import eeg2fmri.fill as F

    def boom(*a, **k):
        raise AssertionError("computation started before the output folder was checked")

    monkeypatch.setattr(F, "load_header", boom)
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file")
    with pytest.raises(PermissionError, match=r"not_a_folder/sub: output folder is not writable"):
        fill_run(**args, out=blocker / "sub" / "filled.dtseries.nii")
    monkeypatch.undo()

    # uncensored frames must be finite
    nan_run = np.asarray(nib.load(tiny["fmri"]).dataobj).copy()
    nan_run[20, 5] = np.nan
    nan_path = write_dtseries(tmp_path / "nan.dtseries.nii", nan_run, 0.8, indices=TINY_INDICES)
    with pytest.raises(FillError, match=r"nan\.dtseries\.nii: uncensored frame\(s\) 20 hold NaN/Inf"):
        fill_run(**{**args, "fmri": nan_path, "method": "linear"}, out=tmp_path / "x.dtseries.nii")

    assert _hashes(*inputs) == before, "an input file was modified by a failed fill"


# ------------------------------------------------------------------------------------------------
# make reproduce-fill, at a tiny size
# ------------------------------------------------------------------------------------------------


def test_fill_study_tiny(tmp_path, monkeypatch):
    import csv

    from eeg2fmri.experiments import fill_study as F
    from eeg2fmri.experiments.scales import SCALES, Scale

    model = dict(latent_dim=16, eeg_embed_dim=16, eeg_channels=8, eeg_blocks=2, hidden_size=32, depth=1, num_heads=2)
    tiny_scale = Scale(
        simulate="ci",
        grayordinates="every:200",
        ks=(10,),
        epochs={"diffusion": 1},
        model={"diffusion": model},
        extra=[
            "--data.batch_size",
            "16",
            "--evaluator.num_inference_steps",
            "2",
            "--evaluator.every_n_epochs",
            "1000",
            "--trainer.num_sanity_val_steps",
            "0",
            "--evaluator.identification",
            "false",
        ],
    )
    monkeypatch.setitem(SCALES, "tiny", tiny_scale)
    kw = dict(raw=str(tmp_path / "raw"), prepared=str(tmp_path / "prep"), results=str(tmp_path / "res"))
    md = F.fill_study("tiny", [1], rates=[0.05, 0.2], **kw)
    out = tmp_path / "res" / "tiny"
    rows = list(csv.DictReader(open(out / "fill.csv")))
    # 2 rates x (4 fill methods + the EEG-only FIR ridge, each x {real, noise-free}, + the ceiling)
    assert len(rows) == 2 * 11 and (out / "fill.png").stat().st_size > 10_000
    assert {r["method"] for r in rows} == {
        "InterRecon",
        "Gaussian conditional + EEG μ",
        "Linear",
        "Cubic spline",
        "FIR ridge (EEG only)",
        "Noise ceiling",
    }
    assert all(np.isfinite(float(r["whole/r"])) for r in rows)
    assert "| 20% | InterRecon | real |" in md.read_text()
    assert "| 20% | Gaussian conditional + EEG μ | noise-free |" in md.read_text()
    # censoring: only inside test clips, in bursts of 1-5 frames, at the asked rate, and what was filled
    segs = F._test_segments(tmp_path / "prep" / "tiny" / "sub_0001.h5")
    for rate in (0.05, 0.2):
        for run, s in segs.items():
            folder = out / "fill" / "sub1" / f"censor{round(rate * 100):02d}"
            cens = read_censor(folder / f"run-{run}_censor.tsv", 187)
            test = np.zeros(187, bool)
            test[np.concatenate(s)] = True
            assert not (cens & ~test).any() and cens.sum() == max(1, round(rate * test.sum()))
            bursts = np.diff(np.flatnonzero(np.diff(np.concatenate([[0], cens.astype(int), [0]]))))[::2]
            assert bursts.max() <= 5
            note = json.loads(
                nib.load(folder / f"run-{run}_interrecon.dtseries.nii").header.matrix.metadata["eeg2fmri_fill"]
            )
            assert note["censored_frames"] == np.flatnonzero(cens).tolist() and note["n_frames_window"] == 10
            assert (note["start"], note["num_samples"]) == ("zero", 1)  # `fill`'s default InterRecon estimate
            # a finished fill is reused only if it is that estimate
            path, ckpt = (
                folder / f"run-{run}_interrecon.dtseries.nii",
                out / "cells" / "sub1" / "K10" / "diffusion" / "checkpoints" / "last.ckpt",
            )
            assert F._fill_done(path, cens, ckpt, interrecon=True)
            assert not F._fill_done(path, np.roll(cens, 1), ckpt, interrecon=True)


# ------------------------------------------------------------------------------------------------
# The fill in the run's units, and moving with its anchors
# ------------------------------------------------------------------------------------------------

GAP = [10, 11, 12]  # a burst of CENSORED
AROUND_GAP = [7, 8, 9, 13, 14, 15]  # every uncensored frame of the K = 4 windows that fill it


@pytest.fixture(scope="module")
def bold_scale(tiny):
    """The tiny run re-expressed on a BOLD-like scale: each grayordinate's uncensored frames given
    mean M (800-1200) and std S (50-500, log-uniform), the run's own z-scores unchanged. Returns
    (path, z-scores (T, V) float64, M (V,), S (V,))."""
    a = np.asarray(nib.load(tiny["fmri"]).dataobj, np.float64)  # (T, V)
    cens = _mask(CENSORED)
    z = (a - a[~cens].mean(0)) / a[~cens].std(0)  # (T, V)
    rng = np.random.default_rng(7)
    M = rng.uniform(800, 1200, a.shape[1])  # (V,)
    S = np.exp(rng.uniform(np.log(50), np.log(500), a.shape[1]))  # (V,)
    path = write_dtseries(tiny["root"] / "bold_scale" / "run.dtseries.nii", z * S + M, 0.8, indices=TINY_INDICES)
    return path, z, M, S


def test_interrecon_fills_in_the_runs_units(tiny, filled, bold_scale):
    """A run with per-grayordinate std 50-500 and mean ~1000: fill z-scores it with its own uncensored
    frames and maps the fills back (z · std + mean), so its fills are the std-1 run's fills in the
    run's units, grayordinate by grayordinate, and its uncensored frames are the input's bytes."""
    path, z, M, S = bold_scale
    before = _hashes(path)
    out = fill_run(
        tiny["ckpt"],
        path,
        tiny["eeg"],
        tiny["censor"],
        path.with_name("filled.dtseries.nii"),
        num_inference_steps=4,
        progress=False,
        method="interrecon",
    )  # the settings of the `filled` fixture
    assert _hashes(path) == before
    src, b = np.asarray(nib.load(path).dataobj), np.asarray(nib.load(out).dataobj)
    cens = _mask(CENSORED)
    assert src[~cens].tobytes() == b[~cens].tobytes()
    a = np.asarray(nib.load(tiny["fmri"]).dataobj, np.float64)  # the std-1 run and its fill
    fa = np.asarray(nib.load(filled).dataobj, np.float64)
    z_fill_a = (fa[cens] - a[~cens].mean(0)) / a[~cens].std(0)  # (n_censored, V) the fill in z-scores
    z_fill_b = (b[cens] - M) / S
    np.testing.assert_allclose(z_fill_b, z_fill_a, rtol=0, atol=1e-3)
    # on the run's scale: each grayordinate's filled frames spread like its uncensored frames, around M
    spread = np.sqrt(((b[cens] - M) ** 2).mean(0)) / S  # (V,)
    assert 0.1 < np.median(spread) < 10, np.median(spread)
    assert (np.abs(b[cens].mean(0) - M) < 3 * S).all()


def _gaussian_residual_prior(monkeypatch, rho: float = 0.95) -> None:
    """Every EEG2fMRIDiffusion loaded from now on denoises with the exact ε of a Gaussian residual
    prior (AR(1) rho across the window's frames, independent latent dims): a prior that couples the
    frames as BOLD does, in place of the tiny checkpoint's barely trained DiT."""
    from eeg2fmri.module import EEG2fMRIDiffusion
    from tests.test_interrecon import ar1_covariance, gaussian_eps

    fns: dict[tuple, object] = {}

    def eps(self, x_t, t, h, drop=None, eeg_mask=None, mu=None):
        key = tuple(x_t.shape[1:])
        if key not in fns:
            fns[key] = gaussian_eps(ar1_covariance(key[0], rho, torch.eye(key[1])), self.alphas_cumprod.cpu())
        return fns[key](x_t, t)

    monkeypatch.setattr(EEG2fMRIDiffusion, "_eps", eps)
    load = EEG2fMRIDiffusion.on_load_checkpoint

    def unbounded(self, checkpoint):  # the x̂₀ bound is the trained DiT's range, not this prior's
        load(self, checkpoint)
        self.x0_bound = None

    monkeypatch.setattr(EEG2fMRIDiffusion, "on_load_checkpoint", unbounded)


@pytest.mark.parametrize("method", ["linear", "interrecon"])
def test_fill_moves_with_its_anchors(tiny, bold_scale, tmp_path, monkeypatch, method):
    """The same run filled twice, the second time with the uncensored frames around a gap raised by
    c = 1 of the run's z-scores along a pattern u the model's latents can hold (its first decoded
    latent dim): linear interpolation's fill of the gap rises by exactly c · u · std, InterRecon's
    (same seed, a prior that couples frames) by most of it, in the same direction."""
    from eeg2fmri.fill import load_model

    path, z, M, S = bold_scale
    model, _ = load_model(tiny["ckpt"])
    u = model.autoencoder.decoder.weight[:, 0].detach().double().numpy()  # (V,) in z-scores
    u /= np.sqrt((u**2).mean())
    c = 1.0
    raised = np.asarray(nib.load(path).dataobj, np.float64)  # (T, V)
    raised[AROUND_GAP] += c * u * S
    raised_path = write_dtseries(tmp_path / "raised.dtseries.nii", raised, 0.8, indices=TINY_INDICES)
    if method == "interrecon":
        _gaussian_residual_prior(monkeypatch)
    fills = [
        np.asarray(
            nib.load(
                fill_run(
                    tiny["ckpt"] if method == "interrecon" else None,
                    p,
                    tiny["eeg"] if method == "interrecon" else None,
                    tiny["censor"],
                    tmp_path / f"{method}_{i}.dtseries.nii",
                    method=method,
                    num_inference_steps=100,
                    progress=False,
                )
            ).dataobj,
            np.float64,
        )
        for i, p in enumerate([path, raised_path])
    ]
    move = (fills[1][GAP] - fills[0][GAP]) / S  # (3, V) in the run's z-scores
    if method == "linear":
        np.testing.assert_allclose(move, np.broadcast_to(c * u, move.shape), rtol=0, atol=1e-4)
        return
    along = move @ u / (u @ u)  # (3,) the move of each gap frame along u
    assert (along > 0.5 * c).all() and (along < 1.2 * c).all(), along


# ------------------------------------------------------------------------------------------------
# Censor masks that do not fit the run or leave nothing to anchor: one line, inputs untouched
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["linear", "interrecon"])
@pytest.mark.parametrize(
    "name, text, keep_is_one, expected",
    [
        (
            "long.txt",
            "0\n" * (T + 2),
            False,
            rf"{T + 2} rows of 0/1; expected one per frame of the fMRI run \({T} frames\)",
        ),
        (
            "short.txt",
            "0\n" * (T - 2),
            False,
            rf"{T - 2} rows of 0/1; expected one per frame of the fMRI run \({T} frames\)",
        ),
        (
            "long.tsv",
            "censored\n" + "0\n" * (T + 1),
            False,
            rf"{T + 1} rows \(after the header\); expected one per frame",
        ),
        ("beyond.txt", f"3\n{T}\n", False, rf"frame index {T}; expected 0-based frame indices in 0\.\.{T - 1}"),
        ("all.tsv", "censored\n" + "1\n" * T, False, rf"all {T} frames of .* are censored; nothing to anchor a fill"),
        ("all_afni.1D", "0\n" * T, True, rf"all {T} frames of .* are censored; nothing to anchor a fill"),
        ("all_frames.txt", " ".join(map(str, range(T))), False, rf"all {T} frames of .* are censored"),
        (
            "burst.tsv",
            "censored\n" + "".join(f"{int(30 <= i < 30 + 2 * K - 1)}\n" for i in range(T)),
            False,
            r"censored frame\(s\) 33 cannot be anchored: InterRecon needs an uncensored frame within K - 1 = 3 "
            r"frames.*--method linear or cubic",
        ),
    ],
)
def test_cli_refuses_censor_masks_that_do_not_fit_the_run(
    tiny, tmp_path, capsys, method, name, text, keep_is_one, expected
):
    """Each bad censor file is refused by `eeg2fmri fill` with one line naming it (or, for a burst no
    window can anchor, the frames and the --method to use) and what was expected; no output, the
    inputs untouched. A burst too long for InterRecon's windows is fine for linear interpolation."""
    censor = tmp_path / name
    censor.write_text(text)
    out = tmp_path / "out.dtseries.nii"
    args = ["fill", "--fmri", str(tiny["fmri"]), "--censor", str(censor), "--out", str(out), "--method", method]
    if method == "interrecon":
        args += ["--ckpt_path", str(tiny["ckpt"]), "--eeg", str(tiny["eeg"]), "--num_inference_steps", "2"]
    if keep_is_one:
        args += ["--censor_keep_is_one", "true"]
    before = _hashes(tiny["raw"], tiny["ckpt"], censor)
    if name == "burst.tsv" and method == "linear":
        main(args)
        assert nib.load(out).shape == (T, len(TINY_INDICES))
    else:
        line = cli_error(capsys, args)
        assert re.search(expected, line), line
        assert name in line or name == "burst.tsv"
        assert not out.exists()
    assert _hashes(tiny["raw"], tiny["ckpt"], censor) == before


@pytest.mark.parametrize("n", [T - 3, T + 3])
def test_a_censor_array_of_another_length_is_refused(tiny, tmp_path, n):
    with pytest.raises(FillError, match=rf"censor mask: bool \({n},\); expected bool \({T},\) for .*\.dtseries\.nii"):
        fill_run(None, tiny["fmri"], None, np.zeros(n, bool), tmp_path / "out.dtseries.nii", method="linear")
