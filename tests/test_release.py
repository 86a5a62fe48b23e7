"""The CineBrain release as published: a tiny release written here by hand (hyphenated subject folder,
a tar of per-frame .npy windows with an extra ECG row, one behaviour row per run, subcortical
voxels in fMRIPrep <= 23.1's row-major order), imported and prepared; every bad input refused."""

import io
import json
import logging
import shutil
import subprocess
import tarfile
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest

from eeg2fmri.cli import main
from eeg2fmri.data.cifti import (
    fmriprep_row_major_order,
    is_fmriprep_row_major,
    standard_indices,
    subset_brain_models,
    write_dtseries,
)
from eeg2fmri.data.cinebrain import RawDataError, discover_runs
from eeg2fmri.data.prepare import PrepareOptions, prepare
from eeg2fmri.data.release import import_cinebrain
from tests.conftest import TINY_INDICES, TR, wb_command

N_VOLUMES = 90
SEGMENTS = {1: (6.0, 55.0), 2: (7.3, 52.9)}  # videoStartTime, videoStopTime of each run's first row
TASK = "movie"


def authors(start, stop):
    """The authors' frames, computed here as their dtseries2npy.py slices the run (volumes
    int((start + 4) / 0.8) + 1 ... int((stop + 4) / 0.8), 0-based)."""
    lo, hi = int((start + 4) / 0.8) + 1, int((stop + 4) / 0.8) + 1
    return np.arange(N_VOLUMES)[lo:hi]


def make_release(
    root: Path, packed: bool = True, seed: int = 0, member=lambda r, i: f"sub-0001/run-{r}/frame_{i:04d}.npy"
):
    """A release subject: returns (folder, {run: standard-order BOLD (T, V)}, {run: windows (n, 65, 800)})."""
    rng = np.random.default_rng(seed)
    folder = root / "sub-0001"
    bm = subset_brain_models(TINY_INDICES)
    perm = fmriprep_row_major_order(bm)  # the file's columns: old fMRIPrep order
    assert not np.array_equal(perm, np.arange(len(perm)))
    bold, windows = {}, {}
    for r, (start, stop) in SEGMENTS.items():
        x = (
            1000 + (TINY_INDICES % 997)[None, :] + rng.standard_normal((N_VOLUMES, len(TINY_INDICES)))
        )  # (T, V) standard order
        bold[r] = x.astype(np.float32)
        write_dtseries(
            folder / "dtseries" / f"sub-0001_task-{TASK}_run-{r}_space-fsLR_den-91k_bold.dtseries.nii",
            bold[r][:, perm],
            TR,
            brain_models=bm[perm],
        )
        (folder / "beh_data").mkdir(parents=True, exist_ok=True)
        # the authors read the first row only: a second row (here not even a valid one) is not read
        (folder / "beh_data" / f"sub_0001_{r}.csv").write_text(
            f"videoStartTime,videoStopTime,trial\n{start},{stop},1\n,,2\n"
        )
        n = len(authors(start, stop))
        w = (20 * rng.standard_normal((n, 65, 800))).astype(np.float32)
        w[:, 64] = 1000.0 * np.sin(np.arange(800) / 50.0)  # row 65: ECG-like, far larger than EEG
        windows[r] = w
    names = {member(r, i): windows[r][i] for r in windows for i in range(len(windows[r]))}
    if packed:
        with tarfile.open(folder / "EEG_preprocessed_data.tar", "w") as tar:
            for name, w in names.items():
                buf = io.BytesIO()
                np.save(buf, w)
                info = tarfile.TarInfo(name)
                info.size = buf.tell()
                buf.seek(0)
                tar.addfile(info, buf)
    else:
        for name, w in names.items():
            p = folder / "EEG_preprocessed_data" / name
            p.parent.mkdir(parents=True, exist_ok=True)
            np.save(p, w)
    return folder, bold, windows


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    root = tmp_path_factory.mktemp("release")
    folder, bold, windows = make_release(root / "release")
    records = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logging.getLogger("eeg2fmri").addHandler(handler)
    try:
        (sub,) = import_cinebrain(str(root / "release"), [1], str(root / "raw"))
        cache = prepare(sub, root / "prep", PrepareOptions(normalize="all", split="tail"), progress=False)
    finally:
        logging.getLogger("eeg2fmri").removeHandler(handler)
    return dict(
        root=root,
        folder=folder,
        bold=bold,
        windows=windows,
        sub=sub,
        cache=cache,
        log=[r.getMessage() for r in records if r.levelno >= logging.WARNING],
    )


