"""prepare: raw subject folder -> HDF5 cache; alignment, split, statistics, idempotence, bad input."""

import json
import logging
import math
import os
from dataclasses import replace
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest

from eeg2fmri.data.cifti import CiftiError, write_dtseries
from eeg2fmri.data.cinebrain import CHANNELS_64, RawDataError, discover_runs, eeg_stem, fmri_path
from eeg2fmri.data.prepare import PrepareOptions, _plan_run, prepare
from tests.conftest import SFREQ, TINY_INDICES, TR, make_raw_subject


def _eeg(subject_dir: Path, run: int):
    stem = eeg_stem(subject_dir.parent, 1, run)
    npy = stem.with_name(stem.name + ".npy")
    return npy, json.loads(npy.with_suffix(".json").read_text())


def test_cache_contents_split_and_train_statistics(raw_subject, tmp_path):
    p = prepare(raw_subject, tmp_path / "prep", progress=False)
    with h5py.File(p) as h5:
        fmri = h5["fmri"][:].astype(np.float64)
        split, clip = h5["split"][:], h5["frame_clip"][:]
        assert h5["eeg"].shape[1:] == (64, 800) and h5["eeg"].dtype == np.float16
        assert h5["fmri"].shape == (len(split), len(TINY_INDICES)) and h5["fmri"].dtype == np.float16
        np.testing.assert_array_equal(h5["indices"][:], TINY_INDICES)
        eeg = h5["eeg"][:].astype(np.float32)
        assert h5.attrs["tr"] == pytest.approx(TR) and h5.attrs["shift_s"] == 4.0
    # every clip lies in one split; all three splits exist; ~20 % of clips are test
    for c in np.unique(clip):
        assert len(np.unique(split[clip == c])) == 1
    assert set(np.unique(split)) == {0, 1, 2}
    assert len(np.unique(clip[split == 2])) == round(0.2 * len(np.unique(clip)))
    # z-scored with train statistics only: exact on train, not on test
    train = fmri[split == 0]
    np.testing.assert_allclose(train.mean(0), 0, atol=5e-3)
    np.testing.assert_allclose(train.std(0), 1, atol=5e-3)
    assert np.abs(fmri[split == 2].mean(0)).max() > 0.05
    assert eeg.min() >= -1 and eeg.max() <= 1 and np.abs(eeg).mean() > 0.05


def test_frame_pairs_with_eeg_shift_seconds_earlier(raw_subject):
    run = discover_runs(raw_subject)[0]
    opts = PrepareOptions()
    plan = _plan_run(run, opts)
    _, meta = _eeg(raw_subject, 1)
    onsets = np.asarray(meta["volume_onsets"])
    np.testing.assert_array_equal(plan.window_starts, onsets[plan.frames] - int(opts.shift_s * SFREQ))
    # every kept window lies inside its clip (clip times are seconds from the first volume onset)
    for s, c in zip(plan.window_starts, plan.frame_clip):
        clip = run.clips[c]
        assert onsets[0] + clip.start * SFREQ <= s and s + 800 <= onsets[0] + clip.stop * SFREQ
    # with another shift every start moves by exactly that many samples (same frames kept or fewer)
    plan5 = _plan_run(run, replace(opts, shift_s=5.0))
    common = np.intersect1d(plan.frames, plan5.frames)
    np.testing.assert_array_equal(
        plan5.window_starts[np.isin(plan5.frames, common)], plan.window_starts[np.isin(plan.frames, common)] - 1000
    )


