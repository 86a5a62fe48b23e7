"""The paper's tables and figures, regenerated: ``make reproduce-table1`` / ``-table2`` / ``-ablation``,
and the censored-frame filling study ``make reproduce-fill``; ``eeg2fmri reproduce`` runs
:func:`reproduce`.

Every result is a cell (:mod:`eeg2fmri.experiments.cells`) trained and tested through the Trainer's
commands; a finished cell is reused. Tables are written as markdown and CSV under
``results/<scale>/`` (scales: :mod:`eeg2fmri.experiments.scales`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from eeg2fmri.errors import OptionError
from eeg2fmri.experiments.ablation import ablation
from eeg2fmri.experiments.fill_study import fill_study
from eeg2fmri.experiments.learning_curve import learning_curve
from eeg2fmri.experiments.table1 import table1
from eeg2fmri.experiments.table2 import table2


def reproduce(
    target: Literal["table1", "table2", "ablation", "fill", "learning_curve"],
    scale: Literal["ci", "small", "long", "paper"] = "ci",
    subjects: list[int] = [1],  # noqa: B006 (never mutated; jsonargparse shows the list in --help)
    raw: str = "data/raw",
    prepared: str = "data/prepared",
    results: str = "results",
    methods: list[str] | None = None,
    ks: list[int] | None = None,
    force: bool = False,
    protocol: Literal["project", "paper"] = "project",
) -> Path:
    """Regenerate a table of the paper (cells already finished are reused).

    Args:
        target: table1 (every method x K x region, with S1-S3 and the temporal/identification table),
            table2 (InterRecon and the gap sweep of Figure 3), ablation (latent size, Table S4) or fill
            (censored-frame filling: InterRecon vs linear vs cubic spline at 5 / 10 / 20 % censored) or
            learning_curve (FIR ridge and the model's posterior mean on 1/12 .. all of the training split,
            the EEG-explainable ceiling; first subject only).
        scale: ci (minutes on a CPU), small (about two hours on 2 CPU cores), long (a CineBrain-length
            subject on every 20th grayordinate: hours on 2 CPU cores), paper (the paper's data and
            settings; a GPU job).
        subjects: subject numbers (real data under RAW/<scale>/sub_000N is used when present, else simulated).
        raw: folder of raw subject folders (a <scale> subfolder is used).
        prepared: folder of prepared caches (a <scale> subfolder is used).
        results: output folder (a <scale> subfolder is used).
        methods: table1 only: method slugs (mean, ridge, cnn_tc, cnn_tag, e2fnet, e2fgan, diffusion).
        ks: table1 only: window lengths K in frames (default 3, 10, 30).
        force: recompute finished cells.
        protocol: project (z-score with training statistics, random whole clips as test) or paper (the
            CineBrain authors': the release form imported with import-cinebrain, z-score over all frames,
            the recording's last 20 % as test); table1 only. Caches and results of paper go to
            <scale>-paper folders.
    """
    common = dict(scale=scale, subjects=subjects, raw=raw, prepared=prepared, results=results, force=force)
    if protocol != "project" and target != "table1":
        raise OptionError(f"protocol={protocol!r} is implemented for table1; {target} runs on the project's protocol")
    if target == "table1":
        return table1(methods=methods, ks=ks, protocol=protocol, **common)
    if target == "table2":
        return table2(**common)
    if target == "fill":
        return fill_study(**common)
    if target == "learning_curve":
        return learning_curve(
            scale=scale, subject=subjects[0], raw=raw, prepared=prepared, results=results, force=force
        )
    return ablation(**common)
