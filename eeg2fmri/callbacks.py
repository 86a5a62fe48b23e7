"""Callbacks: evaluation with sampling and InterRecon, CIFTI prediction writing, loss guard.

Sampling settings (steps, η, guidance, time-travel) belong here, not to the model: a checkpoint
is sampled however the evaluation asks. The CLI adds :class:`Evaluator` to every subcommand
(``--evaluator.num_inference_steps 50``) and :class:`CiftiWriter` for ``predict``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter, Callback
from torch import Tensor

from eeg2fmri.data.cifti import atomic_save, standard_brain_models, write_dtseries
from eeg2fmri.data.regions import region_columns
from eeg2fmri.errors import OutputError, check_option, check_positive, check_writable
from eeg2fmri.interpolate import linear_fill
from eeg2fmri.metrics import RegionMetrics
from eeg2fmri.results import format_table, write_results
from eeg2fmri.seed import global_seed

log = logging.getLogger(__name__)

SPATIAL_KEYS = ("mse", "r", "cos")


def anchor_mask(batch_size: int, n_frames: int, device=None) -> Tensor:
    """InterRecon's validation task: first and last frame observed, the middle ones filled."""
    mask = torch.zeros(batch_size, n_frames, dtype=torch.bool, device=device)  # (B, K)
    mask[:, 0] = mask[:, -1] = True
    return mask


