"""Floors that show what a table's score is made of under a protocol (reported beside Table 1).

Spatial r per frame is high for any prediction that carries the frame's static and session-level
pattern: the mean map (removed by z-scoring), and, once frames are z-scored over a whole recording
(the CineBrain authors' ``normalize=all``), each run's offset from the recording's mean and the
slow drifts within a run. None of that needs the frame's EEG. Three floors measure it:

- **Run mean (train)**: every test frame predicted by the mean of the training frames of its own
  run (a run without training frames, as whole test runs under ``split=tail``, takes the nearest
  run that has some): what session-level structure alone scores.
- **Nearest train frame**: every test frame predicted by the training frame closest to it in
  recording time: session structure plus slow drift.
- **EEG shuffled within run** (:class:`ShuffleEEG`): a trained model scored on test EEG whose frames
  are permuted within each run (a derangement: no frame keeps its own EEG): what the model scores
  without frame-resolved EEG. A score that survives the shuffle does not come from the EEG of the
  frame.

The first two are computed from the prepared cache on the same test windows and with the same
metrics as ``eeg2fmri test`` (:func:`session_floors`); the third is a callback of ``eeg2fmri test``
(``--shuffle_eeg.enabled true``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from eeg2fmri.data.prepare import SPLITS

log = logging.getLogger(__name__)

RUN_MEAN, NEAREST = "Run mean (train)", "Nearest train frame"


# ---------------------------------------------------------------------------------------------
# Session-level floors from the cache
# ---------------------------------------------------------------------------------------------


def recording_time(
    frame_run: np.ndarray, frame_volume: np.ndarray, run_numbers: list[int], run_n_volumes: list[int], tr: float
) -> np.ndarray:
    """Seconds from the first volume of the first run to each frame, the runs laid end to end in
    run order: (T,) float64. Without run tables, runs are spaced by their last kept volume."""
    if not run_numbers:
        run_numbers = sorted(set(frame_run.tolist()))
        run_n_volumes = [int(frame_volume[frame_run == r].max()) + 1 for r in run_numbers]
    offset = dict(zip(run_numbers, np.concatenate([[0], np.cumsum(run_n_volumes)[:-1]]) * tr))
    return np.array([offset[int(r)] for r in frame_run]) + frame_volume * tr


def floor_predictions(
    fmri: np.ndarray, frame_run: np.ndarray, split: np.ndarray, time: np.ndarray
) -> dict[str, np.ndarray]:
    """For every cache row (T,), the row's prediction by each floor: name -> (T, V) float32."""
    train = split == SPLITS["train"]
    if not train.any():
        raise ValueError("the cache has no training frame")
    runs = sorted(set(frame_run.tolist()))
    with_train = [r for r in runs if train[frame_run == r].any()]
    run_mean = {r: fmri[train & (frame_run == r)].mean(0) for r in with_train}
    pred_mean = np.empty_like(fmri, dtype=np.float32)  # (T, V)
    for r in runs:
        src = min(with_train, key=lambda q: (abs(q - r), q))  # its own run, else the nearest one (earlier on ties)
        pred_mean[frame_run == r] = run_mean[src]
    t_train = time[train]
    order = np.argsort(t_train, kind="stable")
    t_sorted = t_train[order]
    at = (
        np.clip(np.searchsorted(t_sorted, time), 1, len(t_sorted) - 1)
        if len(t_sorted) > 1
        else np.zeros(len(time), int)
    )
    if len(t_sorted) > 1:
        at = np.where(np.abs(time - t_sorted[at - 1]) <= np.abs(t_sorted[at] - time), at - 1, at)  # earlier on ties
    nearest = np.flatnonzero(train)[order][at]  # (T,) cache row of the nearest training frame
    return {RUN_MEAN: pred_mean, NEAREST: fmri[nearest].astype(np.float32)}


