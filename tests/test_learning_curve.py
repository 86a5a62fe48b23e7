"""The learning curve's pieces: the saturation fit, the training minutes of each fraction, and the
whole target at the smallest scale (slow)."""

import csv

import numpy as np
import pytest

from eeg2fmri.data.prepare import prepare
from eeg2fmri.experiments.learning_curve import FRACTIONS, saturation_fit, training_minutes
from eeg2fmri.experiments.reproduce import reproduce


def test_saturation_fit_recovers_a_known_curve():
    n = np.array([30.0, 90.0, 180.0, 360.0])
    r = 0.4 * n / (n + 120.0)
    r_inf, half = saturation_fit(n, r)
    assert abs(r_inf - 0.4) < 0.004 and abs(half - 120) / 120 < 0.02


def test_training_minutes_grow_with_the_fraction(raw_subject, tmp_path):
    cache = prepare(raw_subject, tmp_path / "prep", progress=False)
    minutes = training_minutes(cache, FRACTIONS)
    values = [minutes[f] for f in FRACTIONS]
    assert values == sorted(values) and values[0] > 0
    full = values[-1]
    assert all(minutes[f] >= f * full - 1e-9 for f in FRACTIONS)  # whole clips: at least the fraction


@pytest.mark.slow
def test_learning_curve_at_the_smallest_scale(tmp_path):
    md = reproduce(
        "learning_curve",
        scale="ci",
        raw=str(tmp_path / "raw"),
        prepared=str(tmp_path / "prep"),
        results=str(tmp_path / "results"),
    )
    rows = list(csv.DictReader(open(md.parent / "learning_curve.csv")))
    assert [r["method"] for r in rows] == ["FIR ridge"] * 4 + ["Ours"] * 4
    minutes = [float(r["train_minutes"]) for r in rows[:4]]
    assert minutes == sorted(minutes)
    assert all(np.isfinite(float(r[g])) for r in rows for g in ("whole", "V1", "V1+A1"))
    text = md.read_text()
    assert "EEG-explainable ceiling" in text and "noise ceiling" in text
    assert (md.parent / "learning_curve.png").stat().st_size > 0