def test_frame_i_holds_window_i_of_volume_int_start_plus_4(imported):
    with h5py.File(imported["cache"]) as h5:
        run, vol, eeg = h5["frame_run"][:], h5["frame_volume"][:], h5["eeg"][:].astype(np.float32)
        assert h5["eeg"].shape[1:] == (64, 800)  # the ECG row is dropped
        assert np.all(h5["eeg_scale"][:] < 200)  # (a 1000-unit ECG row among them would show)
        assert json.loads(h5.attrs["options"])["normalize"] == "all" and h5.attrs["split"] == "tail"
    for r, (start, stop) in SEGMENTS.items():
        np.testing.assert_array_equal(vol[run == r], authors(start, stop))  # volume int((start+4)/0.8)+1+i
        raw = imported["windows"][r][:, :64].reshape(len(vol[run == r]), -1)  # (n, 64*800) as released
        got = eeg[run == r].reshape(len(raw), -1)  # (n, 64*800) after the project's filtering
        raw = (raw - raw.mean(1, keepdims=True)) / raw.std(1, keepdims=True)
        got = (got - got.mean(1, keepdims=True)) / got.std(1, keepdims=True)
        corr = got @ raw.T / raw.shape[1]  # (n, n) cache frame x released window
        np.testing.assert_array_equal(corr.argmax(1), np.arange(len(raw)))  # frame i holds window i
        assert np.diag(corr).min() > 0.1 and np.abs(corr - np.diag(np.diag(corr))).max() < 0.05


def test_reordered_columns_map_to_their_grayordinates(imported):
    """The cache's columns are standard grayordinates: its all-frames mean and std (ddof 1) of each
    column equal those of that grayordinate in the standard-order BOLD written above."""
    with h5py.File(imported["cache"]) as h5:
        np.testing.assert_array_equal(h5["indices"][:], TINY_INDICES)
        mean, std, run, vol = h5["fmri_mean"][:], h5["fmri_std"][:], h5["frame_run"][:], h5["frame_volume"][:]
        order = h5["run_file_indices"][0]
    kept = np.concatenate([imported["bold"][r][vol[run == r]] for r in SEGMENTS]).astype(np.float64)  # (T, V)
    np.testing.assert_allclose(mean, kept.mean(0), rtol=1e-6)
    np.testing.assert_allclose(std, kept.std(0, ddof=1), rtol=1e-4)
    fmri = next((imported["folder"] / "dtseries").glob("*run-1_*"))
    np.testing.assert_array_equal(order, standard_indices(nib.load(fmri).header.get_axis(1)))
    assert is_fmriprep_row_major(nib.load(fmri).header.get_axis(1), order)
    # one warning per file, naming it and what was done
    for r in SEGMENTS:
        name = f"sub-0001_task-{TASK}_run-{r}_space-fsLR_den-91k_bold.dtseries.nii"
        said = [m for m in imported["log"] if name in m and "row-major" in m]
        assert len(said) == 1 and "nipreps/niworkflows#814" in said[0] and "read by grayordinate" in said[0]


