"""The floors every table shows, fitted in closed form from one training epoch:
:class:`MeanFrame` (the training-mean frame), :class:`Ridge` (ridge regression from EEG band power)
and :class:`FIRRidge` (band power through a FIR hemodynamic model, a penalty per grayordinate).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from eeg2fmri.module import EEGfMRIModule, attached_trainer
from eeg2fmri.nn.baselines.features import BandPower
from eeg2fmri.ridge import ridge_per_target

# ---------------------------------------------------------------------------------------------
# Closed-form floors (MeanFrame, Ridge, FIRRidge)
# ---------------------------------------------------------------------------------------------


class StepCounter(torch.optim.Optimizer):
    """The optimizer of a model fitted in closed form: it holds no weights and its step changes
    nothing. Stepping it is how a batch counts as a training step: Lightning's ``global_step``
    counts optimizer steps, and ModelCheckpoint skips saving while it has not moved."""

    def __init__(self) -> None:
        super().__init__([torch.zeros(1)], {})  # torch needs a parameter; this placeholder is never read

    def step(self, closure=None):
        return None if closure is None else closure()

    def state_dict(self) -> dict:
        return {}  # nothing to resume

    def load_state_dict(self, state_dict: dict) -> None:
        pass


class ClosedForm(EEGfMRIModule):
    """A model fitted in closed form from sufficient statistics gathered over one training epoch.

    ``training_step`` adds the batch to float64 accumulators (reset at every epoch start); the
    solution is computed when the epoch's statistics are needed: before validation, at the end of
    the training epoch, and before a checkpoint is written. Its solution lives in buffers: no
    parameters (so the EMA callback leaves it alone) and a :class:`StepCounter` for optimizer, which
    each accumulated batch steps (ModelCheckpoint saves once ``global_step`` moves). Statistics are
    summed over processes before solving (DDP). Subclasses implement ``_accumulate`` / ``_solve``.
    """

    def __init__(
        self, n_vertices: int, n_chans: int, n_times: int, n_frames: int, eeg_context: tuple[int, int] = (0, 0)
    ):
        super().__init__(n_vertices, n_chans, n_times, n_frames, eeg_context=eeg_context)
        self.automatic_optimization = False
        self._stats: dict[str, Tensor] = {}
        self._dirty = False

    def configure_optimizers(self):
        if self.trainer.precision == "16-mixed":  # its gradient scaler steps only optimizers that got gradients
            raise ValueError(
                f"{type(self).__name__} is fitted in closed form (float64, outside autocast) and has no gradients "
                "for 16-mixed's gradient scaler: run it with --trainer.precision 32-true or bf16-mixed"
            )
        return StepCounter()

    # ------------------------------------------------------------------ statistics
    def accumulate(self, batch: dict) -> None:
        """Add a batch's frames to the sufficient statistics (float64, outside autocast)."""
        with torch.autocast(self.device.type, enabled=False):
            new = self._accumulate(batch)
        for k, v in new.items():
            self._stats[k] = self._stats[k] + v if k in self._stats else v
        self._dirty = True

    @torch.no_grad()
    def solve(self) -> None:
        """Solve from the statistics gathered so far (summed over processes) into the buffers."""
        stats = self._stats
        if (trainer := attached_trainer(self)) is not None and trainer.world_size > 1:
            stats = {k: trainer.strategy.reduce(v.clone(), reduce_op="sum") for k, v in stats.items()}
        if stats:
            with torch.autocast(self.device.type, enabled=False):
                self._solve(stats)
        self._dirty = False

    def _accumulate(self, batch: dict) -> dict[str, Tensor]:
        raise NotImplementedError

    def _solve(self, stats: dict[str, Tensor]) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------ hooks
    def on_train_epoch_start(self) -> None:
        self._stats, self._dirty = {}, False

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        self.accumulate(batch)
        if attached_trainer(self) is not None:
            self.optimizers().step()  # counts the batch as a step
        with torch.no_grad():  # the model as it stands, on this batch (finite-loss guard, progress bar)
            loss = self._training_loss(batch)
        self.log("train/loss", loss, batch_size=batch["fmri"].shape[0])
        return loss

    def _training_loss(self, batch: dict) -> Tensor:
        return F.mse_loss(self.predict_frames(batch), batch["fmri"].float())

    def on_validation_epoch_start(self) -> None:
        if self._dirty:
            self.solve()

    def on_train_epoch_end(self) -> None:
        if self._dirty:
            self.solve()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        if self._dirty:
            self.solve()
        checkpoint["state_dict"].update(self.state_dict())

    def _eval_step(self, batch: dict, stage: str) -> None:
        loss = F.mse_loss(self.predict_frames(batch), batch["fmri"].float())
        self.log(f"{stage}/loss", loss, sync_dist=True, batch_size=batch["fmri"].shape[0])

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "test")