def test_eeg_burst_lands_in_the_frame_four_seconds_later(tmp_path):
    subject = make_raw_subject(tmp_path / "raw", n_runs=2)
    npy, meta = _eeg(subject, 1)
    eeg = np.load(npy)
    onsets = np.asarray(meta["volume_onsets"])
    target = 30  # the burst happens during the EEG window of volume 30, i.e. 4 s before it
    start = onsets[target] - 4000 + 200
    eeg[:, start : start + 400] += 500 * np.sin(2 * np.pi * 20 * np.arange(400) / SFREQ)
    np.save(npy, eeg)
    p = prepare(subject, tmp_path / "prep", progress=False)
    with h5py.File(p) as h5:
        run1 = h5["frame_run"][:] == 1
        power = (h5["eeg"][:].astype(np.float32) ** 2).mean(axis=(1, 2))[run1]
        assert h5["frame_volume"][:][run1][np.argmax(power)] == target


def test_idempotent_and_rebuilt_when_an_option_changes(raw_subject, tmp_path):
    p = prepare(raw_subject, tmp_path / "prep", progress=False)
    stamp = p.stat().st_mtime_ns
    assert prepare(raw_subject, tmp_path / "prep", progress=False) == p and p.stat().st_mtime_ns == stamp
    prepare(raw_subject, tmp_path / "prep", options=PrepareOptions(shift_s=5.0), progress=False)
    assert p.stat().st_mtime_ns != stamp
    with h5py.File(p) as h5:
        assert h5.attrs["shift_s"] == 5.0
    # touching an input (new modification time) also rebuilds
    stamp = p.stat().st_mtime_ns
    f = fmri_path(raw_subject.parent, 1, 1)
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 10**9))
    prepare(raw_subject, tmp_path / "prep", options=PrepareOptions(shift_s=5.0), progress=False)
    assert p.stat().st_mtime_ns != stamp


def test_failure_leaves_previous_cache_intact_and_no_temp_file(raw_subject, tmp_path, monkeypatch):
    p = prepare(raw_subject, tmp_path / "prep", progress=False)
    before = p.read_bytes()
    import eeg2fmri.data.prepare as prep

    def boom(*a, **k):
        raise RuntimeError("killed mid-write")

    monkeypatch.setattr(prep, "_filtered_windows", boom)
    with pytest.raises(RuntimeError):
        prepare(raw_subject, tmp_path / "prep", options=PrepareOptions(shift_s=3.0), progress=False)
    assert p.read_bytes() == before
    assert sorted(f.name for f in (tmp_path / "prep").iterdir()) == [p.name]


# ------------------------------------------------------------------------------- bad input


def test_wrong_grayordinates_in_one_run(raw_subject, tmp_path):
    write_dtseries(fmri_path(raw_subject.parent, 1, 2), np.ones((90, 300), np.float32), TR, indices=np.arange(300))
    with pytest.raises(CiftiError, match="run-2.*300 grayordinates.*expected one layout"):
        prepare(raw_subject, tmp_path / "prep", progress=False)


def test_fmri_shorter_than_behaviour_says(raw_subject, tmp_path):
    write_dtseries(
        fmri_path(raw_subject.parent, 1, 2), np.ones((60, len(TINY_INDICES)), np.float32), TR, indices=TINY_INDICES
    )
    with pytest.raises(RawDataError, match=r"run-2.*sub_0001_2.csv plays until 65 s.*ends at 48 s \(60 frames") as e:
        prepare(raw_subject, tmp_path / "prep", progress=False)
    # what is true (no fMRI volume 4 s later), how to proceed, and no guess that the run is truncated
    assert "no fMRI volume 4 s later" in str(e.value) and "--drop_unpaired true" in str(e.value)
    assert "videoStopTime <= 44" in str(e.value) and "truncated" not in str(e.value)


