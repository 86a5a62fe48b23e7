"""The simulator: CineBrain layout, determinism, atomic writes, and physiology that could fail."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import signal

import eeg2fmri.data.simulate as sim_module
from eeg2fmri.data.cifti import N_GRAYORDINATES, read_dtseries
from eeg2fmri.data.cinebrain import CHANNELS_64, discover_runs, read_eeg
from eeg2fmri.data.regions import region_mask
from eeg2fmri.data.simulate import SCALES, canonical_hrf, simulate, source_maps_path, sources_path

EVERY = 40
TR = 0.8


@pytest.fixture(scope="module")
def sub(tmp_path_factory) -> Path:
    """One CI-scale subject (2 runs x 150 s) on every 40th grayordinate."""
    root = tmp_path_factory.mktemp("simulate")
    (subject_dir,) = simulate(
        str(root / "raw"), subjects=[1], scale="ci", grayordinates=f"every:{EVERY}", seed=0, progress=False
    )
    return subject_dir


def _zscore(x: np.ndarray) -> np.ndarray:
    return (x - x.mean(0)) / np.maximum(x.std(0), 1e-9)


@pytest.fixture(scope="module")
def loaded(sub):
    """Every run's noisy / noise-free BOLD (z-scored per run), source drive and activity."""
    info = json.loads((sub / "simulation.json").read_text())
    runs = discover_runs(sub)
    bold, truth, drive = [], [], []
    for run in runs:
        bold.append(_zscore(read_dtseries(run.fmri).data))
        truth.append(_zscore(read_dtseries(run.truth).data))
        drive.append(np.load(sources_path(sub.parent, 1, run.run, "drive")))
    kinds = np.array([s["kind"] for s in info["sources"]])
    maps = np.load(source_maps_path(sub.parent, 1))  # (S, V)
    return dict(
        info=info,
        runs=runs,
        kinds=kinds,
        maps=maps,
        bold=np.concatenate(bold),
        truth=np.concatenate(truth),
        drive=np.concatenate(drive),
        activity=[np.load(sources_path(sub.parent, 1, run.run, "activity")) for run in runs],
    )


# ------------------------------------------------------------------------------------------------
# Layout
# ------------------------------------------------------------------------------------------------


def test_layout_matches_cinebrain(sub):
    runs = discover_runs(sub)
    cfg = SCALES["ci"]
    n_frames = int(cfg["run_seconds"] / TR)
    assert [r.run for r in runs] == list(range(1, cfg["n_runs"] + 1))
    names = [c.name for r in runs for c in r.clips]
    assert len(names) >= 5 and len(set(names)) == len(names)
    indices = np.arange(0, N_GRAYORDINATES, EVERY)
    for run in runs:
        assert run.truth is not None and 2 <= len(run.clips) <= 3
        header = run.beh.read_text().splitlines()[0]
        assert header == "videoStartTime,videoStopTime,clip"
        for a, b in zip(run.clips, run.clips[1:]):
            assert b.start - a.stop >= 5.9  # rests between clips
        # prepare needs the 4 s shift after the last clip inside the run
        assert run.clips[-1].stop + 4.0 <= n_frames * TR
        for path in (run.fmri, run.truth):
            ds = read_dtseries(path)
            assert ds.tr == pytest.approx(TR)
            assert np.array_equal(ds.indices, indices)
            assert ds.data.shape == (n_frames, len(indices)) and ds.data.dtype == np.float32
            assert 5_000 < np.median(ds.data) < 12_000
        eeg = read_eeg(run.eeg)
        assert eeg.ch_names == list(CHANNELS_64) and eeg.sfreq == 1000.0 and eeg.data.dtype == np.float32
        onsets = eeg.volume_onsets
        assert len(onsets) == n_frames and np.all(np.diff(onsets) == 800)
        assert 1500 <= onsets[0] <= 3000  # EEG starts before the first volume
        assert eeg.data.shape == (64, onsets[-1] + 800 + 2000)  # and continues past the last
        assert 5 < np.median(eeg.data.std(axis=1)) < 60  # microvolts
    info = json.loads((sub / "simulation.json").read_text())
    assert info["seed"] == 0 and info["scale"] == "ci" and info["eeg2fmri_version"]
    assert info["params"]["tr"] == TR and 12 <= len(info["sources"]) <= 24
    assert [c["clip"] for r in info["runs"] for c in r["clips"]] == names


def test_grayordinates_all_is_the_full_layout(tmp_path):
    (s,) = simulate(str(tmp_path), grayordinates="all", n_runs=1, run_seconds=20, progress=False)
    (run,) = discover_runs(s)
    for path in (run.fmri, run.truth):
        ds = read_dtseries(path)
        assert ds.data.shape == (25, N_GRAYORDINATES)
        assert np.array_equal(ds.indices, np.arange(N_GRAYORDINATES))
    assert len(run.clips) == 1