class MeanFrame(ClosedForm):
    """The training-mean frame floor: predicts the mean z-scored training frame for every frame.

    In z-scored units (statistics from the training frames) the mean frame is ~0 by construction;
    it is computed all the same, from the frames the model is trained on (the training windows:
    a frame shared by overlapping windows counts once per window), not assumed. Whatever spatial
    pattern that mean has is what this floor scores; its temporal r is undefined (a prediction
    constant over time), which the metrics report as NaN.

    Args:
        n_vertices, n_chans, n_times, n_frames: see EEGfMRIModule.
    """

    def __init__(
        self,
        n_vertices: int = 91_282,
        n_chans: int = 64,
        n_times: int = 800,
        n_frames: int = 10,
        eeg_context: tuple[int, int] = (0, 0),
    ):
        super().__init__(n_vertices, n_chans, n_times, n_frames, eeg_context)
        self.save_hyperparameters()
        self.register_buffer("mean_frame", torch.zeros(n_vertices))

    def _accumulate(self, batch: dict) -> dict[str, Tensor]:
        y = batch["fmri"].reshape(-1, self.n_vertices).double()  # (N, V)
        return {"n": torch.tensor(float(y.shape[0]), dtype=torch.float64, device=y.device), "sum_y": y.sum(0)}

    def _solve(self, stats: dict[str, Tensor]) -> None:
        self.mean_frame.copy_((stats["sum_y"] / stats["n"]).to(self.mean_frame.dtype))

    @torch.no_grad()
    def predict_frames(self, batch: dict, **sampling) -> Tensor:
        B, K = batch["fmri"].shape[:2]
        return self.mean_frame.float().expand(B, K, self.n_vertices)  # (B, K, V)