def session_floors(
    cache: str | Path,
    n_frames: int,
    regions: tuple[str, ...] = ("whole", "V1", "V1+A1"),
    identification: bool = True,
    batch_size: int = 64,
) -> dict[str, dict]:
    """The run-mean and nearest-training-frame floors scored like ``eeg2fmri test`` scores a model:
    the test windows of K = ``n_frames`` frames, every region's spatial, temporal and identification
    metrics. Returns floor name -> metrics."""
    from eeg2fmri.data.datamodule import EEGfMRIDataModule
    from eeg2fmri.data.regions import region_columns
    from eeg2fmri.metrics import RegionMetrics

    dm = EEGfMRIDataModule(str(cache), n_frames=n_frames, batch_size=batch_size, gpu_resident=False)
    dm.setup("test")
    fmri = dm.store["fmri"].float().numpy()  # (T, V)
    time = recording_time(dm.frame_run, dm.frame_volume, dm.run_numbers, dm.run_n_volumes, dm.tr)
    preds = {k: torch.from_numpy(v) for k, v in floor_predictions(fmri, dm.frame_run, dm.split, time).items()}
    cols = {}
    for r in regions:
        try:
            cols[r] = torch.as_tensor(region_columns(r, dm.indices))
        except ValueError:
            log.warning("region %s has no grayordinate in %s; not scored", r, cache)
    out = {}
    for name, table in preds.items():
        metrics = RegionMetrics(cols, dm.n_vertices, identification=identification)
        for batch in dm.test_dataloader():
            metrics.update(table[batch["frame_index"]], batch["fmri"])  # (B, K, V) each
        out[name] = {k: float(v) for k, v in metrics.compute().items()}
    return out


# ---------------------------------------------------------------------------------------------
# The permutation floor: a model scored on EEG shuffled within each run
# ---------------------------------------------------------------------------------------------


def within_run_derangement(frame_run: np.ndarray, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A permutation of the cache rows (T,) that moves every row in ``rows`` (bool (T,)) to another
    row of ``rows`` in the same run, and leaves the others in place: ``eeg[perm]`` gives each test
    frame the EEG of another test frame of its run. A run with a single such row keeps it."""
    perm = np.arange(len(frame_run))
    for r in np.unique(frame_run[rows]):
        sel = np.flatnonzero(rows & (frame_run == r))
        if len(sel) < 2:
            continue
        order = rng.permutation(sel)
        perm[order] = np.roll(order, -1)  # a cycle through a random order: no row keeps its own EEG
    return perm


class ShuffleEEG(Callback):
    """``eeg2fmri test`` on EEG shuffled within each run: the permutation floor.

    At the start of ``test`` the EEG of the test frames is permuted within each run (every frame gets
    another test frame's EEG of its run; fMRI, windows and metrics unchanged), so the model is
    scored without frame-resolved EEG. The results say so (``"eeg"`` in ``test_metrics.json``) and go
    to ``eeg_shuffled/`` next to the checkpoint unless ``--evaluator.results_dir`` is given, so the
    real test metrics are never overwritten. The data are put back when the test ends.

    Args:
        enabled: shuffle (off by default: ``test`` scores the recorded EEG).
        seed: seed of the permutation.
    """

    def __init__(self, enabled: bool = False, seed: int = 0):
        self.enabled, self.seed = enabled, seed
        self._perm: np.ndarray | None = None

    def on_test_start(self, trainer, pl_module) -> None:
        if not self.enabled:
            return
        dm = trainer.datamodule
        test = dm.split == SPLITS["test"]
        self._perm = within_run_derangement(dm.frame_run, test, np.random.default_rng(self.seed))
        self._permute(dm, self._perm)
        dm.eeg_note = f"shuffled within each run (test frames, seed {self.seed}): the permutation floor"
        from eeg2fmri.callbacks import Evaluator

        for cb in trainer.callbacks:
            if isinstance(cb, Evaluator) and cb.results_dir is None:
                base = Path(trainer.ckpt_path).parent if trainer.ckpt_path else Path(trainer.log_dir or ".")
                cb.results_dir = str(base / "eeg_shuffled")
        log.info("test EEG shuffled within each run (seed %d): scoring the permutation floor", self.seed)

    def on_test_end(self, trainer, pl_module) -> None:
        if self._perm is None:
            return
        dm = trainer.datamodule
        self._permute(dm, np.argsort(self._perm))  # the inverse permutation
        dm.eeg_note = "as recorded"
        self._perm = None

    @staticmethod
    def _permute(dm, perm: np.ndarray) -> None:
        eeg = dm.store["eeg"]  # (T, C, W), on whatever device the data module keeps it
        dm.store["eeg"] = eeg[torch.as_tensor(perm, device=eeg.device)]