def test_imported_layout_and_provenance(imported):
    sub = imported["sub"]
    assert sub.name == "sub_0001"
    runs = discover_runs(sub)
    assert [r.task for r in runs] == [TASK, TASK] and [len(r.clips) for r in runs] == [1, 1]  # the first row only
    assert (
        runs[0].fmri.is_symlink()
        and runs[0].fmri.resolve() == next((imported["folder"] / "dtseries").glob("*run-1_*")).resolve()
    )
    meta = json.loads(runs[1].eeg.with_suffix(".json").read_text())
    assert (
        meta["window_volumes"] == authors(*SEGMENTS[2]).tolist()
        and meta["shift_s"] == 4.0
        and len(meta["ch_names"]) == 64
    )
    info = json.loads((sub / "import.json").read_text())
    assert info["options"]["ch_names_assumed"] is True and [r["n_kept"] for r in info["runs"]] == [
        len(authors(*SEGMENTS[r])) for r in SEGMENTS
    ]
    # the same import again is a no-op; the unpacked folder form gives the same windows
    stamp = runs[1].eeg.stat().st_mtime_ns
    import_cinebrain(str(imported["root"] / "release"), [1], str(imported["root"] / "raw"))
    assert runs[1].eeg.stat().st_mtime_ns == stamp


def test_unpacked_folder_and_global_numbering_read_the_same_windows(imported, tmp_path):
    """The windows unpacked into a folder and numbered across the recording (no run in the path):
    --eeg_pattern with only a frame group gives each run its frames in order."""
    counts = {r: len(authors(*SEGMENTS[r])) for r in SEGMENTS}
    offset = {1: 0, 2: counts[1]}
    make_release(tmp_path / "release", packed=False, member=lambda r, i: f"{offset[r] + i}.npy")
    (sub,) = import_cinebrain(
        str(tmp_path / "release"), [1], str(tmp_path / "raw"), eeg_pattern=r"(?P<frame>\d+)\.npy$"
    )
    for a, b in zip(discover_runs(sub), discover_runs(imported["sub"])):
        np.testing.assert_array_equal(np.load(a.eeg), np.load(b.eeg))
    with pytest.raises(RawDataError, match=r"0.npy: no run-<r> / run_<r> part in the path.*--eeg_pattern"):
        import_cinebrain(str(tmp_path / "release"), [1], str(tmp_path / "raw2"))


def test_predict_keeps_the_input_column_order_and_task(imported, tmp_path):
    """fit (the mean-frame floor) and predict on the imported subject: the written file is named for
    the fMRI's task, has the input file's brain models column for column, and each column holds its
    own grayordinate's values; Workbench reads it."""
    cache, run1 = imported["cache"], discover_runs(imported["sub"])[1]
    args = [
        "--config",
        str(Path(__file__).resolve().parents[1] / "configs" / "baselines" / "mean.yaml"),
        "--data.data_path",
        str(cache),
        "--data.n_frames",
        "3",
        "--trainer.default_root_dir",
        str(tmp_path / "run"),
        "--trainer.logger",
        "false",
        "--trainer.enable_progress_bar",
        "false",
    ]
    main(["fit", *args])
    ckpt = next((tmp_path / "run").rglob("last.ckpt"))
    main(["predict", *args, "--ckpt_path", str(ckpt), "--writer.output_dir", str(tmp_path / "pred")])
    (out,) = sorted((tmp_path / "pred").glob("*.dtseries.nii"))  # the tail split's test frames are in run 2
    assert out.name == f"sub-0001_task-{TASK}_run-2_space-fsLR_den-91k_desc-eeg2fmri_bold.dtseries.nii"
    src = nib.load(run1.fmri)
    assert nib.load(out).header.get_axis(1) == src.header.get_axis(1)  # the input's column order
    pred = np.asarray(nib.load(out).dataobj)
    rows = np.isfinite(pred).all(1)
    # the mean frame (all-frames z-scores ~ 0) de-normalised is each grayordinate's mean, ~ 1000 + index % 997
    expect = np.asarray(src.dataobj, np.float64).mean(0)  # (V,) in the file's column order
    assert np.abs(pred[rows] - expect).max() < 1.0
    wb = wb_command()
    info = subprocess.run([wb, "-file-information", str(out)], capture_output=True, text=True, check=True).stdout
    assert f"Number of Rows:                 {len(TINY_INDICES)}" in info


# ------------------------------------------------------------------------------------------------
# Bad input: a clear error naming the file and what was expected; nothing half-written
# ------------------------------------------------------------------------------------------------


def _windows_dir(folder: Path) -> Path:
    return folder / "EEG_preprocessed_data" / "sub-0001"