class Ridge(ClosedForm):
    """Ridge regression from EEG band power to the frame: the linear floor.

    Features per frame window: log band power (Welch, ``segment_s`` segments, 50 % overlap) in the
    delta / theta / alpha / beta / gamma bands of every channel (5 x n_chans values), standardised
    with their training mean and std. Over the training epoch ``training_step`` gathers, in float64,
    n, sum x, sum x x^T, sum y, sum x y^T; at the epoch's end W solves (X_s^T X_s + alpha I) W =
    X_s^T (Y - mean Y) for the standardised, centred features X_s, and the intercept is the mean
    training frame. Prediction: ((x - mean) / std) W + mean Y, per frame.

    Args:
        n_vertices, n_chans, n_times, n_frames: see EEGfMRIModule.
        alpha: ridge penalty on the standardised features (X_s^T X_s has n on its diagonal).
        sfreq: EEG sampling rate (Hz) of the prepared data.
        segment_s: Welch segment length (s).
    """

    def __init__(
        self,
        n_vertices: int = 91_282,
        n_chans: int = 64,
        n_times: int = 800,
        n_frames: int = 10,
        eeg_context: tuple[int, int] = (0, 0),
        alpha: float = 1e3,
        sfreq: float = 1000.0,
        segment_s: float = 0.4,
    ):
        super().__init__(n_vertices, n_chans, n_times, n_frames, eeg_context)
        self.save_hyperparameters()
        self.band_power = BandPower(sfreq, n_times, segment_s)
        n_features = self.band_power.n_bands * n_chans
        self.register_buffer("feature_mean", torch.zeros(n_features))
        self.register_buffer("feature_std", torch.ones(n_features))
        self.register_buffer("weight", torch.zeros(n_features, n_vertices))
        self.register_buffer("bias", torch.zeros(n_vertices))

    def features(self, eeg: Tensor) -> Tensor:
        """(B, K, C, W) EEG -> (B, K, 5 C) log band power, float32 (channel-major: c * 5 + band)."""
        eeg = self.frame_eeg(eeg)  # (B, K, C, W): each frame's own window
        B, K, C, W = eeg.shape
        if (C, W) != (self.n_chans, self.n_times):
            raise ValueError(
                f"EEG windows have {C} channels x {W} samples; Ridge was built for {self.n_chans} x {self.n_times}"
            )
        return self.band_power(eeg.float()).reshape(B, K, -1)  # (B, K, F)

    def _accumulate(self, batch: dict) -> dict[str, Tensor]:
        x = self.features(batch["eeg"]).reshape(-1, self.weight.shape[0]).double()  # (N, F)
        y = batch["fmri"].reshape(-1, self.n_vertices).double()  # (N, V)
        return {
            "n": torch.tensor(float(x.shape[0]), dtype=torch.float64, device=x.device),
            "sum_x": x.sum(0),
            "sum_xx": x.t() @ x,
            "sum_y": y.sum(0),
            "sum_xy": x.t() @ y,
        }

    def _solve(self, stats: dict[str, Tensor]) -> None:
        n = stats["n"]
        mx, my = stats["sum_x"] / n, stats["sum_y"] / n  # (F,), (V,)
        cxx = stats["sum_xx"] - n * torch.outer(mx, mx)  # (F, F) centred X^T X
        cxy = stats["sum_xy"] - n * torch.outer(mx, my)  # (F, V) centred X^T Y
        sd = (cxx.diagonal() / n).clamp_min(0).sqrt()  # (F,) population std
        sd = torch.where(sd > 1e-12, sd, torch.ones_like(sd))  # constant features stay zero after centring
        a = cxx / torch.outer(sd, sd) + self.hparams.alpha * torch.eye(len(sd), dtype=cxx.dtype, device=cxx.device)
        w = torch.linalg.solve(a, cxy / sd[:, None])  # (F, V)
        self.feature_mean.copy_(mx.float())
        self.feature_std.copy_(sd.float())
        self.weight.copy_(w.float())
        self.bias.copy_(my.float())

    @torch.no_grad()
    def predict_frames(self, batch: dict, **sampling) -> Tensor:
        with torch.autocast(self.device.type, enabled=False):
            x = (self.features(batch["eeg"]) - self.feature_mean) / self.feature_std  # (B, K, F)
            return x @ self.weight + self.bias  # (B, K, V)