def test_drop_unpaired_keeps_the_paired_frames_with_a_warning(raw_subject, tmp_path, caplog):
    """A movie that runs to the scan's end: with drop_unpaired the frames whose volume would lie past
    the end are dropped (and counted in a warning); every kept frame is a volume the run has."""
    n_volumes = 70
    write_dtseries(
        fmri_path(raw_subject.parent, 1, 2),
        np.ones((n_volumes, len(TINY_INDICES)), np.float32) + np.arange(n_volumes)[:, None],
        TR,
        indices=TINY_INDICES,
    )
    full = prepare(raw_subject, tmp_path / "a", options=PrepareOptions(drop_unpaired=True), progress=False)
    with caplog.at_level(logging.WARNING):
        run = discover_runs(raw_subject)[1]
        plan = _plan_run(run, PrepareOptions(drop_unpaired=True))
    assert "have no fMRI volume 4 s later and are dropped" in caplog.text
    assert plan.frames.max() == n_volumes - 1  # up to the last volume, none beyond
    clip = run.clips[-1]
    last = plan.frames[plan.frame_clip == len(plan.clip_names) - 1]
    # the kept frames of the cut clip are exactly those whose shifted window lies in the clip
    first = math.ceil((clip.start + 4.0) / TR - 1e-9)  # the first volume whose window starts in the clip
    np.testing.assert_array_equal(last, np.arange(first, n_volumes))
    with h5py.File(full) as h5:
        assert h5["frame_volume"][:][h5["frame_run"][:] == 2].max() == n_volumes - 1


def test_eeg_shorter_than_fmri(raw_subject, tmp_path):
    npy, _ = _eeg(raw_subject, 1)
    np.save(npy, np.load(npy)[:, :40_000])
    with pytest.raises(RawDataError, match="EEG is shorter than the fMRI"):
        prepare(raw_subject, tmp_path / "prep", progress=False)


def test_missing_and_extra_channels(raw_subject, tmp_path, caplog):
    npy, meta = _eeg(raw_subject, 1)
    meta["ch_names"] = ["X1"] + meta["ch_names"][1:]
    npy.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(RawDataError, match=r"channel\(s\) \['Fp1'\] missing"):
        prepare(raw_subject, tmp_path / "prep", progress=False)
    # an extra (e.g. ECG) channel is dropped with a warning
    meta["ch_names"] = list(CHANNELS_64) + ["ECG"]
    np.save(npy, np.concatenate([np.load(npy), np.zeros((1, np.load(npy).shape[1]), np.float32) + 1], 0))
    npy.with_suffix(".json").write_text(json.dumps(meta))
    with caplog.at_level(logging.WARNING):
        prepare(raw_subject, tmp_path / "prep", progress=False)
    assert "ignoring 1 channel(s) not in the montage: ['ECG']" in caplog.text


def test_duplicated_channel_names(raw_subject, tmp_path):
    npy, meta = _eeg(raw_subject, 2)
    meta["ch_names"][5] = meta["ch_names"][4]
    npy.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(RawDataError, match=r"run-2_eeg.npy: channel name\(s\) \['Fz'\] appear more than once"):
        prepare(raw_subject, tmp_path / "prep", progress=False)


def test_other_sampling_rate(raw_subject, tmp_path):
    npy, meta = _eeg(raw_subject, 1)
    meta["sfreq"] = 500.0
    npy.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(RawDataError, match="sampling rate 500 Hz; expected 1000 Hz"):
        prepare(raw_subject, tmp_path / "prep", progress=False)


def test_nan_in_eeg(raw_subject, tmp_path):
    npy, _ = _eeg(raw_subject, 2)
    x = np.load(npy)
    x[3, 5000:5010] = np.nan
    np.save(npy, x)
    with pytest.raises(RawDataError, match=r"channel F3 has 10 NaN/Inf samples \(first at sample 5000"):
        prepare(raw_subject, tmp_path / "prep", progress=False)


def test_nan_in_fmri(raw_subject, tmp_path):
    x = np.ones((90, len(TINY_INDICES)), np.float32)
    x[40, 7] = np.nan
    write_dtseries(fmri_path(raw_subject.parent, 1, 1), x, TR, indices=TINY_INDICES)
    with pytest.raises(CiftiError, match="NaN/Inf at volume 40, grayordinate 7"):
        prepare(raw_subject, tmp_path / "prep", progress=False)


