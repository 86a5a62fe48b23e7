"""Evaluation metrics for reconstructed fMRI windows, as torchmetrics ``Metric``s (DESIGN.md §5).

Every metric takes ``preds`` and ``target`` of shape (B, K, V): B windows of K frames over the V
grayordinate columns of the data (z-scored units, any float dtype; bf16 is upcast inside), and an
optional ``frame_mask`` (B, K) bool that scores only some frames (InterRecon scores the filled
frames, not the anchors). A region is a set of columns given at construction, so the caller builds
one metric per region (whole / V1 / V1+A1); ``RegionMetrics`` does that for all three kinds.

- ``SpatialMetrics``: per frame, across the region's grayordinates: MSE, Pearson r, cosine (paper).
- ``TemporalCorrelation``: per grayordinate, Pearson r over all scored test frames (NeuroBOLT's
  measure; spatial r alone is inflated by the static map), median and mean over the region.
- ``Identification``: rank of each window's own truth among all test windows by correlation with
  its prediction (top-1, top-5, mean rank).

Conventions, the same everywhere:

- Undefined correlations. A frame (spatial) or window (identification) whose prediction or target
  is constant across its grayordinates has no Pearson r: it scores r = 0 ("no information", what a
  constant predictor such as the training mean deserves), and cosine = 0 when a vector is all
  zeros (``F.cosine_similarity``'s convention). A grayordinate whose predicted or true time series
  is constant has no temporal r: it is left out of the median and mean (``temporal_n_valid`` says
  how many remained); ``TemporalCorrelation.per_vertex()`` marks it NaN.
- Distributed runs. States are sums ("sum"), extrema ("min"/"max") or per-window values ("cat"),
  so ``compute()`` after a DDP gather equals the single-process result over the same windows
  (cat order aside, which no result depends on). Accumulators keep their own dtype (float64 sums)
  even if the owning module is cast with ``.to(torch.bfloat16)``.
- Overlapping windows (stride < K) count a frame once per window it appears in.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric, MetricCollection

__all__ = ["SpatialMetrics", "TemporalCorrelation", "Identification", "RegionMetrics", "region_metrics"]

Columns = Tensor | np.ndarray | Sequence[int] | None


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _as_columns(columns: Columns) -> Tensor | None:
    """Region columns as a 1-D long tensor, in the given order; a boolean mask over columns is accepted."""
    if columns is None:
        return None
    cols = torch.as_tensor(np.asarray(columns) if not isinstance(columns, Tensor) else columns).cpu()
    if cols.dtype == torch.bool:
        cols = cols.nonzero().flatten()
    if cols.ndim != 1 or cols.numel() == 0:
        raise ValueError(
            f"region columns must be a non-empty 1-D index (or boolean mask); got shape {tuple(cols.shape)}"
        )
    if cols.is_floating_point() or cols.is_complex():
        raise ValueError(f"region columns must be integer indices or a boolean mask; got {cols.dtype}")
    cols = cols.long()
    if int(cols.min()) < 0:
        raise ValueError("region columns must be non-negative column indices")
    if cols.unique().numel() != cols.numel():
        raise ValueError("region columns contain duplicates; each grayordinate would be counted twice")
    return cols


@lru_cache(maxsize=16)
def _feature_subset(n: int, max_features: int, seed: int) -> Tensor:
    """A fixed, sorted subset of ``max_features`` of ``range(n)``: it depends only on its arguments,
    so every process and every run scores the same grayordinates."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=generator)[:max_features].sort().values


def _to_device(state: list[Tensor] | Tensor, device: torch.device) -> list[Tensor] | Tensor:
    return state.to(device) if isinstance(state, Tensor) else [v.to(device) for v in state]


def _cat(state: list[Tensor] | Tensor, dtype: torch.dtype, device: torch.device) -> Tensor:
    """A "cat" state as one tensor: a list before a distributed sync, a tensor after."""
    if isinstance(state, Tensor):
        return state
    if not state:
        return torch.empty(0, dtype=dtype, device=device)
    return torch.cat(state)