class FIRRidge(ClosedForm):
    """The field's classic EEG-informed regressor: EEG band power through a finite impulse response
    (FIR) hemodynamic model, ridge per grayordinate (Goldman et al. 2002; Laufs et al. 2003).

    Features of frame k: for every lag l = ``lags[0]`` … ``lags[1]`` (frames; negative = earlier),
    the log band power (Welch, 5 bands × C channels, as :class:`Ridge`) of frame k + l's EEG window,
    z-scored with the training frames' mean and std per band and channel. A lag that leaves the
    frame's run of consecutive frames of its clip is missing: its features are 0 (the training
    mean) and a per-lag indicator is 1, so a missing lag has its own learned effect instead of
    passing for an average window (near a clip's onset that effect is large: the EEG before the
    clip was rest, and the BOLD still carries it). Every column of this design is then scaled to
    unit variance over the training frames, as :class:`Ridge` does, so the penalty treats the
    rare indicators like the band powers. The lags come from the batch's EEG context
    (``--data.eeg_context [P, F]`` with P ≥ −lags[0], F ≥ lags[1]).

    Fitting: over the training epoch every training frame is added once (frames shared by
    overlapping windows are not counted twice) to float64 sums of the raw design R (per lag: the
    present-masked log power and the presence flag) and of R^T R, R^T Y; the z-scoring is an affine
    map of R, applied to the sums afterwards. The penalty is chosen **per grayordinate** on the
    validation frames (the usual practice of voxel-wise encoding models): the ridge path is solved
    once in the eigenbasis of the standardised X^T X for every ``alphas`` value, and each
    grayordinate keeps the alpha of least validation MSE. Without a validation pass (no val
    batches) every grayordinate gets the geometric middle of ``alphas``, with a warning.

    Args:
        n_vertices, n_chans, n_times, n_frames, eeg_context: see EEGfMRIModule.
        lags: (first, last) lag in frames, inclusive; default 8 frames (6.4 s) back to 2 ahead.
        alphas: ridge penalties tried on the validation frames (standardised features).
        sfreq: EEG sampling rate (Hz) of the prepared data.
        segment_s: Welch segment length (s).
    """

    def __init__(
        self,
        n_vertices: int = 91_282,
        n_chans: int = 64,
        n_times: int = 800,
        n_frames: int = 10,
        eeg_context: tuple[int, int] = (8, 2),
        lags: tuple[int, int] = (-8, 2),
        alphas: list[float] = [10.0 ** (e / 2) for e in range(2, 15)],  # noqa: B006 (1e1 ... 1e7, shown in --help)
        sfreq: float = 1000.0,
        segment_s: float = 0.4,
    ):
        super().__init__(n_vertices, n_chans, n_times, n_frames, eeg_context)
        lo, hi = int(lags[0]), int(lags[1])
        before, after = self.eeg_context
        if lo > hi or -lo > before or hi > after:
            raise ValueError(
                f"FIRRidge lags=[{lo}, {hi}] need the EEG of {max(0, -lo)} frame(s) before and {max(0, hi)} after each "
                f"window, but the data gives eeg_context=[{before}, {after}]: set --data.eeg_context "
                f"[{max(0, -lo)}, {max(0, hi)}] (or more), or lags within [-{before}, {after}] with lags[0] <= lags[1]"
            )
        if not alphas or min(alphas) <= 0:
            raise ValueError(f"FIRRidge alphas={list(alphas)}: expected one or more positive penalties")
        self.save_hyperparameters()
        self.lags = (lo, hi)
        self.band_power = BandPower(sfreq, n_times, segment_s)
        self.n_base = self.band_power.n_bands * n_chans  # Fb: features of one window
        self.n_lags = hi - lo + 1
        n_features = self.n_lags * (self.n_base + 1)
        self.register_buffer("base_mean", torch.zeros(self.n_base))
        self.register_buffer("base_std", torch.ones(self.n_base))
        self.register_buffer("feature_mean", torch.zeros(n_features))  # of the standardised design
        self.register_buffer("weight", torch.zeros(n_features, n_vertices))
        self.register_buffer("bias", torch.zeros(n_vertices))
        self.register_buffer("alpha", torch.zeros(n_vertices))  # the penalty chosen for each grayordinate
        self._seen: dict[str, Tensor] = {}
        self._val: dict[str, list[Tensor]] = {}

    @property
    def eeg_span_frames(self) -> int:
        """Frames of EEG one prediction sees (the tables' "EEG seconds")."""
        return self.n_lags

    # ------------------------------------------------------------------ design
    def raw_design(self, batch: dict) -> Tensor:
        """(B, K, L (Fb + 1)) raw design of each frame: per lag, the present-masked log band power
        and the presence flag (float64)."""
        eeg, mask = batch["eeg"], batch.get("eeg_mask")
        B, N, C, W = eeg.shape
        if (C, W) != (self.n_chans, self.n_times):
            raise ValueError(
                f"EEG windows have {C} channels x {W} samples; FIRRidge was built for {self.n_chans} x {self.n_times}"
            )
        if mask is None:
            mask = torch.ones(B, N, dtype=torch.bool, device=eeg.device)
        with torch.autocast(eeg.device.type, enabled=False):
            bp = self.band_power(eeg.float()).reshape(B, N, self.n_base).double()  # (B, N, Fb) log power
        present = mask.double()  # (B, N)
        K, before = N - sum(self.eeg_context), self.eeg_context[0]
        blocks = []
        for lag in range(self.lags[0], self.lags[1] + 1):
            sl = slice(before + lag, before + lag + K)  # EEG frames k + lag of the K frames
            p = present[:, sl, None]  # (B, K, 1)
            blocks += [bp[:, sl] * p, p]  # (B, K, Fb), (B, K, 1)
        return torch.cat(blocks, dim=-1)  # (B, K, L (Fb + 1))

    def _standardise(self, m: Tensor, out: Tensor | None = None) -> Tensor:
        """T^T m for the affine map X = R T (+ constant) from the raw design R to the z-scored
        design X: per lag, x = (p·r − mean·p) / std on the band-power columns and 1 − p on the
        indicator. ``m`` (L (Fb + 1), ...) has the raw design's rows; ``out=m`` works in place."""
        Fb, shape = self.n_base, m.shape
        v = m.reshape(self.n_lags, Fb + 1, -1)  # (L, Fb + 1, ...)
        mean = self.base_mean.to(v).reshape(1, Fb, 1)
        std = self.base_std.to(v).reshape(1, Fb, 1)
        if out is None:
            power = (v[:, :Fb] - mean * v[:, Fb:]) / std  # (L, Fb, ...)
            return torch.cat([power, -v[:, Fb:]], dim=1).reshape(shape)
        v[:, :Fb].sub_(mean * v[:, Fb:]).div_(std)
        v[:, Fb:].neg_()
        return out

    # ------------------------------------------------------------------ statistics
    def _new_frames(self, batch: dict, which: str) -> Tensor:
        """(B, K) bool: frames of the batch not added before in this epoch (first occurrence only)."""
        rows = batch["frame_index"].reshape(-1)  # (B K,)
        seen = self._seen.get(which, torch.zeros(0, dtype=torch.bool, device=rows.device))
        top = int(rows.max()) + 1
        if top > len(seen):
            seen = torch.cat([seen, torch.zeros(top - len(seen), dtype=torch.bool, device=rows.device)])
        first = torch.zeros_like(rows, dtype=torch.bool)
        uniq, inv = torch.unique(rows, return_inverse=True)
        pos = torch.full((len(uniq),), len(rows), device=rows.device).scatter_reduce(
            0, inv, torch.arange(len(rows), device=rows.device), reduce="amin"
        )  # first position of each frame in the batch
        first[pos] = True
        new = first & ~seen[rows]
        seen[rows] = True
        self._seen[which] = seen
        return new.reshape(batch["frame_index"].shape)

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        self._seen.pop("train", None)

    def _accumulate(self, batch: dict) -> dict[str, Tensor]:
        new = self._new_frames(batch, "train")  # (B, K)
        r = self.raw_design(batch)[new]  # (n, F)
        y = batch["fmri"][new].double()  # (n, V)
        Fb = self.n_base
        own = (-self.lags[0]) * (Fb + 1)  # lag 0's band-power columns: the frame's own window
        x0 = r[:, own : own + Fb]  # (n, Fb)
        return {
            "n": torch.tensor(float(r.shape[0]), dtype=torch.float64, device=r.device),
            "sum_r": r.sum(0),
            "sum_rr": r.T @ r,
            "sum_y": y.sum(0),
            "sum_ry": r.float().T @ y.float(),  # (F, V) float32: at 91,282 grayordinates float64 would need 2.6 GB
            "sum_x0": x0.sum(0),
            "sum_x0x0": x0.square().sum(0),
        }

    def _eval_step(self, batch: dict, stage: str) -> None:
        if stage != "val" or not self._dirty:
            return super()._eval_step(batch, stage)
        # a validation pass after training: keep its frames, the penalties are chosen on them; the
        # solution and val/loss come at the end of the pass
        new = self._new_frames(batch, "val")
        self._val.setdefault("r", []).append(self.raw_design(batch)[new])  # (n, F)
        self._val.setdefault("y", []).append(batch["fmri"][new].float())  # (n, V)

    def on_validation_epoch_start(self) -> None:
        self._val = {}  # no provisional solve (ClosedForm's): one solve per epoch, with the penalties chosen
        self._seen.pop("val", None)

    def on_validation_epoch_end(self) -> None:
        if not (self._val and self._dirty):
            return
        val = {k: torch.cat(v) for k, v in self._val.items()}
        self._val = {}
        if (trainer := attached_trainer(self)) is not None and trainer.world_size > 1:
            val = {k: _gather_rows(self, v) for k, v in val.items()}
        with torch.no_grad(), torch.autocast(self.device.type, enabled=False):
            self._solve(self._reduced_stats(), val)
            loss = F.mse_loss(self._predict_rows(val["r"]), val["y"])
        self._dirty, self._selected = False, True
        self.log_dict({"val/loss": loss, "val/alpha_median": self.alpha.median()}, sync_dist=False)

    def on_fit_start(self) -> None:
        self._selected = False

    def on_fit_end(self) -> None:
        if not self._selected:
            import logging

            logging.getLogger(__name__).warning(
                "FIRRidge saw no validation frames: every grayordinate kept alpha %g (the middle of alphas); "
                "the penalties are chosen on the validation split when validation runs",
                float(self.alpha[0]),
            )

    def _reduced_stats(self) -> dict[str, Tensor]:
        stats = self._stats
        if (trainer := attached_trainer(self)) is not None and trainer.world_size > 1:
            stats = {k: trainer.strategy.reduce(v.clone(), reduce_op="sum") for k, v in stats.items()}
        self._stats = {}  # _solve consumes them (in place: a whole-brain fit holds one (F, V) sum, not three)
        return stats

    # ------------------------------------------------------------------ solve
    def solve(self) -> None:
        with torch.autocast(self.device.type, enabled=False):
            self._solve(self._reduced_stats())  # no validation frames: the middle of the penalties
        self._dirty = False

    def _solve(self, stats: dict[str, Tensor], val: dict[str, Tensor] | None = None) -> None:
        """Solve from the epoch's sums (consumed: ``sum_ry`` is centred and standardised in place)."""
        n = stats["n"]
        m0 = stats["sum_x0"] / n  # (Fb,) training mean of each band power
        sd0 = (stats["sum_x0x0"] / n - m0.square()).clamp_min(0).sqrt()
        self.base_mean.copy_(m0.float())
        self.base_std.copy_(torch.where(sd0 > 1e-12, sd0, torch.ones_like(sd0)).float())
        mr, my = stats["sum_r"] / n, stats["sum_y"] / n  # (F,), (V,)
        crr = stats["sum_rr"] - n * torch.outer(mr, mr)  # (F, F) centred R^T R
        cry = stats.pop("sum_ry").sub_(torch.outer(n * mr, my).float())  # (F, V) centred R^T Y, in place
        cxx = self._standardise(self._standardise(crr).T)  # (F, F) T^T C T
        cxy = self._standardise(cry, out=cry)  # (F, V), in place
        feature_mean = self._standardise(mr[:, None])[:, 0]  # (F,) mean of the standardised design
        self.feature_mean.copy_(feature_mean.float())
        alphas = torch.tensor(self.hparams.alphas, dtype=torch.float64, device=cxx.device)  # (A,)
        if val is None or len(val["y"]) == 0:  # provisional: the geometric middle of the grid
            w, best = ridge_per_target(cxx, cxy, n, alphas)
        else:
            xv = self._standardise(val["r"].T).T - feature_mean  # (n_val, F) centred like the training design
            w, best = ridge_per_target(cxx, cxy, n, alphas, xv, val["y"] - my.float())
        del cxy
        self.weight.copy_(w.float())
        self.bias.copy_(my.float())
        self.alpha.copy_(best.float())

    def _training_loss(self, batch: dict) -> Tensor:
        # the intercept's MSE: a full prediction costs an (F x V) product per batch at whole-brain size,
        # and before the epoch's solve the weights are those of the last epoch (zero in the first)
        return F.mse_loss(self.bias.expand_as(batch["fmri"]), batch["fmri"].float())

    def _predict_rows(self, r: Tensor) -> Tensor:
        """(n, V) predictions from raw design rows (n, F)."""
        x = self._standardise(r.T).T - self.feature_mean.double()  # (n, F)
        return x.float() @ self.weight + self.bias  # (n, V)

    @torch.no_grad()
    def predict_frames(self, batch: dict, **sampling) -> Tensor:
        with torch.autocast(self.device.type, enabled=False):
            r = self.raw_design(batch)  # (B, K, F)
            return self._predict_rows(r.reshape(-1, r.shape[-1])).reshape(*r.shape[:2], -1)  # (B, K, V)


def _gather_rows(module: EEGfMRIModule, rows: Tensor) -> Tensor:
    """Concatenate every process's rows (n_rank, ...) of differing n (DDP), padding to the largest."""
    n = torch.tensor([rows.shape[0]], device=rows.device)
    counts = module.all_gather(n).reshape(-1)  # (world,)
    pad = torch.zeros((int(counts.max()), *rows.shape[1:]), dtype=rows.dtype, device=rows.device)
    pad[: rows.shape[0]] = rows
    every = module.all_gather(pad)  # (world, n_max, ...)
    return torch.cat([every[i, : int(c)] for i, c in enumerate(counts)])