def test_flat_channel_is_repaired_with_a_warning(raw_subject, tmp_path, caplog):
    for run in (1, 2):
        npy, _ = _eeg(raw_subject, run)
        x = np.load(npy)
        x[10] = 3.0
        np.save(npy, x)
    with caplog.at_level(logging.WARNING):
        p = prepare(raw_subject, tmp_path / "prep", progress=False)
    assert "flat channel(s) ['FC6'] are set to zero" in caplog.text
    with h5py.File(p) as h5:
        assert not h5["eeg"][:, 10].any() and h5["eeg"][:, 11].any()
        assert json.loads(h5.attrs["flat_channels"]) == ["FC6"]


def test_missing_run_and_missing_eeg(raw_subject, tmp_path):
    make_raw_subject(raw_subject.parent.parent / "raw", n_runs=3)
    fmri_path(raw_subject.parent, 1, 2).unlink()
    with pytest.raises(RawDataError, match=r"run\(s\) \[2\] missing"):
        prepare(raw_subject, tmp_path / "prep", progress=False)
    make_raw_subject(raw_subject.parent.parent / "raw", n_runs=3)
    npy, _ = _eeg(raw_subject, 3)
    npy.unlink()
    with pytest.raises(RawDataError, match="run 3: EEG file missing"):
        prepare(raw_subject, tmp_path / "prep", progress=False)


def test_corrupt_and_truncated_files(raw_subject, tmp_path):
    f = fmri_path(raw_subject.parent, 1, 1)
    raw = f.read_bytes()
    f.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CiftiError, match="run-1.*truncated or corrupt"):
        prepare(raw_subject, tmp_path / "prep", progress=False)
    make_raw_subject(raw_subject.parent.parent / "raw")
    npy, _ = _eeg(raw_subject, 2)
    npy.write_bytes(npy.read_bytes()[:1000])
    with pytest.raises(RawDataError, match="run-2_eeg.npy: cannot be read"):
        prepare(raw_subject, tmp_path / "prep", progress=False)


def test_empty_split(tmp_path):
    subject = make_raw_subject(tmp_path / "raw", n_runs=1, clips_per_run=2)
    with pytest.raises(RawDataError, match="train split would be empty"):
        prepare(subject, tmp_path / "prep", progress=False)


def test_not_enough_disk(raw_subject, tmp_path, monkeypatch):
    import shutil as sh

    monkeypatch.setattr(sh, "disk_usage", lambda p: sh._ntuple_diskusage(10**12, 10**12 - 1000, 1000))
    with pytest.raises(OSError, match=r"needs about .* GiB but only 0.00 GiB is free"):
        prepare(raw_subject, tmp_path / "prep", progress=False)


# ------------------------------------------------------------------------------- the task, sidecars, channels


def test_another_task_round_trips_and_a_truth_of_another_task_warns(tmp_path, caplog):
    """The task comes from the fMRI file: EEG and noise-free BOLD are looked up under it, and the
    cache records it for predict's file names (tests/test_release.py checks predict's output)."""
    subject = make_raw_subject(tmp_path / "raw", task="movie")
    runs = discover_runs(subject)
    assert [r.task for r in runs] == ["movie", "movie"] and "task-movie" in runs[0].eeg.name
    truth = subject / "truth" / "sub-0001_task-shape_run-1_space-fsLR_den-91k_desc-noisefree_bold.dtseries.nii"
    write_dtseries(truth, np.ones((90, len(TINY_INDICES)), np.float32), TR, indices=TINY_INDICES)
    with caplog.at_level(logging.WARNING):
        runs = discover_runs(subject)
    assert runs[0].truth is None and "noise-free BOLD of another task than the fMRI's ('movie')" in caplog.text
    p = prepare(subject, tmp_path / "prep", progress=False)
    with h5py.File(p) as h5:
        assert [t.decode() for t in h5["run_tasks"][:]] == ["movie", "movie"]
    # an EEG named for another task than the fMRI is not silently paired
    eeg = runs[1].eeg
    eeg.rename(eeg.with_name(eeg.name.replace("task-movie", "task-shape")))
    with pytest.raises(
        RawDataError,
        match=r"run 2: EEG file missing.*task-movie_run-2_eeg.*found sub-0001_task-shape_run-2_eeg.npy of another task",
    ):
        discover_runs(subject)