class Evaluator(Callback):
    """Region metrics of sampled predictions at validation and test time.

    Estimators. A diffusion model gives a distribution of frames for each EEG window; the metrics
    score one prediction. ``estimator="mean"`` scores the posterior mean E[x | EEG], the estimate
    that minimises MSE: with ``num_samples=1`` the denoiser's x̂₀ at the noisiest step, one network
    call (``EEG2fMRIDiffusion.posterior_mean``; for the default model, a regression stage under an
    unconditional residual prior, that is D(μ) exactly), with N > 1 the average of N DDIM samples.
    ``estimator="sample"`` scores one DDIM sample: when EEG explains a fraction R² of a
    grayordinate's variance, one sample's expected MSE is about twice the posterior variance and
    its temporal r about R², against R for the mean (arithmetic, not a fault of the sampler). At
    test time ``sample_row`` adds the one-sample scores as a second row (source ``model_sample``)
    beside the estimator's, so both are reported and labelled.

    Validation (every ``every_n_epochs`` epochs, on up to ``max_val_batches`` batches): the
    estimator's predictions → ``val_pred/<region>/<metric>``; InterRecon with the first and last frame as
    anchors → ``val_interrecon/...`` on the filled frames, beside linear interpolation between the
    same anchors → ``val_linear/...``. Test: every test window, spatial / temporal /
    identification metrics per region (and the noise ceiling where the data has the noise-free
    BOLD), logged as ``test/<region>/<metric>`` and written as ``test_metrics.json`` and
    ``test_metrics.csv`` next to the checkpoint (or in the logger's folder).

    Args:
        num_inference_steps: DDIM steps.
        eta: DDIM η (0: deterministic; 1: DDPM-like stochasticity).
        guidance_scale: classifier-free guidance scale (1: plain conditional sampling).
        time_travel: InterRecon's time-travel steps (0: off).
        time_travel_repeat: repeats per time-travel step.
        clip_x0: clip each DDIM step's x̂₀ to the range of the latents the model trained on (a
            sampling detail the paper leaves open; keeps an under-trained ε-network's chain bounded).
        seed: seed of the sampler's noise (results are reproducible).
        estimator: ``mean`` (the posterior mean: scores MSE and r) or ``sample`` (one DDIM sample).
        num_samples: ``mean`` only: 1 = x̂₀ at the noisiest step (one network call); N > 1 = the
            average of N DDIM samples.
        sample_row: at test time also score one DDIM sample per window as a separate row (models
            that sample, with ``estimator="mean"``).
        every_n_epochs: validation sampling period in epochs.
        max_val_batches: validation batches sampled per evaluation (None: all).
        regions: regions to score: whole, V1, V1+A1 or mask files.
        interrecon: run InterRecon at validation (models that support it).
        interrecon_zero_noise: InterRecon's chain starts at the noise's mean x_T = 0, one deterministic
            estimate of the conditional mean, as ``eeg2fmri fill`` does (else at the seed's draw).
        identification: compute identification accuracy at test time.
        results_dir: where test metrics are written (default: the checkpoint's folder).
        save_predictions: also write the test predictions (``test_predictions.npz``: ``pred``
            (N, K, V) float32 and ``frame_index`` (N, K) cache rows) beside the metrics, so any number
            can be recomputed (single process only).
    """

    def __init__(
        self,
        num_inference_steps: int = 50,
        eta: float = 0.0,
        guidance_scale: float = 1.0,
        time_travel: int = 0,
        time_travel_repeat: int = 1,
        clip_x0: bool = True,
        seed: int = 0,
        estimator: Literal["mean", "sample"] = "mean",
        num_samples: int = 1,
        sample_row: bool = True,
        every_n_epochs: int = 1,
        max_val_batches: int | None = 2,
        regions: list[str] = ["whole", "V1", "V1+A1"],  # noqa: B006 (jsonargparse shows it)
        interrecon: bool = True,
        interrecon_zero_noise: bool = True,
        identification: bool = True,
        results_dir: str | None = None,
        save_predictions: bool = False,
    ):
        super().__init__()
        p = "--evaluator."
        check_option(f"{p}estimator", estimator, estimator in ("mean", "sample"), "'mean' or 'sample'")
        check_option(
            f"{p}num_samples",
            num_samples,
            num_samples >= 1 and (estimator == "mean" or num_samples == 1),
            "an integer >= 1 (samples averaged by estimator 'mean'; estimator 'sample' draws exactly 1)",
        )
        check_positive(p, num_inference_steps=num_inference_steps, every_n_epochs=every_n_epochs)
        check_option(f"{p}max_val_batches", max_val_batches, max_val_batches is None or max_val_batches >= 0, ">= 0")
        check_option(f"{p}eta", eta, eta >= 0, "DDIM's eta >= 0 (0: deterministic, 1: DDPM's variance)")
        check_option(f"{p}guidance_scale", guidance_scale, guidance_scale >= 0, "a scale >= 0 (1: no guidance)")
        check_option(f"{p}time_travel", time_travel, time_travel >= 0 and time_travel_repeat >= 0, "an integer >= 0")
        self.sampling = dict(
            num_inference_steps=num_inference_steps, eta=eta, guidance_scale=guidance_scale, seed=seed, clip_x0=clip_x0
        )
        self.estimator = dict(estimator=estimator, num_samples=num_samples)
        self.sample_row = sample_row and estimator == "mean"
        self.time_travel = dict(time_travel=time_travel, time_travel_repeat=time_travel_repeat)
        self.interrecon_start = dict(zero_noise=interrecon_zero_noise)
        self.every_n_epochs, self.max_val_batches = every_n_epochs, max_val_batches
        self.regions, self.interrecon, self.identification = list(regions), interrecon, identification
        self.results_dir = results_dir
        self.save_predictions = save_predictions
        self.results: dict | None = None

    # ------------------------------------------------------------------ set-up
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "test" and trainer.is_global_zero:  # before the test runs, not after
            check_writable(self._results_dir(trainer), "the test metrics", "--evaluator.results_dir")
        pl_module.set_sampling(**self.sampling_for(pl_module))
        dm = trainer.datamodule
        self.columns = {}
        for region in self.regions:
            try:
                self.columns[region] = torch.as_tensor(region_columns(region, dm.indices))
            except ValueError:
                log.warning("region %s has no grayordinate in the modelled data; not scored", region)

    def sampling_for(self, pl_module) -> dict:
        """Keyword arguments of ``predict_frames``: sampling settings and the estimator, for models that sample."""
        return {**self.sampling, **self.estimator} if hasattr(pl_module, "sample") else {}

    def _metrics(self, pl_module, identification: bool) -> RegionMetrics:
        return RegionMetrics(self.columns, pl_module.n_vertices, identification=identification).to(pl_module.device)

    def _can_fill(self, pl_module) -> bool:
        return self.interrecon and hasattr(pl_module, "sample") and pl_module.n_frames >= 3

    # ------------------------------------------------------------------ validation
    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self.active = not trainer.sanity_checking and (trainer.current_epoch + 1) % self.every_n_epochs == 0
        if self.active:
            self.val = {"val_pred": self._metrics(pl_module, identification=False)}
            if self._can_fill(pl_module):
                self.val["val_interrecon"] = self._metrics(pl_module, identification=False)
                self.val["val_linear"] = self._metrics(pl_module, identification=False)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if not self.active or (self.max_val_batches is not None and batch_idx >= self.max_val_batches):
            return
        x = batch["fmri"]  # (B, K, V)
        self.val["val_pred"].update(pl_module.predict_frames(batch, **pl_module.sampling), x)
        if "val_interrecon" in self.val:
            mask = anchor_mask(x.shape[0], x.shape[1], x.device)  # (B, K)
            filled = pl_module.sample(
                batch["eeg"],
                observed=x,
                observed_mask=mask,
                eeg_mask=batch.get("eeg_mask"),
                **self.sampling,
                **self.time_travel,
                **self.interrecon_start,
            )
            self.val["val_interrecon"].update(filled, x, frame_mask=~mask)
            self.val["val_linear"].update(linear_fill(x, mask), x, frame_mask=~mask)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not self.active:
            return
        for prefix, metrics in self.val.items():
            values = metrics.compute()
            # values are already reduced across ranks by the metrics: log them once
            pl_module.log_dict(
                {
                    f"{prefix}/{k}": v
                    for k, v in values.items()
                    if k.split("/")[-1] in SPATIAL_KEYS + ("temporal_r_median",)
                },
                rank_zero_only=True,
            )
        del self.val

    # ------------------------------------------------------------------ test
    def on_test_epoch_start(self, trainer, pl_module) -> None:
        self.test = {"model": self._metrics(pl_module, self.identification)}
        if self.sample_row and hasattr(pl_module, "sample"):
            self.test["model_sample"] = self._metrics(pl_module, self.identification)
        self._saved: list[tuple[Tensor, Tensor]] = []
        if getattr(trainer.datamodule, "has_truth", False):
            self.test["ceiling"] = self._metrics(pl_module, self.identification)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        x = batch["fmri"]  # (B, K, V)
        pred = pl_module.predict_frames(batch, **pl_module.sampling)  # (B, K, V)
        self.test["model"].update(pred, x)
        if "model_sample" in self.test:
            one = pl_module.predict_frames(batch, **{**pl_module.sampling, "estimator": "sample", "num_samples": 1})
            self.test["model_sample"].update(one, x)
        if self.save_predictions:
            self._saved.append((pred.float().cpu(), batch["frame_index"].cpu()))
        if "ceiling" in self.test and "fmri_clean" in batch:
            # the best any method can do: the noise-free BOLD, scaled like the data
            self.test["ceiling"].update(batch["fmri_clean"], x)

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        results = {name: m.compute() for name, m in self.test.items()}
        pl_module.log_dict({f"test/{k}": v for k, v in results["model"].items()}, rank_zero_only=True)
        del self.test
        dm = trainer.datamodule
        self.results = {
            "method": type(pl_module).__name__,
            "ckpt_path": str(trainer.ckpt_path) if trainer.ckpt_path else None,
            "data_path": str(dm.data_path),
            "region": dm.hparams.region,
            "n_frames": dm.n_frames,
            "n_test_windows": int(len(dm.windows["test"])),
            "sampling": pl_module.sampling,
            "estimator": (
                _estimator_label(pl_module.sampling, getattr(pl_module, "mean_is_mu", False))
                if pl_module.sampling
                else "deterministic"
            ),
            "eeg_seconds": eeg_seconds(dm, pl_module),
            "protocol": getattr(dm, "protocol", None),  # the cache's normalisation / split (prepare)
            "eeg": getattr(dm, "eeg_note", "as recorded"),  # ShuffleEEG: the permutation floor
            "seed": global_seed(),
            "metrics": results,
        }
        if trainer.is_global_zero:
            out = self._results_dir(trainer)
            print(format_table(self.results))  # first: the scores reach the user even if the write fails
            try:
                write_results(self.results, out)
            except OSError as e:
                raise OutputError(
                    f"{out}: the test metrics (printed above) could not be written ({e.strerror or e}); "
                    "pass --evaluator.results_dir with a writable folder"
                ) from None
            if self.save_predictions and trainer.world_size == 1:
                pred, rows = (torch.cat(t).numpy() for t in zip(*self._saved))
                atomic_save(out / "test_predictions.npz", lambda tmp: np.savez(tmp, pred=pred, frame_index=rows))
            elif self.save_predictions:
                log.warning(
                    "save_predictions is single-process only; not written under %d processes", trainer.world_size
                )
            print(f"test metrics written to {out / 'test_metrics.json'} and {out / 'test_metrics.csv'}")

    def _results_dir(self, trainer) -> Path:
        if self.results_dir:
            return Path(self.results_dir)
        if trainer.ckpt_path:
            return Path(trainer.ckpt_path).parent
        return Path(trainer.log_dir or ".")


