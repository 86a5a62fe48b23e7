"""Exponential moving average of the weights: Lightning's WeightAveraging with a warmed-up decay.

The CLI adds :class:`EMA` to every subcommand (``--ema.decay 0.999``).
"""

from __future__ import annotations

import itertools

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import WeightAveraging
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor
from torch.optim.swa_utils import get_ema_multi_avg_fn


class EMA(WeightAveraging):
    """Exponential moving average of the weights, used for validation, test and checkpoints.

    Lightning's :class:`~lightning.pytorch.callbacks.WeightAveraging` (the average is swapped in for
    validation, copied over the weights when training ends, and written as the checkpoint's
    ``state_dict`` with the current weights beside it for resuming), averaging parameters and
    buffers with the decay warmed up as min(decay, (1 + n) / (10 + n)) after n updates, so short
    runs are not dominated by the initial weights (a fixed 0.999 needs thousands of steps to forget
    them). Integer buffers (counters) follow the module. The decay is computed on the host from a
    count read once per fit from the average.

    A model without parameters (fitted in closed form: its solution lives in buffers) takes no
    gradient steps, so there is no trajectory to average: the callback leaves it alone, where
    averaging would put back the buffers it copied at set-up.

    Args:
        decay: the EMA decay once warmed up (0: no averaging, the current weights are used).
    """

    def __init__(self, decay: float = 0.999):
        if not 0 <= decay < 1:
            raise ValueError(f"decay={decay}: expected 0 <= decay < 1")
        self.decay = decay
        self._updates: int | None = None  # updates so far, counted on the host (read once from the average)
        self._stepped = False  # the average took a step of the warmed-up rule since the count last advanced
        self._active = True  # False for a model without parameters
        super().__init__(use_buffers=True, multi_avg_fn=self.multi_avg_fn)

    def decay_at(self, n: int) -> float:
        """The decay of the update that follows ``n`` earlier updates."""
        return min(self.decay, (1.0 + n) / (10.0 + n))

    @torch.no_grad()
    def multi_avg_fn(self, averaged: list[Tensor], current: list[Tensor], n_averaged: Tensor) -> None:
        """The update of AveragedModel (``multi_avg_fn``) for one group of tensors (one device and
        dtype) after the first update, which copies: avg <- avg + (1 - decay_n) (w - avg), one
        fused lerp per group."""
        if self._updates is None:  # the first average of this fit (a resumed run continues the count)
            self._updates = int(n_averaged)
        if averaged[0].is_floating_point():
            get_ema_multi_avg_fn(self.decay_at(self._updates))(averaged, current, n_averaged)
        else:  # integer buffers (counters) follow the module
            for avg, cur in zip(averaged, current):
                avg.copy_(cur)
        self._stepped = True

    # ------------------------------------------------------------------ Lightning hooks
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # WeightAveraging builds the average on pl_module.device, which Lightning already reports as
        # the accelerator during set-up (before it moves the model): the average lives there
        self._active = any(True for _ in pl_module.parameters())
        self._updates, self._stepped = None, False
        if self._active:
            super().setup(trainer, pl_module, stage)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # the average was copied from the module at the callbacks' set-up, which comes before the
        # module's own (PCA start, ridge start, the Gaussian statistics): until its first update
        # (the sanity check's validation swaps it in) it must be the module as set up. A resumed
        # run has loaded its average by now and is left alone.
        avg = self._average_model
        if self._active and avg is not None and int(avg.n_averaged) == 0:
            with torch.no_grad():
                for a, c in zip(
                    itertools.chain(avg.module.parameters(), avg.module.buffers()),
                    itertools.chain(pl_module.parameters(), pl_module.buffers()),
                ):
                    a.copy_(c)

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        return self._active and step_idx is not None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if self._stepped:  # each group of this update used decay_at(n); the next update uses n + 1
            self._updates += 1
            self._stepped = False

    def on_train_end(self, trainer, pl_module) -> None:
        if self._active:
            super().on_train_end(trainer, pl_module)

    def state_dict(self) -> dict:
        return super().state_dict() if self._active else {}

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        if self._active:
            super().on_save_checkpoint(trainer, pl_module, checkpoint)

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        if not self._active or trainer.state.fn != TrainerFn.FITTING:
            return  # test / predict: the checkpoint's weights are the average
        super().on_load_checkpoint(trainer, pl_module, checkpoint)
        self._updates = None