def test_sidecar_unknown_keys_warn_and_onsets_in_seconds_work(raw_subject, tmp_path, caplog):
    ref = prepare(raw_subject, tmp_path / "ref", progress=False)
    for run in (1, 2):  # the same triggers in seconds, plus a key the reader does not know
        npy, meta = _eeg(raw_subject, run)
        meta["volume_onsets_s"] = [v / SFREQ for v in meta.pop("volume_onsets")]
        meta["onsets"] = meta["volume_onsets_s"]
        npy.with_suffix(".json").write_text(json.dumps(meta))
    with caplog.at_level(logging.WARNING):
        got = prepare(raw_subject, tmp_path / "got", progress=False)
    assert (
        "unknown key(s) ['onsets'] ignored (volume onsets go under volume_onsets, in samples, or volume_onsets_s"
        in caplog.text
    )
    with h5py.File(ref) as a, h5py.File(got) as b:
        np.testing.assert_array_equal(a["frame_volume"][:], b["frame_volume"][:])
        np.testing.assert_array_equal(a["eeg"][:], b["eeg"][:])
    # seconds under the samples key are refused, not truncated to sample 0, 1, 2, ...
    npy, meta = _eeg(raw_subject, 1)
    meta["volume_onsets"] = meta.pop("volume_onsets_s")
    npy.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(
        RawDataError,
        match=r"volume_onsets holds \[1.8, 2.6, 3.4\], not whole sample indices; onsets in seconds go under volume_onsets_s",
    ):
        prepare(raw_subject, tmp_path / "bad", progress=False)
    meta["volume_onsets_s"] = [0.0]
    npy.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(RawDataError, match="both volume_onsets .samples. and volume_onsets_s .seconds. are given"):
        prepare(raw_subject, tmp_path / "bad", progress=False)


def test_ch_names_as_a_list_or_a_file_through_the_cli(raw_subject, tmp_path, monkeypatch, capsys):
    from eeg2fmri.cli import main
    from tests.cli_errors import cli_error

    names = [f"E{i + 1}" for i in range(64)]
    for run in (1, 2):
        npy, meta = _eeg(raw_subject, run)
        meta["ch_names"] = names
        npy.with_suffix(".json").write_text(json.dumps(meta))
    # the default montage: none of its names match, said in one line with what was found instead
    msg = cli_error(
        capsys, ["prepare", "--subject_dir", str(raw_subject), "--out_dir", str(tmp_path / "a"), "--progress", "false"]
    )
    assert "none of the 64 expected channel names match; first found: E1, E2, E3, E4, E5, ... (64 channels)" in msg
    assert "--ch_names [Fp1,Fp2,...]" in msg and "montage.txt" in msg and "E60" not in msg and "Oz" not in msg
    # list syntax, in another order (the cache follows --ch_names)
    order = names[::-1]
    main(
        [
            "prepare",
            "--subject_dir",
            str(raw_subject),
            "--out_dir",
            str(tmp_path / "b"),
            "--progress",
            "false",
            "--ch_names",
            "[" + ",".join(order) + "]",
        ]
    )
    with h5py.File(tmp_path / "b" / "sub_0001.h5") as b:
        assert json.loads(b.attrs["ch_names"]) == order
    # a file with one name per line (comments and blank lines skipped) reaches prepare as that list
    f = tmp_path / "montage.txt"
    f.write_text("# my cap\n" + "\n".join(order) + "\n\n")
    seen = {}
    monkeypatch.setattr("eeg2fmri.data.prepare.prepare", lambda d, out, options, **k: seen.setdefault("o", options))
    main(["prepare", "--subject_dir", str(raw_subject), "--ch_names", str(f)])
    assert seen["o"].ch_names == tuple(order)
    msg = cli_error(capsys, ["prepare", "--subject_dir", str(raw_subject), "--ch_names", "nofile.txt"])
    assert "ch_names='nofile.txt': expected a list of channel names" in msg


