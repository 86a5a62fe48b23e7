"""Segments of consecutive frames and the z-scoring guard (eeg2fmri.data.frames), hand-computed."""

import numpy as np

from eeg2fmri.data.frames import segment_bounds, segment_ids, segment_starts, split_segments, zscore_std


def test_segments_break_at_gaps_and_label_changes():
    volume = np.array([3, 4, 5, 9, 10, 11, 12, 13])
    clip = np.array([0, 0, 0, 0, 0, 1, 1, 1])
    split = np.array([0, 0, 0, 0, 0, 0, 2, 2])
    assert segment_starts(volume).tolist() == [True, False, False, True, False, False, False, False]
    assert segment_ids(volume, same=(clip, split)).tolist() == [0, 0, 0, 1, 1, 2, 3, 3]
    starts, stops = segment_bounds(volume, same=(clip,))
    assert starts.tolist() == [0, 3, 5] and stops.tolist() == [3, 5, 8]
    # two sequences that must both step by one: window positions and volumes
    pos = np.array([0, 1, 2, 4, 5, 6, 7, 8])
    assert segment_bounds(pos, volume)[0].tolist() == [0, 3]


def test_split_segments_and_empty_input():
    parts = split_segments(np.array([3, 4, 5, 9, 11, 12]))
    assert [p.tolist() for p in parts] == [[3, 4, 5], [9], [11, 12]]
    empty = np.zeros(0, np.int64)
    assert segment_ids(empty).tolist() == [] and [p.tolist() for p in split_segments(empty)] == [[]]
    starts, stops = segment_bounds(empty)
    assert list(zip(starts, stops)) == []


def test_zscore_std_keeps_constant_grayordinates_unscaled():
    mean = np.array([0.0, 1000.0, 1000.0, 5.0])
    std = np.array([0.0, 5e-4, 2e-3, 0.5])  # 5e-4 < 1e-6 * 1000: rounding noise around a constant
    scale, constant = zscore_std(mean, std)
    assert constant.tolist() == [True, True, False, False]
    assert scale.tolist() == [1.0, 1.0, 2e-3, 0.5]
