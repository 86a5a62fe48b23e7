"""Progress as plain text lines, for logs and terminals that are not interactive.

Lightning's bars redraw one line with carriage returns: in a log file (``make demo > demo.log``,
a SLURM job's output, CI) that is one unreadable line per refresh, or nothing until the end.
:class:`LineProgressBar` prints a short line instead: when training starts (where the checkpoints
go), at the first step of each epoch and then every ``every_s`` seconds (epoch, step, loss, time
per step, time left in the epoch), at each epoch's end and around validation, test and predict.
The CLI uses it whenever stderr is not a terminal; in a terminal Lightning's own bar is kept.
"""

from __future__ import annotations

import math
import sys
import time

from lightning.pytorch.callbacks.progress import ProgressBar
from lightning.pytorch.trainer.states import TrainerFn


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class LineProgressBar(ProgressBar):
    """Training / evaluation progress as one plain line per ``every_s`` seconds, on stderr.

    Args:
        every_s: seconds between two progress lines within an epoch (besides the epoch's first
            step and its end, which always get a line).
    """

    def __init__(self, every_s: float = 20.0):
        super().__init__()
        self.every_s = every_s
        self._enabled = True
        self._t0 = self._last = self._epoch_t0 = self._eval_t0 = 0.0

    # ------------------------------------------------------------------ ProgressBar contract
    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def print(self, *args, **kwargs) -> None:
        if self._enabled:
            print(*args, file=sys.stderr, flush=True, **kwargs)

    # ------------------------------------------------------------------ helpers
    def _due(self, first: bool) -> bool:
        now = time.monotonic()
        if first or now - self._last >= self.every_s:
            self._last = now
            return True
        return False

    def _loss(self) -> str:
        loss = self.trainer.progress_bar_metrics.get("loss")
        return f"  loss {float(loss):.4f}" if loss is not None else ""

    def _epoch(self) -> str:
        total = self.trainer.max_epochs
        return f"epoch {self.trainer.current_epoch + 1}" + (f"/{total}" if total and total > 0 else "")

    @staticmethod
    def _count(n: int | float) -> str:
        return "?" if n is None or (isinstance(n, float) and math.isinf(n)) else str(int(n))

    # ------------------------------------------------------------------ fit
    def on_train_start(self, trainer, pl_module) -> None:
        self._t0 = time.monotonic()
        where = {str(cb.dirpath) for cb in trainer.checkpoint_callbacks if getattr(cb, "dirpath", None)}
        self.print(
            f"fit: {self._count(self.total_train_batches)} steps per epoch"
            + (f", {_plural(trainer.max_epochs, 'epoch')}" if trainer.max_epochs and trainer.max_epochs > 0 else "")
            + (f"; checkpoints in {', '.join(sorted(where))}" if where else "")
        )

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._epoch_t0 = time.monotonic()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not self._due(first=batch_idx == 0):
            return
        done, total = batch_idx + 1, self.total_train_batches
        per_step = (time.monotonic() - self._epoch_t0) / done
        left = "" if math.isinf(total) else f"  epoch ends in ~{_duration(per_step * (total - done))}"
        self.print(
            f"{self._epoch()}  step {done}/{self._count(total)} (total {trainer.global_step}){self._loss()}"
            f"  {per_step:.2f} s/step{left}"
        )

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        val = trainer.callback_metrics.get("val/loss")
        self.print(
            f"{self._epoch()} done in {_duration(time.monotonic() - self._epoch_t0)}{self._loss()}"
            + (f"  val/loss {float(val):.4f}" if val is not None else "")
        )

    def on_train_end(self, trainer, pl_module) -> None:
        self.print(f"fit: {_plural(trainer.global_step, 'step')} in {_duration(time.monotonic() - self._t0)}")

    # ------------------------------------------------------------------ validation, test, predict
    def on_validation_start(self, trainer, pl_module) -> None:
        self._eval_t0 = time.monotonic()
        if trainer.sanity_checking:
            return
        if trainer.state.fn != TrainerFn.FITTING:  # the validate command
            self._eval_start("validate", sum(trainer.num_val_batches))
            return
        n = self.total_val_batches
        self.print(f"{self._epoch()}  validating ({self._count(n)} batch" + ("es)" if n != 1 else ")"))

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if not trainer.sanity_checking and trainer.state.fn != TrainerFn.FITTING:
            self._eval_batch("validate", batch_idx, sum(trainer.num_val_batches))

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        what = f"{self._epoch()}  validation" if trainer.state.fn == TrainerFn.FITTING else "validate:"
        self.print(f"{what} done in {_duration(time.monotonic() - self._eval_t0)}")

    def _eval_start(self, stage: str, total) -> None:
        self._eval_t0 = self._last = time.monotonic()
        self.print(f"{stage}: {self._count(total)} batch" + ("" if total == 1 else "es"))

    def _eval_batch(self, stage: str, batch_idx: int, total) -> None:
        if self._due(first=False):
            done = batch_idx + 1
            per = (time.monotonic() - self._eval_t0) / done
            self.print(f"{stage}: batch {done}/{self._count(total)}  {per:.2f} s/batch")

    def on_test_start(self, trainer, pl_module) -> None:
        self._eval_start("test", sum(trainer.num_test_batches))

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._eval_batch("test", batch_idx, sum(trainer.num_test_batches))

    def on_test_end(self, trainer, pl_module) -> None:
        self.print(f"test: done in {_duration(time.monotonic() - self._eval_t0)}")

    def on_predict_start(self, trainer, pl_module) -> None:
        self._eval_start("predict", sum(trainer.num_predict_batches))

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._eval_batch("predict", batch_idx, sum(trainer.num_predict_batches))

    def on_predict_end(self, trainer, pl_module) -> None:
        self.print(f"predict: done in {_duration(time.monotonic() - self._eval_t0)}")