def test_grayordinates_region_and_bad_specs(tmp_path):
    (s,) = simulate(str(tmp_path), grayordinates="V1", n_runs=1, run_seconds=15, progress=False)
    ds = read_dtseries(discover_runs(s)[0].fmri)
    assert np.array_equal(ds.indices, np.flatnonzero(region_mask("V1")))
    for bad in ("every:0", "every:x", "nowhere"):
        with pytest.raises(ValueError):
            simulate(str(tmp_path / bad.replace(":", "_")), grayordinates=bad, n_runs=1, run_seconds=15, progress=False)


# ------------------------------------------------------------------------------------------------
# Determinism, overwrite, atomicity
# ------------------------------------------------------------------------------------------------


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_or_subject_differs(tmp_path):
    kw = dict(grayordinates="every:97", n_runs=1, run_seconds=30, progress=False)
    (a,) = simulate(str(tmp_path / "a"), seed=3, **kw)
    (b,) = simulate(str(tmp_path / "b"), seed=3, **kw)
    assert _files(a) == _files(b)
    c1, c2 = simulate(str(tmp_path / "c"), subjects=[1, 2], seed=3, **kw)
    assert _files(c1) == _files(a)  # a subject does not depend on the others simulated with it
    (d,) = simulate(str(tmp_path / "d"), seed=4, **kw)
    fmri = "dtseries/sub-0001_task-shape_run-1_space-fsLR_den-91k_bold.dtseries.nii"
    assert _files(d)[fmri] != _files(a)[fmri]
    maps1, maps2 = np.load(source_maps_path(c1.parent, 1)), np.load(source_maps_path(c2.parent, 2))
    assert not np.allclose(maps1, maps2)  # different anatomy per subject
    # the movie is shared: same clips for both subjects, as in CineBrain
    assert [c.name for c in discover_runs(c1)[0].clips] == [c.name for c in discover_runs(c2)[0].clips]


def test_existing_folder_needs_overwrite(tmp_path):
    kw = dict(grayordinates="every:97", n_runs=1, run_seconds=15, progress=False)
    (s,) = simulate(str(tmp_path), **kw)
    before = _files(s)
    with pytest.raises(FileExistsError, match="sub_0001"):
        simulate(str(tmp_path), **kw)
    simulate(str(tmp_path), overwrite=True, **kw)
    assert _files(s) == before


def test_failure_leaves_nothing_half_written(tmp_path, monkeypatch):
    kw = dict(grayordinates="every:97", n_runs=2, run_seconds=15, progress=False)
    real, calls = sim_module.write_npy_eeg, []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # run 1 fully written, run 2 half: its CIFTIs but no EEG
            raise RuntimeError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(sim_module, "write_npy_eeg", flaky)
    out = tmp_path / "raw"
    with pytest.raises(RuntimeError, match="disk full"):
        simulate(str(out), **kw)
    assert list(out.iterdir()) == []  # no subject folder, no temporary folder or file

    # a failed overwrite keeps the previous subject intact
    monkeypatch.setattr(sim_module, "write_npy_eeg", real)
    (s,) = simulate(str(out), **kw)
    before = _files(s)
    calls.clear()
    monkeypatch.setattr(sim_module, "write_npy_eeg", flaky)
    with pytest.raises(RuntimeError):
        simulate(str(out), overwrite=True, **kw)
    assert _files(s) == before and [p.name for p in out.iterdir()] == ["sub_0001"]


# ------------------------------------------------------------------------------------------------
# Physiology
# ------------------------------------------------------------------------------------------------


def test_hrf_peaks_near_five_seconds():
    t = np.arange(0, 32, 0.01)
    h = canonical_hrf(t)
    assert 4.0 <= t[np.argmax(h)] <= 6.0
    assert 12.0 <= t[np.argmin(h)] <= 18.0 and h.min() < 0  # undershoot
    assert 4.0 <= t[np.argmax(canonical_hrf(t, stretch=0.9))] < t[np.argmax(canonical_hrf(t, stretch=1.1))] <= 6.0


def test_bold_follows_visual_drive_in_visual_cortex(loaded):
    kinds, maps, bold = loaded["kinds"], loaded["maps"], loaded["bold"]
    visual_drive = _zscore(loaded["drive"][:, kinds == "visual"].mean(1, keepdims=True))  # (T, 1)
    r = (bold * visual_drive).mean(0)  # (V,) temporal correlation
    visual_map = maps[kinds == "visual"].max(0)
    far = maps[kinds != "global"].max(0) < 0.01
    assert np.median(r[visual_map > 0.5]) > 0.4
    assert np.median(r[far]) < 0.15
    assert np.median(r[visual_map > 0.5]) > np.median(r[far]) + 0.3


def test_bold_lags_neural_activity_by_the_hrf(loaded):
    kinds, info, maps = loaded["kinds"], loaded["info"], loaded["maps"]
    lags = np.arange(16)  # frames
    xcorr = np.zeros(len(lags))
    for k, run in enumerate(loaded["runs"]):
        nt = info["runs"][k]["neural_time"]
        t_fine = nt["start_s"] + nt["step_s"] * np.arange(nt["n_steps"])
        activity = loaded["activity"][k][kinds == "visual"].mean(0)
        bold = read_dtseries(run.fmri).data[:, maps[kinds == "visual"].max(0) > 0.5].mean(1)
        t_vol = np.arange(len(bold)) * TR
        for j, lag in enumerate(lags):
            xcorr[j] += np.corrcoef(np.interp(t_vol - lag * TR, t_fine, activity), bold)[0, 1]
    assert 3.0 <= lags[np.argmax(xcorr)] * TR <= 8.0