def _broken(tmp_path, edit):
    folder, _, _ = make_release(tmp_path / "release", packed=False)
    edit(_windows_dir(folder))
    return tmp_path / "release"


@pytest.mark.parametrize(
    "edit, match",
    [
        (
            lambda d: np.save(d / "run-1" / "frame_0004.npy", np.zeros((63, 800), np.float32)),
            r"run-1/frame_0004.npy: window has shape \(63, 800\); expected \(>= 64, 800\)",
        ),
        (
            lambda d: np.save(d / "run-2" / "frame_0004.npy", np.zeros((65, 400), np.float32)),
            r"run-2/frame_0004.npy: window has shape \(65, 400\).*800 samples \(one TR of 0.8 s at 1000 Hz\)",
        ),
        (lambda d: (d / "run-1" / "frame_0005.npy").unlink(), r"run 1: frame index 5 missing"),
        (lambda d: (d / "run-2" / "frame_0000.npy").unlink(), r"run 2: frame index 0 missing.*or first_frame=1"),
        (
            lambda d: shutil.copy(d / "run-1" / "frame_0003.npy", d / "run-1" / "frame_3.npy"),
            r"frame 3 of run 1 appears twice",
        ),
        (lambda d: shutil.rmtree(d / "run-2"), r"no EEG window for run 2 \(fMRI sub-0001_task-movie_run-2"),
        (
            lambda d: shutil.copy(
                d / "run-1" / "frame_0003.npy", d / "run-1" / f"frame_{len(authors(*SEGMENTS[1])):04d}.npy"
            ),
            r"run 1: \d+ EEG windows but the movie segment of sub_0001_1.csv \(6-55 s\) gives \d+ frames \(more windows than frames\)",
        ),
        (lambda d: shutil.copytree(d / "run-1", d / "run-3"), r"a window of run 3, but dtseries/ has no run 3"),
        (
            lambda d: np.save(d / "run-1" / "frame_0002.npy", np.full((65, 800), np.nan, np.float32)),
            r"frame_0002.npy: NaN/Inf at row 0 \(Fp1\), sample 0",
        ),
    ],
)
def test_bad_release_is_refused_and_nothing_is_written(tmp_path, edit, match):
    release = _broken(tmp_path, edit)
    with pytest.raises(RawDataError, match=match):
        import_cinebrain(str(release), [1], str(tmp_path / "raw"))
    assert not (tmp_path / "raw").exists() or list((tmp_path / "raw").iterdir()) == []


def test_drop_unpaired_keeps_the_paired_frames(tmp_path, caplog):
    n = len(authors(*SEGMENTS[1]))
    release = _broken(tmp_path, lambda d: [(d / "run-1" / f"frame_{i:04d}.npy").unlink() for i in range(n - 3, n)])
    with pytest.raises(RawDataError, match=r"fewer windows than frames.*--drop_unpaired true keeps the"):
        import_cinebrain(str(release), [1], str(tmp_path / "raw"))
    with caplog.at_level(logging.WARNING):
        (sub,) = import_cinebrain(str(release), [1], str(tmp_path / "raw"), drop_unpaired=True)
    assert f"keeping the {n - 3} paired frame(s)" in caplog.text
    meta = json.loads(discover_runs(sub)[0].eeg.with_suffix(".json").read_text())
    assert meta["window_volumes"] == authors(*SEGMENTS[1])[: n - 3].tolist()


def test_prepare_on_the_release_folder_says_to_import_it(tmp_path):
    folder, _, _ = make_release(tmp_path / "release")
    with pytest.raises(
        RawDataError, match=r"sub-0001: no eeg/ folder but EEG_preprocessed_data.tar.*eeg2fmri import-cinebrain"
    ):
        prepare(folder, tmp_path / "prep", progress=False)


def test_windowed_eeg_with_another_shift_is_refused(imported, tmp_path):
    with pytest.raises(RawDataError, match=r"paired with their volumes with a 4 s shift.*prepare with --shift_s 4"):
        prepare(imported["sub"], tmp_path / "prep", PrepareOptions(shift_s=5.0, split="tail"), progress=False)