def _estimator_label(sampling: dict, mean_is_mu: bool = False) -> str:
    """How the scored prediction was formed, in words for tables."""
    if sampling.get("estimator") == "sample":
        return "one DDIM sample"
    n = sampling.get("num_samples", 1)
    if n > 1:
        return f"posterior mean (average of {n} samples)"
    if mean_is_mu:
        return "posterior mean (the regression stage D(μ); the residual prior is unconditional)"
    return "posterior mean (x̂₀ at the noisiest step)"


def eeg_seconds(dm, pl_module) -> float:
    """Seconds of EEG a prediction of one frame may depend on: the frame's own window for models
    that predict frame by frame, the window's K frames plus the EEG context for sequence models,
    the lags for the FIR ridge (``eeg_span_frames``)."""
    span = getattr(pl_module, "eeg_span_frames", None)
    if span is None:
        span = 1 if not hasattr(pl_module, "sample") else dm.n_frames + sum(getattr(dm, "eeg_context", (0, 0)))
    return float(span * dm.tr)


# ---------------------------------------------------------------------------------------------
# Predictions as CIFTI
# ---------------------------------------------------------------------------------------------


class CiftiWriter(BasePredictionWriter):
    """Write ``predict`` outputs as one ``.dtseries.nii`` per test run, in BOLD units.

    Each file has the cache's brain models (the whole 91,282 layout when the data had it, even if
    the model was trained on a region: grayordinates outside the modelled region are NaN) in the
    column order of the run's own fMRI file, is named after that file's task, and has a
    SeriesAxis with the run's TR starting at the first predicted volume, and NaN for volumes the
    model did not predict (outside the test clips). Predictions are de-normalised with the
    training statistics stored in the cache (x · std + mean).

    Args:
        output_dir: folder of the written files (default: ``predictions/`` next to the checkpoint).
    """

    def __init__(self, output_dir: str | None = None):
        super().__init__(write_interval="epoch")
        self.output_dir = output_dir
        self.written: list[Path] = []

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices) -> None:
        import h5py

        preds = torch.cat([p["pred"].float().cpu() for p in predictions])  # (N, K, V)
        rows = torch.cat([p["frame_index"].cpu() for p in predictions])  # (N, K)
        if trainer.world_size > 1:
            raise NotImplementedError("predict writes CIFTI from one process; run it with --trainer.devices 1")
        dm = trainer.datamodule
        V_file = len(dm.indices_all)
        frame_pred = {}
        for p, r in zip(preds.reshape(-1, preds.shape[-1]).numpy(), rows.reshape(-1).numpy()):
            frame_pred.setdefault(int(r), p)  # first window that covers a frame wins
        with h5py.File(dm.data_path, "r") as h5:
            mean, std = h5["fmri_mean"][:], h5["fmri_std"][:]
            frame_run, frame_volume = h5["frame_run"][:], h5["frame_volume"][:]
            layouts = run_layouts(h5)
        out_dir = Path(self.output_dir) if self.output_dir else _default_pred_dir(trainer)
        subject = Path(dm.data_path).stem
        by_run: dict[int, list[int]] = {}
        for r in sorted(frame_pred):
            by_run.setdefault(int(frame_run[r]), []).append(r)
        self.written = []
        for run, rs in by_run.items():
            vols = frame_volume[rs]
            first, last = int(vols.min()), int(vols.max())
            data = np.full((last - first + 1, V_file), np.nan, np.float32)  # (T_span, V_file)
            for r, v in zip(rs, vols):
                data[v - first, dm.columns] = frame_pred[r] * std[dm.columns] + mean[dm.columns]
            task, file_indices = layouts.get(run, ("shape", None))
            name = f"{subject.replace('sub_', 'sub-')}_task-{task}_run-{run}_space-fsLR_den-91k_desc-eeg2fmri_bold.dtseries.nii"
            models = None  # the run file's own column order, so the output lines up with the user's file
            if file_indices is not None and not np.array_equal(file_indices, dm.indices_all):
                data = data[:, np.searchsorted(dm.indices_all, file_indices)]  # (T_span, V_file) file order
                models = standard_brain_models()[file_indices]
            path = write_dtseries(
                out_dir / name,
                data,
                dm.tr,
                indices=dm.indices_all,
                brain_models=models,
                start=first * dm.tr,
                metadata={
                    "eeg2fmri": f"predicted from EEG by {type(pl_module).__name__}; NaN = not predicted",
                    "checkpoint": str(trainer.ckpt_path),
                },
            )
            self.written.append(path)
        print(f"predict: wrote {len(self.written)} file(s) to {out_dir}")