def _frame_scores(preds: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """MSE, Pearson r and cosine of each frame across its grayordinates; (..., V) -> 3 x (...)."""
    mse = (preds - target).square().mean(-1)
    # Pearson r: cosine of the frame-centred vectors; r = 0 where either frame is constant.
    pc = preds - preds.mean(-1, keepdim=True)
    tc = target - target.mean(-1, keepdim=True)
    constant = (preds.amax(-1) == preds.amin(-1)) | (target.amax(-1) == target.amin(-1))
    r = (pc * tc).sum(-1) / (pc.square().sum(-1).sqrt() * tc.square().sum(-1).sqrt())
    r = torch.where(constant, torch.zeros_like(r), r.clamp(-1.0, 1.0))
    # cosine similarity of the raw z-scored frames; 0 where either frame is all zeros
    norms = preds.square().sum(-1).sqrt() * target.square().sum(-1).sqrt()
    cos = torch.where(norms > 0, (preds * target).sum(-1) / norms, torch.zeros_like(norms))
    return mse, r, cos.clamp(-1.0, 1.0)


# --------------------------------------------------------------------------------------------
# Base: region columns, input checks, dtype-stable and DDP-safe states
# --------------------------------------------------------------------------------------------


class _RegionMetric(Metric):
    """Shared plumbing: the region's column index (a non-persistent buffer, so it follows
    ``.to(device)`` and stays out of checkpoints), input checks, and states that keep their dtype."""

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    def __init__(self, columns: Columns = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        cols = _as_columns(columns)
        empty = torch.empty(0, dtype=torch.long)
        self.register_buffer("columns", empty if cols is None else cols, persistent=False)
        self._whole = cols is None
        self._min_vertices = 0 if cols is None else int(cols.max()) + 1
        self._cat_dtypes: dict[str, torch.dtype] = {}

    def _add_cat_state(self, name: str, dtype: torch.dtype) -> None:
        """A per-window "cat" state of 1-D tensors of ``dtype``; 1-D so that a process that saw no
        window can send an empty tensor of the same rank and dtype to the gather (:meth:`sync`)."""
        self.add_state(name, default=[], dist_reduce_fx="cat")
        self._cat_dtypes[name] = dtype

    def _prepare(self, preds: Tensor, target: Tensor, frame_mask: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """Check shapes; return the region's columns upcast to at least float32, and the frame mask."""
        if preds.shape != target.shape or preds.ndim != 3:
            raise ValueError(
                f"{type(self).__name__} expects preds and target of the same shape (B, K, V) "
                f"(windows, frames, grayordinates); got {tuple(preds.shape)} and {tuple(target.shape)}"
            )
        n_windows, n_frames, n_vertices = preds.shape
        if n_vertices < self._min_vertices:
            raise ValueError(
                f"the region's columns go up to {self._min_vertices - 1}, but the data has only "
                f"{n_vertices} grayordinate columns; build the region columns for this data's layout"
            )
        if frame_mask is None:
            frame_mask = torch.ones(n_windows, n_frames, dtype=torch.bool, device=preds.device)
        elif frame_mask.shape != (n_windows, n_frames) or frame_mask.dtype != torch.bool:
            raise ValueError(
                f"frame_mask must be a bool tensor of shape (B, K) = {(n_windows, n_frames)}; "
                f"got {frame_mask.dtype} {tuple(frame_mask.shape)}"
            )
        if not self._whole:
            preds = preds.index_select(-1, self.columns)  # (B, K, V_region)
            target = target.index_select(-1, self.columns)  # (B, K, V_region)
        dtype = torch.promote_types(preds.dtype, torch.float32)  # bf16 / f16 -> f32; f64 stays
        return preds.to(dtype), target.to(dtype), frame_mask.to(preds.device)

    def _apply(self, fn: Any, exclude_state: Sequence[str] = ()) -> Metric:
        # torchmetrics casts float states with a module-wide `.to(dtype)` (Lightning "bf16-true"),
        # which would round float64 sums to bf16: states follow the device only. (It spares them
        # .half() / .float() / .bfloat16() but not .to(dtype), and a parent module's cast reaches
        # a metric only through _apply: torchmetrics has no public hook for this.)
        names = tuple(exclude_state) + tuple(self._defaults)
        this = super()._apply(fn, exclude_state=names)
        device = this.device
        for name in self._defaults:
            if name in tuple(exclude_state):
                continue
            default, value = this._defaults[name], getattr(this, name)
            this._defaults[name] = _to_device(default, device)
            setattr(this, name, _to_device(value, device))
        return this

    def sync(
        self,
        dist_sync_fn: Callable | None = None,
        process_group: Any | None = None,
        should_sync: bool = True,
        distributed_available: Callable | None = None,
    ) -> None:
        # A process that scored no window still takes part in the gather, with an empty tensor of
        # the state's own dtype (torchmetrics would send its default float32 instead).
        if should_sync:
            for name, dtype in self._cat_dtypes.items():
                if isinstance(getattr(self, name), list) and not getattr(self, name):
                    setattr(self, name, [torch.empty(0, dtype=dtype, device=self.device)])
        super().sync(dist_sync_fn, process_group, should_sync, distributed_available)


# --------------------------------------------------------------------------------------------
# Spatial: per frame across grayordinates
# --------------------------------------------------------------------------------------------


class SpatialMetrics(_RegionMetric):
    """MSE, Pearson r and cosine similarity of each frame across the region's grayordinates.

    ``compute()`` returns 0-d tensors:

    - ``mse``, ``r``, ``cos``: the mean over all scored frames (the paper's per-frame average);
    - ``mse_std``, ``r_std``, ``cos_std``: the standard deviation (population, ddof = 0) over test
      windows of each window's mean over its scored frames (Tables S1-S3 report mean ± std over
      windows; when every window scores the same number of frames the mean over windows equals
      the mean over frames);
    - ``n_windows`` (windows with at least one scored frame), ``n_frames`` (scored frames).

    A window with no scored frame under ``frame_mask`` contributes nothing.

    Args:
        columns: the region's grayordinate columns (indices or a boolean mask); None = all.
        kwargs: passed to ``torchmetrics.Metric`` (``compute_on_cpu``, ``sync_on_compute``, ...).
    """

    def __init__(self, columns: Columns = None, **kwargs: Any) -> None:
        super().__init__(columns, **kwargs)
        for name in ("mse", "r", "cos"):
            self.add_state(f"{name}_sum", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
            self._add_cat_state(f"{name}_window", torch.float64)
        self.add_state("n_frames", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor, frame_mask: Tensor | None = None) -> None:
        preds, target, frame_mask = self._prepare(preds, target, frame_mask)  # (B, K, V_region) x2, (B, K)
        scores = _frame_scores(preds, target)  # 3 x (B, K)
        n_scored = frame_mask.sum(1)  # (B,)
        scored = n_scored > 0  # (B,)
        for name, value in zip(("mse", "r", "cos"), scores):
            value = torch.where(frame_mask, value.double(), 0.0)  # (B, K)
            getattr(self, f"{name}_window").append(value.sum(1)[scored] / n_scored[scored])  # (B_scored,)
            setattr(self, f"{name}_sum", getattr(self, f"{name}_sum") + value.sum())
        self.n_frames += n_scored.sum()

    def compute(self) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        for name in ("mse", "r", "cos"):
            window = _cat(getattr(self, f"{name}_window"), torch.float64, self.device)  # (N,)
            out[name] = getattr(self, f"{name}_sum") / self.n_frames  # NaN when nothing was scored
            out[f"{name}_std"] = window.std(correction=0) if window.numel() else window.new_tensor(float("nan"))
            out["n_windows"] = torch.tensor(window.numel(), device=self.device)  # the same for all three
        out["n_frames"] = self.n_frames.clone()
        return out


# --------------------------------------------------------------------------------------------
# Temporal: per grayordinate over time
# --------------------------------------------------------------------------------------------


class TemporalCorrelation(_RegionMetric):
    """Pearson r of each grayordinate's predicted and true time series over all scored test frames.

    Streams exact float64 sums (Σx, Σy, Σx², Σy², Σxy, n) and the running min/max of each series,
    all reduced by sum/min/max, so a DDP run gives the single-process result. A grayordinate whose
    predicted or true series is constant (min == max, or a non-positive variance after rounding)
    has no r: it is excluded from the median and mean and is NaN in ``per_vertex()``.

    ``compute()`` returns 0-d tensors ``temporal_r_median`` and ``temporal_r_mean`` over the
    region's valid grayordinates (NaN if none) and ``temporal_n_valid`` (how many were valid).
    The median is the lower median for an even count (``torch.median``'s convention).

    Args:
        columns: the region's grayordinate columns (indices or a boolean mask); None = all.
        n_vertices: columns of the data (V); required when ``columns`` is None (it sizes the
            states) and checked against the input when given.
        kwargs: passed to ``torchmetrics.Metric``.
    """

    def __init__(self, columns: Columns = None, n_vertices: int | None = None, **kwargs: Any) -> None:
        super().__init__(columns, **kwargs)
        if columns is None and n_vertices is None:
            raise ValueError("TemporalCorrelation needs n_vertices when no region columns are given")
        if n_vertices is not None and n_vertices < self._min_vertices:
            raise ValueError(f"region columns go up to {self._min_vertices - 1} but n_vertices = {n_vertices}")
        self.n_vertices = n_vertices
        size = n_vertices if columns is None else self.columns.numel()
        zeros = torch.zeros(size, dtype=torch.float64)
        for name in ("sum_x", "sum_y", "sum_xx", "sum_yy", "sum_xy"):
            self.add_state(name, default=zeros.clone(), dist_reduce_fx="sum")
        for name in ("min_x", "min_y"):
            self.add_state(name, default=torch.full_like(zeros, torch.inf), dist_reduce_fx="min")
        for name in ("max_x", "max_y"):
            self.add_state(name, default=torch.full_like(zeros, -torch.inf), dist_reduce_fx="max")
        self.add_state("n", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor, frame_mask: Tensor | None = None) -> None:
        if self.n_vertices is not None and preds.shape[-1] != self.n_vertices:
            raise ValueError(
                f"TemporalCorrelation was built for {self.n_vertices} grayordinate columns; got {preds.shape[-1]}"
            )
        preds, target, frame_mask = self._prepare(preds, target, frame_mask)  # (B, K, V_region) x2, (B, K)
        x = preds[frame_mask].double()  # (M, V_region): the scored frames
        y = target[frame_mask].double()  # (M, V_region)
        if x.shape[0] == 0:
            return
        self.sum_x += x.sum(0)
        self.sum_y += y.sum(0)
        self.sum_xx += x.square().sum(0)
        self.sum_yy += y.square().sum(0)
        self.sum_xy += (x * y).sum(0)
        self.min_x = torch.minimum(self.min_x, x.amin(0))
        self.min_y = torch.minimum(self.min_y, y.amin(0))
        self.max_x = torch.maximum(self.max_x, x.amax(0))
        self.max_y = torch.maximum(self.max_y, y.amax(0))
        self.n += x.shape[0]

    def _per_vertex(self) -> Tensor:
        n = self.n
        cov = self.sum_xy - self.sum_x * self.sum_y / n  # (V_region,), n x covariance
        var_x = self.sum_xx - self.sum_x.square() / n  # (V_region,)
        var_y = self.sum_yy - self.sum_y.square() / n  # (V_region,)
        valid = (self.max_x > self.min_x) & (self.max_y > self.min_y) & (var_x > 0) & (var_y > 0)
        r = cov / (var_x.clamp_min(0).sqrt() * var_y.clamp_min(0).sqrt())
        return torch.where(valid, r.clamp(-1.0, 1.0), torch.full_like(r, float("nan")))

    def per_vertex(self) -> Tensor:
        """Temporal r of every grayordinate of the region, (V_region,) float64 in column order;
        NaN where undefined. Gathered across processes like ``compute()``: call it on every process."""
        with self.sync_context(dist_sync_fn=self.dist_sync_fn, should_sync=self.sync_on_compute):
            return self._per_vertex().clone()

    def compute(self) -> dict[str, Tensor]:
        r = self._per_vertex()
        r = r[~r.isnan()]  # (V_valid,)
        nan = r.new_tensor(float("nan"))
        return {
            "temporal_r_median": r.median() if r.numel() else nan,
            "temporal_r_mean": r.mean() if r.numel() else nan,
            "temporal_n_valid": torch.tensor(r.numel(), device=r.device),
        }


# --------------------------------------------------------------------------------------------
# Identification: which test window does a prediction look like?
# --------------------------------------------------------------------------------------------


class Identification(_RegionMetric):
    """Identification among test windows: each window's prediction, flattened over its K scored
    frames and the region's grayordinates, is correlated with every true test window; the rank of
    its own true window is recorded (1 = best).

    Ties count half (mid-rank, like ``scipy.stats.rankdata``'s "average"): a prediction whose
    correlation ties with k other windows ranks 1 + (#greater) + k / 2, so a constant prediction
    (r = 0 with every window) sits at chance, (N + 1) / 2, not at 1. A window is top-k when its
    rank is <= k.

    Memory: each window is stored twice (prediction and truth) as K x V_sel z-scored values of
    ``storage_dtype``: n_windows x K x V_sel x 2 x (2 bytes for float16, 4 for float32), on the metric's
    device (``compute_on_cpu=True`` keeps them in host memory). For the whole brain, V_sel =
    91,282 and K = 8 make 2.9 MB per window in float16; ``max_features`` bounds V_sel by a fixed
    random subset of the region's grayordinates (seeded, so every process and run uses the same
    ones); e.g. 8,192 -> 262 KB per window. ``compute()`` forms the N x N correlation matrix in
    float32 blocks of ``block_size`` windows.

    ``compute()`` returns 0-d tensors ``top1``, ``top5`` (fractions), ``mean_rank`` and
    ``n_windows``. With ``frame_mask`` every window must score the same frames (InterRecon's fixed
    anchor pattern), so predictions stay comparable across windows.

    Args:
        columns: the region's grayordinate columns (indices or a boolean mask); None = all.
        max_features: at most this many grayordinates are kept (None = all of the region).
        seed: seed of that subset.
        storage_dtype: dtype of the stored z-scores (float16 halves the memory; ranks barely move).
        block_size: windows per block of the correlation matrix in ``compute()``.
        kwargs: passed to ``torchmetrics.Metric``.
    """

    def __init__(
        self,
        columns: Columns = None,
        max_features: int | None = None,
        seed: int = 0,
        storage_dtype: Literal["float16", "float32"] = "float16",
        block_size: int = 1024,
        **kwargs: Any,
    ) -> None:
        cols = _as_columns(columns)
        if max_features is not None and max_features < 1:
            raise ValueError(f"max_features must be positive or None; got {max_features}")
        if cols is not None and max_features is not None and cols.numel() > max_features:
            cols = cols[_feature_subset(cols.numel(), max_features, seed)]
        super().__init__(cols, **kwargs)
        self.max_features, self.seed, self.block_size = max_features, seed, block_size
        self.storage_dtype = {"float16": torch.float16, "float32": torch.float32}[storage_dtype]
        # windows are stored flat (1-D) and reshaped with the feature count, a "max" state
        self._add_cat_state("preds", self.storage_dtype)
        self._add_cat_state("target", self.storage_dtype)
        self.add_state("n_features", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="max")

    def update(self, preds: Tensor, target: Tensor, frame_mask: Tensor | None = None) -> None:
        n_vertices = preds.shape[-1]
        if self._whole and self.max_features is not None and n_vertices > self.max_features:
            subset = _feature_subset(n_vertices, self.max_features, self.seed).to(preds.device)
            preds, target = preds.index_select(-1, subset), target.index_select(-1, subset)  # (B, K, V_sel)
        preds, target, frame_mask = self._prepare(preds, target, frame_mask)  # (B, K, V_sel) x2, (B, K)
        if not bool((frame_mask == frame_mask[:1]).all()):
            raise ValueError(
                "Identification needs the same frame_mask for every window (a fixed pattern of scored frames)"
            )
        if preds.shape[0] == 0 or not bool(frame_mask[0].any()):
            return
        x = preds[:, frame_mask[0]].flatten(1)  # (B, K_scored * V_sel)
        y = target[:, frame_mask[0]].flatten(1)  # (B, K_scored * V_sel)
        n_features = x.shape[1]
        if int(self.n_features) not in (0, n_features):
            raise ValueError(
                f"Identification saw windows of {int(self.n_features)} values and now {n_features}: "
                "keep K, the region and the frame_mask pattern fixed within one evaluation"
            )
        self.n_features = torch.full_like(self.n_features, n_features)
        self.preds.append(_zscore_rows(x).to(self.storage_dtype).flatten())  # (B * n_features,)
        self.target.append(_zscore_rows(y).to(self.storage_dtype).flatten())  # (B * n_features,)

    def compute(self) -> dict[str, Tensor]:
        d = int(self.n_features)
        preds = _cat(self.preds, self.storage_dtype, self.device)
        target = _cat(self.target, self.storage_dtype, self.device)
        if d == 0:
            nan = torch.tensor(float("nan"), dtype=torch.float64, device=self.device)
            return {"top1": nan, "top5": nan, "mean_rank": nan, "n_windows": torch.tensor(0, device=self.device)}
        preds, target = preds.view(-1, d), target.view(-1, d)  # (N, D) z-scores
        n, b = preds.shape[0], self.block_size
        rank = torch.empty(n, dtype=torch.float64, device=preds.device)  # (N,)
        for i in range(0, n, b):
            p = preds[i : i + b].float()  # (b, D)
            # r(pred_i, true_j) = <z(pred_i), z(true_j)> / D, row by row of the N x N matrix
            corr = torch.cat([p @ target[j : j + b].float().T for j in range(0, n, b)], dim=1) / d  # (b, N)
            own = corr[torch.arange(p.shape[0]), torch.arange(i, i + p.shape[0])].unsqueeze(1)  # (b, 1)
            greater = (corr > own).sum(1)  # (b,)
            ties = (corr == own).sum(1) - 1  # (b,), own window excluded
            rank[i : i + b] = 1 + greater.double() + 0.5 * ties.double()
        return {
            "top1": (rank <= 1).double().mean(),
            "top5": (rank <= 5).double().mean(),
            "mean_rank": rank.mean(),
            "n_windows": torch.tensor(n, device=rank.device),
        }


def _zscore_rows(x: Tensor) -> Tensor:
    """Centre and scale each row to unit (population) variance; constant rows become zeros, so
    they correlate 0 with everything. (B, D) -> (B, D)."""
    x = x - x.mean(1, keepdim=True)
    std = x.square().mean(1, keepdim=True).sqrt()
    return torch.where(std > 0, x / std, torch.zeros_like(x))


# --------------------------------------------------------------------------------------------
# All metrics for all regions
# --------------------------------------------------------------------------------------------


class RegionMetrics(MetricCollection):
    """Spatial, temporal and (optionally) identification metrics for every region, in one
    collection that updates like any metric and computes to a flat dict of Python numbers:

    - ``"<region>/mse"``, ``"<region>/r"``, ``"<region>/cos"``, their ``_std``, ``"<region>/n_windows"``,
      ``"<region>/n_frames"`` (``SpatialMetrics``);
    - ``"<region>/temporal_r_median"``, ``"<region>/temporal_r_mean"``, ``"<region>/temporal_n_valid"``
      (``TemporalCorrelation``);
    - ``"<region>/identification_top1"``, ``_top5``, ``_mean_rank``, ``_n_windows`` (``Identification``).

    e.g. ``"whole/r"``, ``"V1/mse"``, ``"V1+A1/temporal_r_median"``. ``clone(prefix="test/")``
    prefixes every key (``"test/V1/r"``). ``update(preds, target, frame_mask=None)`` takes the
    full (B, K, V) tensors; each metric picks its region's columns. ``forward`` returns the same
    keys for the batch alone.

    Args:
        region_columns: region name -> its grayordinate columns in the data (indices or boolean
            mask; None = every column), e.g. from ``eeg2fmri.data.regions.region_columns``.
        n_vertices: grayordinate columns of the data (V).
        identification: also build ``Identification`` (it stores every test window; see its memory note).
        max_features: ``Identification``'s bound on kept grayordinates per region.
    """

    def __init__(
        self,
        region_columns: Mapping[str, Columns],
        n_vertices: int,
        identification: bool = True,
        max_features: int | None = 8192,
    ) -> None:
        metrics: dict[str, Metric] = {}
        self.scored: dict[str, tuple[str, str]] = {}  # module name -> (region, kind), in the regions' order
        for region, columns in region_columns.items():
            key = region.replace(".", "_")  # a module name cannot hold "."
            if f"{key}/spatial" in metrics:
                raise ValueError(f"two regions map to the same name {key!r}: rename one")
            kinds: dict[str, Metric] = {
                "spatial": SpatialMetrics(columns),
                "temporal": TemporalCorrelation(columns, n_vertices=n_vertices),
            }
            if identification:
                kinds["identification"] = Identification(columns, max_features=max_features)
            for kind, metric in kinds.items():
                metrics[f"{key}/{kind}"] = metric
                self.scored[f"{key}/{kind}"] = (region, kind)
        super().__init__(metrics, compute_groups=False)

    def compute(self) -> dict[str, float]:
        metrics = dict(self.items(keep_base=True, copy_state=False))  # (in sorted order: MetricCollection sorts)
        return self._named({name: metrics[name].compute() for name in self.scored})

    def forward(self, preds: Tensor, target: Tensor, frame_mask: Tensor | None = None) -> dict[str, float]:
        metrics = dict(self.items(keep_base=True, copy_state=False))
        return self._named({name: metrics[name](preds, target, frame_mask=frame_mask) for name in self.scored})

    def _named(self, results: dict[str, dict[str, Tensor]]) -> dict[str, float]:
        """Every metric's results as "<region>/<key>": Python numbers, with ``clone(prefix=...)``'s
        prefix (MetricCollection would prefix clashing keys with class names: "SpatialMetrics_r")."""
        out: dict[str, float] = {}
        for name, result in results.items():
            region, kind = self.scored[name]
            for k, v in result.items():
                label = f"identification_{k}" if kind == "identification" else k
                out[f"{self.prefix or ''}{region}/{label}{self.postfix or ''}"] = v.item()
        return out


def region_metrics(
    region_columns: Mapping[str, Columns],
    n_vertices: int,
    identification: bool = True,
    max_features: int | None = 8192,
) -> RegionMetrics:
    """All metrics for every region (see ``RegionMetrics``); ``compute()`` -> {"whole/r": 0.31, ...}."""
    return RegionMetrics(region_columns, n_vertices, identification=identification, max_features=max_features)
