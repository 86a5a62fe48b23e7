"""The continuous-recording path through MNE on files written by real exporters: MNE's own
``mne.export.export_raw`` (pybv for BrainVision, edfio for EDF, eeglabio for EEGLAB), with the
scanner's volume markers as annotations and an ECG channel. Each must prepare into the same frames
and EEG as the .npy + JSON form of the same recording."""

import json
import logging
import shutil

import h5py
import numpy as np
import pytest

from eeg2fmri.data.cinebrain import CHANNELS_64, eeg_stem, read_eeg
from eeg2fmri.data.prepare import prepare
from tests.conftest import SFREQ, make_raw_subject

mne = pytest.importorskip("mne", reason="MNE-Python is in the dev extras (pip install -e '.[dev]')")


def _export(subject, fmt: str, ext: str, marker: str = "R128") -> None:
    """Replace each run's .npy EEG by the same recording written by mne.export (volts, an extra ECG
    channel, the triggers as annotations, and an unrelated stimulus annotation)."""
    for run in (1, 2):
        stem = eeg_stem(subject.parent, 1, run)
        npy = stem.with_name(stem.name + ".npy")
        meta = json.loads(npy.with_suffix(".json").read_text())
        data = np.load(npy).astype(np.float64) * 1e-6  # (64, n) microvolts -> volts
        ecg = 1e-3 * np.sin(np.arange(data.shape[1]) / 100.0)[None]
        info = mne.create_info([*meta["ch_names"], "ECG"], SFREQ, ["eeg"] * 64 + ["ecg"])
        raw = mne.io.RawArray(np.concatenate([data, ecg]), info, verbose="error")
        onsets = np.asarray(meta["volume_onsets"]) / SFREQ
        raw.set_annotations(mne.Annotations(np.r_[onsets, 3.3], 0.0, [marker] * len(onsets) + ["Stimulus/S  1"]))
        mne.export.export_raw(stem.with_name(stem.name + ext), raw, fmt=fmt, overwrite=True, verbose="error")
        npy.unlink()
        npy.with_suffix(".json").unlink()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A raw subject in the .npy form and its cache."""
    root = tmp_path_factory.mktemp("mne")
    subject = make_raw_subject(root / "raw", n_runs=2)
    return subject, prepare(subject, root / "npy", progress=False)


@pytest.mark.parametrize(
    "fmt, ext, atol", [("brainvision", ".vhdr", 2e-3), ("edf", ".edf", 4e-3), ("eeglab", ".set", 2e-3)]
)
def test_exported_recording_prepares_like_the_npy_form(reference, tmp_path, caplog, fmt, ext, atol):
    src, ref = reference
    subject = tmp_path / "raw" / src.name
    shutil.copytree(src, subject)
    stem = eeg_stem(subject.parent, 1, 1)
    onsets = np.asarray(json.loads(stem.with_name(stem.name + ".json").read_text())["volume_onsets"])
    _export(subject, fmt, ext)
    eeg = read_eeg(stem.with_name(stem.name + ext))
    np.testing.assert_array_equal(eeg.volume_onsets, onsets)  # the markers, as sample indices
    assert eeg.sfreq == SFREQ and eeg.ch_names[:64] == list(CHANNELS_64)
    with caplog.at_level(logging.WARNING):
        got = prepare(subject, tmp_path / fmt, progress=False)
    assert "ignoring 1 channel(s) not in the montage: ['ECG']" in caplog.text
    with h5py.File(ref) as a, h5py.File(got) as b:
        for key in ("frame_run", "frame_volume", "split", "fmri"):
            np.testing.assert_array_equal(a[key][:], b[key][:])
        x, y = a["eeg"][:].astype(np.float32), b["eeg"][:].astype(np.float32)
        np.testing.assert_allclose(y, x, atol=atol)  # float16 cache; EDF stores 16-bit samples
        assert np.abs(x).mean() > 0.05


def test_other_marker_and_missing_markers(reference, tmp_path, caplog):
    """Markers under another name are found with volume_marker; none at all falls back to the
    first sample with a warning that names what was found."""
    subject = tmp_path / "raw" / reference[0].name
    shutil.copytree(reference[0], subject)
    _export(subject, "brainvision", ".vhdr", marker="T  1")
    stem = eeg_stem(subject.parent, 1, 1)
    path = stem.with_name(stem.name + ".vhdr")
    assert read_eeg(path, volume_marker="T  1").volume_onsets is not None
    with caplog.at_level(logging.WARNING):
        assert read_eeg(path).volume_onsets is None
    assert "no annotation contains the volume marker 'R128'" in caplog.text and "T  1" in caplog.text