def run_layouts(h5) -> dict[int, tuple[str, np.ndarray | None]]:
    """run -> (task, standard index of each column of the run's fMRI file in its own order) from a
    prepared cache. Caches written before these were recorded give the task of the file name (or
    ``shape``) and no column order (standard order)."""
    from eeg2fmri.data.cinebrain import bids_task

    runs = h5["run_numbers"][:].tolist() if "run_numbers" in h5 else []
    files = [f.decode() if isinstance(f, bytes) else f for f in h5["run_files"][:]] if "run_files" in h5 else []
    tasks = [t.decode() if isinstance(t, bytes) else t for t in h5["run_tasks"][:]] if "run_tasks" in h5 else []
    order = h5["run_file_indices"][:].astype(np.int64) if "run_file_indices" in h5 else None
    out = {}
    for i, r in enumerate(runs):
        task = tasks[i] if tasks else (bids_task(files[i]) if i < len(files) else None) or "shape"
        out[int(r)] = (task, None if order is None else order[i])
    return out


def _default_pred_dir(trainer) -> Path:
    if trainer.ckpt_path:
        return Path(trainer.ckpt_path).parent / "predictions"
    return Path(trainer.log_dir or ".") / "predictions"


# ---------------------------------------------------------------------------------------------
# Non-finite loss guard (no host sync per step)
# ---------------------------------------------------------------------------------------------


