"""Shared fixtures: a tiny raw subject written directly (not by the simulator), so the data layer's
tests do not depend on the simulator's physiology, and a simulated + prepared subject for the
model tests."""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from eeg2fmri.data.cifti import write_dtseries
from eeg2fmri.data.cinebrain import CHANNELS_64, beh_path, eeg_stem, fmri_path, write_npy_eeg

TINY_INDICES = np.arange(0, 91_282, 200)  # 457 grayordinates, every structure represented
TR, SFREQ = 0.8, 1000.0


def make_raw_subject(
    root: Path,
    subject: int = 1,
    n_runs: int = 2,
    n_volumes: int = 90,
    clips_per_run: int = 3,
    seed: int = 0,
    indices: np.ndarray = TINY_INDICES,
    eeg_lead_s: float = 1.0,
    task: str = "shape",
) -> Path:
    """Random but well-formed subject: each run n_volumes at TR 0.8 s, EEG starting eeg_lead_s
    before the first volume with one trigger per volume, clips_per_run clips separated by rests."""
    rng = np.random.default_rng(seed)
    n_per_tr = int(TR * SFREQ)
    for r in range(1, n_runs + 1):
        bold = 1000 + rng.standard_normal((n_volumes, len(indices))).astype(np.float32)
        write_dtseries(fmri_path(root, subject, r, task), bold, TR, indices=indices)
        lead = int(eeg_lead_s * SFREQ)
        n_samples = lead + n_volumes * n_per_tr + 2000
        eeg = rng.standard_normal((64, n_samples)).astype(np.float32) * 20
        onsets = lead + np.arange(n_volumes) * n_per_tr
        write_npy_eeg(eeg_stem(root, subject, r, task), eeg, SFREQ, CHANNELS_64, onsets)
        dur = n_volumes * TR - 6.0  # leave room for the 4 s shift
        edges = np.linspace(1.0, dur, clips_per_run + 1)
        p = beh_path(root, subject, r)
        p.parent.mkdir(parents=True, exist_ok=True)
        with open(p, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["videoStartTime", "videoStopTime", "clip"])
            for c in range(clips_per_run):
                w.writerow([f"{edges[c]:.3f}", f"{edges[c + 1] - 1.0:.3f}", f"run{r}_clip{c}"])
    return Path(root) / f"sub_{subject:04d}"


@pytest.fixture
def raw_subject(tmp_path) -> Path:
    return make_raw_subject(tmp_path / "raw")


@pytest.fixture(scope="session")
def sim_prepared(tmp_path_factory) -> Path:
    """A simulated CI-sized subject on a declared subset of grayordinates, prepared once per session."""
    from eeg2fmri.data.prepare import prepare
    from eeg2fmri.data.simulate import simulate

    root = tmp_path_factory.mktemp("sim")
    (subject_dir,) = simulate(
        out_dir=str(root / "raw"), subjects=[1], scale="ci", grayordinates="every:20", seed=0, progress=False
    )
    return prepare(subject_dir, root / "prepared", progress=False)


def wb_command() -> str | None:
    """Path of Connectome Workbench's wb_command; a test that needs it skips without it unless
    EEG2FMRI_REQUIRE_WB=1 (set by .ci/run), where a missing wb_command fails the test."""
    path = shutil.which("wb_command")
    if path is None:
        if os.environ.get("EEG2FMRI_REQUIRE_WB") == "1":
            pytest.fail("wb_command not found but EEG2FMRI_REQUIRE_WB=1: install connectome-workbench")
        pytest.skip("wb_command (Connectome Workbench) not installed; `apt-get install connectome-workbench`")
    return path
