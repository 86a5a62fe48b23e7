"""Reliability: resume after SIGKILL to the same weights, determinism, and the windowing /
alignment arithmetic as properties (hypothesis)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from eeg2fmri.data.datamodule import window_starts
from eeg2fmri.data.prepare import clip_frames, prepare
from tests.conftest import make_raw_subject
from tests.test_runs import TINY


def fit_args(cache: Path, root: Path, epochs: int) -> list[str]:
    return [
        "fit",
        "--data.data_path",
        str(cache),
        "--data.n_frames",
        "3",
        "--data.batch_size",
        "4",
        *TINY,
        "--trainer.max_epochs",
        str(epochs),
        "--trainer.default_root_dir",
        str(root),
        "--trainer.logger",
        "false",
        "--trainer.enable_progress_bar",
        "false",
        "--evaluator.num_inference_steps",
        "2",
        "--evaluator.max_val_batches",
        "1",
        "--seed_everything",
        "7",
    ]


def run_cli(args: list[str], **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "eeg2fmri", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def final_state(root: Path) -> dict:
    ckpt = torch.load(root / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["epoch"] == 3, ckpt["epoch"]
    return {**ckpt["state_dict"], **{f"current.{k}": v for k, v in ckpt["current_model_state"].items()}}


@pytest.mark.slow
def test_sigkill_then_resume_gives_the_uninterrupted_weights(tmp_path):
    cache = prepare(make_raw_subject(tmp_path / "raw", n_volumes=70), tmp_path / "prep", progress=False)
    # uninterrupted
    p = run_cli(fit_args(cache, tmp_path / "a", 4))
    assert p.wait(timeout=600) == 0, p.stderr.read()[-3000:]
    # killed with SIGKILL as soon as the first epoch's checkpoint exists (mid-epoch or mid-write)
    p = run_cli(fit_args(cache, tmp_path / "b", 4))
    last = tmp_path / "b" / "checkpoints" / "last.ckpt"
    t0 = time.time()
    while not last.exists() and p.poll() is None and time.time() - t0 < 600:
        time.sleep(0.05)
    time.sleep(0.3)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert p.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    torch.load(last, map_location="cpu", weights_only=False)  # the surviving checkpoint is whole
    # resume from the last checkpoint
    p = run_cli([*fit_args(cache, tmp_path / "b", 4), "--ckpt_path", "last"])
    assert p.wait(timeout=600) == 0, p.stderr.read()[-3000:]
    a, b = final_state(tmp_path / "a"), final_state(tmp_path / "b")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, equal_nan=True, msg=k)  # bitwise, NaN lags equal


def test_same_seed_same_weights_and_metrics(tmp_path):
    from eeg2fmri.cli import main

    cache = prepare(make_raw_subject(tmp_path / "raw", n_volumes=60), tmp_path / "prep", progress=False)
    out = []
    for name in ("a", "b"):
        main([*fit_args(cache, tmp_path / name, 2)])
        ckpt = tmp_path / name / "checkpoints" / "last.ckpt"
        main(
            [
                "test",
                "--data.data_path",
                str(cache),
                "--data.n_frames",
                "3",
                "--trainer.logger",
                "false",
                "--trainer.enable_progress_bar",
                "false",
                "--evaluator.num_inference_steps",
                "2",
                "--ckpt_path",
                str(ckpt),
                "--seed_everything",
                "7",
            ]
        )
        out.append(
            (
                torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"],
                (ckpt.parent / "test_metrics.json").read_text(),
            )
        )
    (sa, ma), (sb, mb) = out
    for k in sa:  # bitwise; the Gaussian fill's autocovariance is NaN at the lags the data cannot estimate
        torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=0, equal_nan=True, msg=k)
    import json

    ja, jb = json.loads(ma), json.loads(mb)
    assert ja["metrics"] == jb["metrics"] and ja["seed"] == jb["seed"] == 7


# ------------------------------------------------------------------------------- properties


@st.composite
def frame_tables(draw):
    n_clips = draw(st.integers(1, 5))
    clip, volume, split = [], [], []
    v = 0
    for c in range(n_clips):
        length = draw(st.integers(1, 15))
        s = draw(st.integers(0, 2))
        for _ in range(length):
            if draw(st.booleans()) and draw(st.booleans()):
                v += draw(st.integers(2, 4))  # a gap (a dropped volume) inside the clip
            else:
                v += 1
            clip.append(c)
            volume.append(v)
            split.append(s)
        v += 3
    return np.array(clip), np.array(volume), np.array(split)


@settings(max_examples=150, deadline=None)
@given(frame_tables(), st.integers(1, 8), st.integers(1, 4), st.booleans())
def test_windows_never_cross_clips_splits_or_gaps(table, k, stride, tail):
    clip, volume, split = table
    starts = window_starts(clip, volume, split, k, stride, include_tail=tail)
    for s in starts:
        rows = np.arange(s, s + k)
        assert rows[-1] < len(clip)
        assert len(set(clip[rows])) == 1 and len(set(split[rows])) == 1
        assert np.all(np.diff(volume[rows]) == 1)
    if stride == 1:  # every valid window is found
        valid = [
            s
            for s in range(len(clip) - k + 1)
            if len(set(clip[s : s + k])) == 1
            and len(set(split[s : s + k])) == 1
            and np.all(np.diff(volume[s : s + k]) == 1)
        ]
        assert sorted(starts.tolist()) == valid


@settings(max_examples=200, deadline=None)
@given(
    st.integers(0, 5000),  # EEG samples before the first volume
    st.floats(0.5, 2.0),  # TR, s
    st.sampled_from([250.0, 500.0, 1000.0]),  # sfreq
    st.floats(0.0, 8.0),  # shift, s
    st.floats(0.0, 30.0),  # clip start, s
    st.floats(1.0, 40.0),  # clip length, s
    st.integers(0, 3),  # trigger jitter, samples
)
def test_every_frame_is_paired_with_eeg_exactly_shift_earlier(lead, tr, sfreq, shift_s, start, length, jitter):
    rng = np.random.default_rng(0)
    n_times = int(round(tr * sfreq))
    onsets = lead + np.arange(100) * n_times + rng.integers(0, jitter + 1, 100)
    onsets = np.maximum.accumulate(onsets)
    frames, starts = clip_frames(onsets, start, start + length, shift_s, sfreq, n_times)
    shift = int(round(shift_s * sfreq))
    np.testing.assert_array_equal(starts, onsets[frames] - shift)  # exactly shift_s earlier
    lo, hi = onsets[0] + round(start * sfreq), onsets[0] + round((start + length) * sfreq)
    assert np.all(starts >= lo) and np.all(starts + n_times <= hi)  # inside the clip
    outside = np.setdiff1d(np.arange(100), frames)  # and every other volume's window is not
    st_all = onsets - shift
    assert not np.any((st_all[outside] >= lo) & (st_all[outside] + n_times <= hi))