class FiniteLossGuard(Callback):
    """Stop training when the loss becomes NaN/Inf, naming the step and the batch's frames.

    The check is recorded on the device every step (no host synchronisation) and read every
    ``check_every_n_steps`` steps and at the end of each epoch.

    Args:
        check_every_n_steps: steps between host-side reads of the flag.
    """

    def __init__(self, check_every_n_steps: int = 50):
        self.check_every_n_steps = check_every_n_steps
        self._bad_step: Tensor | None = None
        self._bad_rows: Tensor | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._step = trainer.global_step  # the step this batch trains (global_step moves after it)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is None:
            return
        rows = batch["frame_index"][:, 0]  # (B,) first cache row of each window
        if self._bad_step is None:
            self._bad_step = torch.full((), -1, dtype=torch.long, device=loss.device)
            self._bad_rows = torch.zeros_like(rows)
        first = (~torch.isfinite(loss.detach())) & (self._bad_step < 0)
        self._bad_step = torch.where(
            first, torch.full((), self._step, dtype=torch.long, device=loss.device), self._bad_step
        )
        if self._bad_rows.shape == rows.shape:
            self._bad_rows = torch.where(first, rows, self._bad_rows)
        if (self._step + 1) % self.check_every_n_steps == 0:
            self._check(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._check(trainer)

    def _check(self, trainer) -> None:
        if self._bad_step is not None and int(self._bad_step) >= 0:
            step = int(self._bad_step)
            raise FloatingPointError(
                f"training loss became NaN/Inf at step {step} (epoch {trainer.current_epoch}); the batch's windows "
                f"start at cache rows {self._bad_rows.tolist()}. Lower the learning rate, check those frames of "
                "the data, or train in 32-bit to locate the overflow."
            )


# ---------------------------------------------------------------------------------------------
# torch.compile switch
# ---------------------------------------------------------------------------------------------


class Compile(Callback):
    """``torch.compile`` the model's networks at set-up (in place: checkpoint keys unchanged).

    The DiT works on K tokens per window, so its many small kernels are launch-bound (DESIGN §6):
    ``reduce-overhead`` captures it in CUDA graphs; the autoencoder and EEG encoder get the default
    mode. Registered after the EMA callback, which copies the eager module first.

    Args:
        mode: none (eager), default, or reduce-overhead (CUDA graphs on the DiT; CUDA only).
    """

    def __init__(self, mode: Literal["none", "default", "reduce-overhead"] = "none"):
        self.mode = mode

    def setup(self, trainer, pl_module, stage: str) -> None:
        if self.mode == "none":
            return
        for name in ("autoencoder", "eeg_encoder", "dit"):
            net = getattr(pl_module, name, None)
            if net is not None:
                net.compile(mode=self.mode if name == "dit" else "default")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.mode == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()