# ------------------------------------------------------------------------------- the protocol options


def test_normalize_all_split_tail_and_detrend(raw_subject, tmp_path):
    # a linear ramp in every grayordinate of run 2 (scanner drift): detrend=linear removes it
    f = fmri_path(raw_subject.parent, 1, 2)
    x = np.asarray(nib.load(f).dataobj) + 5.0 * np.linspace(-1, 1, 90)[:, None].astype(np.float32)
    write_dtseries(f, x, TR, indices=TINY_INDICES)
    p = prepare(raw_subject, tmp_path / "all", PrepareOptions(normalize="all", split="tail"), progress=False)
    with h5py.File(p) as h5:
        z, split, run = h5["fmri"][:].astype(np.float64), h5["split"][:], h5["frame_run"][:]
        assert "normalize=all: z-score over all frames (ddof 1); split=tail" in h5.attrs["protocol"]
        assert json.loads(h5.attrs["options"])["split"] == "tail"
    # all frames z-scored together, sample std (ddof 1), test frames included
    np.testing.assert_allclose(z.mean(0), 0, atol=5e-3)
    np.testing.assert_allclose(z.std(0, ddof=1), 1, atol=5e-3)
    # tail: the recording's last 20 % of frames is test, the 10 % before it val, in recording order
    n = len(split)
    np.testing.assert_array_equal(
        split, np.r_[np.zeros(n - round(0.2 * n) - round(0.1 * n)), np.ones(round(0.1 * n)), np.full(round(0.2 * n), 2)]
    )
    assert (run[split == 2] == 2).all()
    # the ramp makes run 2's z-scores drift; detrending per run removes it
    ramp = np.linspace(-1, 1, 90)
    with h5py.File(p) as h5:
        vol = h5["frame_volume"][:]
    r2 = run == 2

    def drift(z):
        return abs(np.corrcoef(ramp[vol[r2]], z[r2].mean(1))[0, 1])

    assert drift(z) > 0.9
    q = prepare(raw_subject, tmp_path / "dt", PrepareOptions(detrend="linear"), progress=False)
    with h5py.File(q) as h5:
        assert drift(h5["fmri"][:].astype(np.float64)) < 0.3 and h5.attrs["detrend"] == "linear"


@pytest.mark.parametrize("flat_run", [1, 2])
def test_a_channel_flat_in_one_run_is_zero_in_that_run_only(tmp_path, flat_run, recwarn):
    """A channel flat in one run (a loose electrode) is repaired in that run alone, with its file
    named, and the other runs keep the channel; a flat channel in the first run does not throw off
    the units (no overflow)."""
    import h5py

    from eeg2fmri.data.cinebrain import CHANNELS_64, eeg_stem
    from tests.conftest import make_raw_subject

    raw = make_raw_subject(tmp_path / "raw", n_runs=2)
    npy = eeg_stem(tmp_path / "raw", 1, flat_run).with_suffix(".npy")
    x = np.load(npy)
    ch = CHANNELS_64.index("Cz") if "Cz" in CHANNELS_64 else 5
    x[ch] = 3.0  # flat
    np.save(npy, x)
    cache = prepare(raw, tmp_path / "prep", progress=False)
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)], [str(w.message) for w in recwarn]
    with h5py.File(cache, "r") as h5:
        eeg, run = h5["eeg"][:, ch].astype(np.float32), h5["frame_run"][:]
    runs = np.unique(run)
    flat_frames = run == runs[flat_run - 1]
    assert np.all(eeg[flat_frames] == 0)
    assert np.abs(eeg[~flat_frames]).mean() > 0.05  # the other run keeps the channel
