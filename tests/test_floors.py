"""The floors of Table 1c: hand-checked predictions, the within-run derangement, and the run-mean
floor scoring what session-level structure alone gives."""

import h5py
import numpy as np

from eeg2fmri.data.cifti import write_dtseries
from eeg2fmri.data.cinebrain import fmri_path
from eeg2fmri.data.prepare import SPLITS, prepare
from eeg2fmri.floors import NEAREST, RUN_MEAN, floor_predictions, recording_time, session_floors, within_run_derangement
from tests.conftest import TINY_INDICES, TR, make_raw_subject


def test_floor_predictions_by_hand():
    # run 1: rows 0-3 (train, train, test, train); run 2: rows 4-5, test only
    frame_run = np.array([1, 1, 1, 1, 2, 2])
    split = np.array([0, 0, 2, 0, 2, 2])
    fmri = np.arange(6 * 2, dtype=np.float32).reshape(6, 2)  # row i = (2i, 2i + 1)
    time = recording_time(frame_run, np.array([0, 1, 2, 5, 0, 3]), [1, 2], [10, 10], tr=1.0)
    np.testing.assert_array_equal(time, [0, 1, 2, 5, 10, 13])
    pred = floor_predictions(fmri, frame_run, split, time)
    run1 = fmri[[0, 1, 3]].mean(0)
    np.testing.assert_array_equal(pred[RUN_MEAN], np.stack([run1] * 6))  # run 2 has no train frame: run 1's
    # nearest training frame in recording time: row 2 (t=2) -> row 1 (t=1); rows 4, 5 (t=10, 13) -> row 3 (t=5)
    np.testing.assert_array_equal(pred[NEAREST][[2, 4, 5]], fmri[[1, 3, 3]])
    np.testing.assert_array_equal(pred[NEAREST][[0, 1, 3]], fmri[[0, 1, 3]])


def test_within_run_derangement():
    rng = np.random.default_rng(0)
    frame_run = np.repeat([1, 2, 3], [50, 40, 30])
    rows = rng.random(120) < 0.5
    rows[90:] = False
    rows[100] = True  # run 3: a single test row stays in place
    perm = within_run_derangement(frame_run, rows, rng)
    np.testing.assert_array_equal(np.sort(perm), np.arange(120))  # a permutation
    moved = np.flatnonzero(rows & (frame_run < 3))
    assert np.all(perm[moved] != moved)  # no test row keeps its own EEG
    assert np.all(rows[perm[moved]]) and np.all(frame_run[perm[moved]] == frame_run[moved])  # test rows of its run
    others = np.flatnonzero(~rows)
    np.testing.assert_array_equal(perm[others], others)
    assert perm[100] == 100


def test_run_mean_floor_scores_session_structure(tmp_path):
    """Runs that differ by a fixed spatial pattern (session-level structure) and nothing else: the
    run-mean floor reaches a high spatial r with no EEG at all; on the same data without the
    pattern it scores about 0."""
    subject = make_raw_subject(tmp_path / "raw", n_runs=2, clips_per_run=3)
    rng = np.random.default_rng(5)
    scores = {}
    for name, gain in (("flat", 0.0), ("session", 3.0)):
        for r in (1, 2):
            x = 1000 + rng.standard_normal((90, len(TINY_INDICES))) + gain * rng.standard_normal(len(TINY_INDICES))
            write_dtseries(fmri_path(subject.parent, 1, r), x.astype(np.float32), TR, indices=TINY_INDICES)
        cache = prepare(subject, tmp_path / name, progress=False, force=True)
        with h5py.File(cache) as h5:
            assert (h5["split"][:] == SPLITS["test"]).any()
        scores[name] = session_floors(cache, n_frames=3, regions=("whole",), identification=False)
    assert scores["session"][RUN_MEAN]["whole/r"] > 0.6
    assert abs(scores["flat"][RUN_MEAN]["whole/r"]) < 0.2
    assert scores["session"][NEAREST]["whole/r"] > 0.3 and abs(scores["flat"][NEAREST]["whole/r"]) < 0.2