def test_noise_ceiling_high_in_sources_low_far_away(loaded):
    kinds, maps = loaded["kinds"], loaded["maps"]
    ceiling = (loaded["truth"] * loaded["bold"]).mean(0)  # (V,) r(noise-free, noisy) over time
    sensory = maps[(kinds == "visual") | (kinds == "auditory")].max(0) > 0.5
    far = maps[kinds != "global"].max(0) < 0.01
    assert 0.5 < np.median(ceiling[sensory]) < 0.9  # learnable but noisy
    assert ceiling.max() < 0.97
    assert np.median(ceiling[far]) < 0.3
    indices = np.arange(0, N_GRAYORDINATES, EVERY)
    v1, outside = region_mask("V1")[indices], ~region_mask("V1+A1")[indices]
    assert np.median(ceiling[v1]) > np.median(ceiling[outside]) + 0.2


def _band_envelope(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """(n_seconds,) mean Hilbert envelope of x (C, n) in [lo, hi] Hz, averaged per second."""
    sos = signal.butter(4, [lo, hi], btype="band", fs=1000.0, output="sos")
    env = np.abs(signal.hilbert(signal.sosfiltfilt(sos, x, axis=1), axis=1)).mean(0)
    n = len(env) // 1000
    return env[: n * 1000].reshape(n, 1000).mean(1)


def test_eeg_band_power_tracks_visual_activity(loaded):
    kinds, info = loaded["kinds"], loaded["info"]
    occipital = [CHANNELS_64.index(c) for c in ("O1", "Oz", "O2", "PO7", "PO3", "POz", "PO4", "PO8")]
    for k, run in enumerate(loaded["runs"]):
        eeg = read_eeg(run.eeg)
        x = np.asarray(eeg.data[occipital], np.float64)
        meta, nt = info["runs"][k], info["runs"][k]["neural_time"]
        t_fine = nt["start_s"] + nt["step_s"] * np.arange(nt["n_steps"])
        n_sec = x.shape[1] // 1000
        t_sec = (np.arange(n_sec) * 1000 + 500 - meta["eeg_lead_samples"]) / 1000.0  # bin centres
        visual = np.interp(t_sec, t_fine, loaded["activity"][k][kinds == "visual"].mean(0))
        assert np.corrcoef(_band_envelope(x, 30, 45), visual)[0, 1] > 0.3  # gamma up
        assert np.corrcoef(_band_envelope(x, 8, 12), visual)[0, 1] < -0.2  # alpha down


def test_eeg_has_line_noise_and_blinks(loaded):
    eeg = np.asarray(read_eeg(loaded["runs"][0].eeg).data, np.float64)
    f, psd = signal.welch(eeg, fs=1000.0, nperseg=4000)
    psd = psd.mean(0)
    near = (np.abs(f - 50) > 1) & (np.abs(f - 50) < 5)
    assert psd[np.argmin(np.abs(f - 50))] > 10 * np.median(psd[near])
    # blinks: large slow deflections at the frontal pole, not at the back
    fp = eeg[CHANNELS_64.index("Fp1")] - np.median(eeg[CHANNELS_64.index("Fp1")])
    oz = eeg[CHANNELS_64.index("Oz")] - np.median(eeg[CHANNELS_64.index("Oz")])
    assert np.percentile(np.abs(fp), 99.9) > 1.5 * np.percentile(np.abs(oz), 99.9)


def test_signal_gain_scales_the_source_signal(tmp_path):
    """signal_gain multiplies the sources' BOLD signal change (and their EEG oscillations)."""
    from eeg2fmri.data.cifti import read_dtseries
    from eeg2fmri.data.cinebrain import truth_path
    from eeg2fmri.data.simulate import simulate

    spread = {}
    for gain in (1.0, 3.0):
        root = tmp_path / f"g{gain}"
        simulate(
            out_dir=str(root),
            subjects=[1],
            scale="ci",
            grayordinates="every:50",
            n_runs=1,
            run_seconds=40,
            signal_gain=gain,
            progress=False,
        )
        truth = read_dtseries(truth_path(root, 1, 1)).data
        spread[gain] = float(np.percentile(truth.std(axis=0), 99))  # at the sources (the global one is not scaled)
        meta = json.loads((root / "sub_0001" / "simulation.json").read_text())
        assert json.dumps(meta).count("psc_sensory") >= 1
    assert spread[3.0] == pytest.approx(3 * spread[1.0], rel=0.05)
    with pytest.raises(ValueError, match="signal_gain"):
        simulate(out_dir=str(tmp_path / "bad"), signal_gain=0, progress=False)
