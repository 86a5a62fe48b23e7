"""eeg2fmri.metrics against plain numpy references (np.corrcoef and explicit formulas)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import rankdata

from eeg2fmri.metrics import Identification, RegionMetrics, SpatialMetrics, TemporalCorrelation, region_metrics

B, K, V = 7, 4, 60


# --------------------------------------------------------------------------------------------
# numpy references, written out on float64 copies of exactly what the metric sees
# --------------------------------------------------------------------------------------------


def ref_spatial(preds: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None) -> dict:
    """Per frame across grayordinates; mean over scored frames, std (ddof 0) over window means."""
    n, k, _ = preds.shape
    mask = np.ones((n, k), bool) if mask is None else mask
    frames = {"mse": [], "r": [], "cos": []}
    windows = {"mse": [], "r": [], "cos": []}
    for i in range(n):
        per = {"mse": [], "r": [], "cos": []}
        for j in np.flatnonzero(mask[i]):
            p, t = preds[i, j], target[i, j]
            per["mse"].append(np.mean((p - t) ** 2))
            per["r"].append(np.corrcoef(p, t)[0, 1])
            per["cos"].append(p @ t / (np.linalg.norm(p) * np.linalg.norm(t)))
        for name, vals in per.items():
            frames[name] += vals
            if vals:
                windows[name].append(np.mean(vals))
    out = {name: np.mean(frames[name]) for name in frames}
    out |= {f"{name}_std": np.std(windows[name]) for name in windows}
    out |= {"n_windows": len(windows["mse"]), "n_frames": int(mask.sum())}
    return out


def ref_temporal(preds: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Pearson r of every grayordinate over the scored frames; NaN for a constant series."""
    mask = np.ones(preds.shape[:2], bool) if mask is None else mask
    x, y = preds[mask], target[mask]  # (M, V)
    r = np.full(x.shape[1], np.nan)
    for v in range(x.shape[1]):
        if np.ptp(x[:, v]) > 0 and np.ptp(y[:, v]) > 0:
            r[v] = np.corrcoef(x[:, v], y[:, v])[0, 1]
    return r


def ref_ranks(preds: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Rank (1 = best, ties averaged) of each window's own truth among all true windows."""
    n = preds.shape[0]
    corr = np.corrcoef(preds.reshape(n, -1), target.reshape(n, -1))[:n, n:]  # (pred i, true j)
    return np.array([rankdata(-corr[i], method="average")[i] for i in range(n)])


def random_windows(seed: int, n: int = B, noise: float = 1.0, dtype=torch.float32):
    """Correlated (pred, target) windows (n, K, V) as tensors, and their float64 numpy copies."""
    g = torch.Generator().manual_seed(seed)
    static_map = 0.5 * torch.randn(1, 1, V, generator=g, dtype=torch.float64)  # shared by all frames
    target = torch.randn(n, K, V, generator=g, dtype=torch.float64) + static_map
    preds = 0.8 * target + noise * torch.randn(n, K, V, generator=g, dtype=torch.float64)
    preds, target = preds.to(dtype), target.to(dtype)
    return preds, target, preds.double().numpy(), target.double().numpy()


def random_columns(seed: int, n: int = 23) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).choice(V, n, replace=False))


def as_float(d: dict) -> dict:
    return {k: float(v) for k, v in d.items()}


# --------------------------------------------------------------------------------------------
# SpatialMetrics
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("columns", [None, "random"])
def test_spatial_matches_numpy_over_several_batches(columns):
    cols = random_columns(1) if columns == "random" else np.arange(V)
    metric = SpatialMetrics(None if columns is None else torch.as_tensor(cols))
    batches = [random_windows(seed) for seed in range(3)]
    for preds, target, _, _ in batches:
        metric.update(preds, target)
    p = np.concatenate([b[2] for b in batches])[..., cols]
    t = np.concatenate([b[3] for b in batches])[..., cols]
    expected, got = ref_spatial(p, t), as_float(metric.compute())
    assert got.keys() == expected.keys()
    for key in expected:
        assert got[key] == pytest.approx(expected[key], rel=1e-5, abs=1e-6), key
    assert got["n_windows"] == 3 * B and got["n_frames"] == 3 * B * K


def test_spatial_frame_mask_scores_only_masked_frames():
    preds, target, p, t = random_windows(2)
    mask = torch.rand(B, K, generator=torch.Generator().manual_seed(0)) < 0.5
    mask[0] = False  # a window with no scored frame contributes nothing
    mask[1] = True
    mask[2] = torch.tensor([True, False, False, False])  # windows score different frame counts
    metric = SpatialMetrics()
    metric.update(preds, target, frame_mask=mask)
    expected, got = ref_spatial(p, t, mask.numpy()), as_float(metric.compute())
    for key in expected:
        assert got[key] == pytest.approx(expected[key], rel=1e-5, abs=1e-6), key
    assert got["n_windows"] == B - 1


def test_spatial_known_values_and_constant_frames():
    target = torch.randn(2, 3, V, dtype=torch.float64)
    preds = target.clone()
    preds[0, 0] = 2.5  # constant frame: no Pearson r -> 0; cosine still defined
    preds[0, 1] = 0.0  # all-zero frame: r = 0 and cos = 0
    metric = SpatialMetrics()
    metric.update(preds, target)
    got = as_float(metric.compute())
    t00 = target[0, 0].numpy()
    cos00 = 2.5 * t00.sum() / (np.sqrt(V * 2.5**2) * np.linalg.norm(t00))
    assert got["r"] == pytest.approx(4 / 6)
    assert got["cos"] == pytest.approx((cos00 + 4) / 6)
    mse = [np.mean((2.5 - t00) ** 2), np.mean(target[0, 1].numpy() ** 2)]
    assert got["mse"] == pytest.approx(sum(mse) / 6)
    assert got["r_std"] == pytest.approx(np.std([1 / 3, 1.0]))


def test_spatial_bf16_inputs_match_numpy_on_the_rounded_values():
    preds, target, _, _ = random_windows(3, dtype=torch.bfloat16)
    metric = SpatialMetrics()
    metric.update(preds, target)
    expected = ref_spatial(preds.double().numpy(), target.double().numpy())
    for key, value in as_float(metric.compute()).items():
        assert value == pytest.approx(expected[key], rel=1e-5, abs=1e-6), key


# --------------------------------------------------------------------------------------------
# TemporalCorrelation
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("columns", [None, "random"])
def test_temporal_matches_numpy_per_grayordinate(columns):
    cols = random_columns(4) if columns == "random" else np.arange(V)
    metric = TemporalCorrelation(None if columns is None else cols, n_vertices=V)
    batches = [random_windows(seed) for seed in range(10, 14)]
    for preds, target, _, _ in batches:
        metric.update(preds, target)
    p = np.concatenate([b[2] for b in batches])[..., cols]
    t = np.concatenate([b[3] for b in batches])[..., cols]
    expected = ref_temporal(p, t)
    np.testing.assert_allclose(metric.per_vertex().numpy(), expected, rtol=1e-9, atol=1e-9)
    got = as_float(metric.compute())
    assert got["temporal_r_mean"] == pytest.approx(expected.mean(), rel=1e-9)
    # torch.median is the lower median for an even count
    assert got["temporal_r_median"] == pytest.approx(np.sort(expected)[(len(expected) - 1) // 2], rel=1e-9)
    assert got["temporal_n_valid"] == len(cols)


def test_temporal_frame_mask_and_bf16():
    preds, target, _, _ = random_windows(5, dtype=torch.bfloat16)
    mask = torch.rand(B, K, generator=torch.Generator().manual_seed(1)) < 0.6
    metric = TemporalCorrelation(n_vertices=V)
    metric.update(preds, target, frame_mask=mask)
    expected = ref_temporal(preds.double().numpy(), target.double().numpy(), mask.numpy())
    np.testing.assert_allclose(metric.per_vertex().numpy(), expected, rtol=1e-9, atol=1e-9)


def test_temporal_zero_variance_grayordinates_are_left_out():
    preds, target, _, _ = random_windows(6, dtype=torch.float64)
    preds[..., 3] = 1.7  # constant prediction (e.g. a mean baseline): r undefined
    target[..., 5] = -0.2  # constant truth
    preds[..., 7] = 0.0
    metric = TemporalCorrelation(n_vertices=V)
    metric.update(preds[:3], target[:3])
    metric.update(preds[3:], target[3:])
    r = metric.per_vertex()
    assert torch.isnan(r[[3, 5, 7]]).all() and not torch.isnan(r[[0, 1, 2, 4, 6]]).any()
    expected = ref_temporal(preds.numpy(), target.numpy())
    got = as_float(metric.compute())
    assert got["temporal_n_valid"] == V - 3
    assert got["temporal_r_mean"] == pytest.approx(np.nanmean(expected), rel=1e-9)


def test_temporal_needs_n_vertices_and_checks_the_input():
    with pytest.raises(ValueError, match="n_vertices"):
        TemporalCorrelation()
    metric = TemporalCorrelation(n_vertices=V)
    with pytest.raises(ValueError, match=f"{V} grayordinate columns"):
        metric.update(torch.zeros(1, K, V + 1), torch.zeros(1, K, V + 1))


# --------------------------------------------------------------------------------------------
# Identification
# --------------------------------------------------------------------------------------------


def test_identification_prediction_close_to_truth_is_top1():
    _, target, _, _ = random_windows(7, n=20)
    preds = target + 0.05 * torch.randn_like(target)
    metric = Identification()
    metric.update(preds, target)
    got = as_float(metric.compute())
    assert got == {"top1": 1.0, "top5": 1.0, "mean_rank": 1.0, "n_windows": 20}


def test_identification_shuffled_predictions_rank_second():
    # pred_i = 0.5 truth_i + truth_{i+1}: the next window correlates best, the own one second,
    # all others ~0 (random windows of K x V = 240 values are nearly orthogonal).
    n = 12
    target = torch.randn(n, K, V, generator=torch.Generator().manual_seed(8))
    preds = 0.5 * target + target.roll(-1, dims=0)
    metric = Identification(storage_dtype="float32")
    metric.update(preds, target)
    got = as_float(metric.compute())
    assert got == {"top1": 0.0, "top5": 1.0, "mean_rank": 2.0, "n_windows": n}


def test_identification_constant_prediction_ranks_at_chance():
    _, target, _, _ = random_windows(9, n=11)
    metric = Identification()
    metric.update(torch.zeros_like(target), target)
    got = as_float(metric.compute())
    assert got["mean_rank"] == 6.0 and got["top1"] == 0.0 and got["top5"] == 0.0


@pytest.mark.parametrize("columns", [None, "random"])
def test_identification_matches_numpy_ranking(columns):
    cols = random_columns(10) if columns == "random" else np.arange(V)
    metric = Identification(None if columns is None else cols, storage_dtype="float32", block_size=5)  # several blocks
    batches = [random_windows(seed, noise=4.0) for seed in range(20, 24)]
    for preds, target, _, _ in batches:
        metric.update(preds, target)
    p = np.concatenate([b[2] for b in batches])[..., cols]
    t = np.concatenate([b[3] for b in batches])[..., cols]
    ranks = ref_ranks(p, t)
    assert 0 < (ranks == 1).mean() < 1  # a case where ranking matters
    got = as_float(metric.compute())
    assert got["mean_rank"] == pytest.approx(ranks.mean())
    assert got["top1"] == pytest.approx((ranks <= 1).mean())
    assert got["top5"] == pytest.approx((ranks <= 5).mean())
    assert got["n_windows"] == len(ranks)


def test_identification_float16_storage_agrees_with_float32():
    batches = [random_windows(seed, noise=4.0) for seed in range(30, 33)]
    results = []
    for dtype in ("float16", "float32"):
        metric = Identification(storage_dtype=dtype)
        for preds, target, _, _ in batches:
            metric.update(preds.bfloat16(), target.bfloat16())
        results.append(as_float(metric.compute()))
    assert results[0]["mean_rank"] == pytest.approx(results[1]["mean_rank"], abs=0.2)


def test_identification_max_features_is_a_fixed_subset():
    cols = random_columns(11, n=40)
    metric = Identification(cols, max_features=16)
    again = Identification(cols, max_features=16)
    assert metric.columns.numel() == 16 and set(metric.columns.tolist()) <= set(cols.tolist())
    assert torch.equal(metric.columns, again.columns)
    # without region columns the subset is drawn the same way over all columns
    whole = Identification(max_features=16, storage_dtype="float32")
    explicit = Identification(np.arange(V), max_features=16, storage_dtype="float32")
    preds, target, p, t = random_windows(12, noise=4.0)
    whole.update(preds, target)
    explicit.update(preds, target)
    assert as_float(whole.compute()) == as_float(explicit.compute())
    assert whole.preds[0].numel() == B * K * 16  # memory: n_windows x K x max_features per state
    ranks = ref_ranks(p[..., explicit.columns.numpy()], t[..., explicit.columns.numpy()])
    assert as_float(whole.compute())["mean_rank"] == pytest.approx(ranks.mean())


def test_identification_frame_mask_must_be_a_fixed_pattern():
    preds, target, p, t = random_windows(13, noise=3.0)
    pattern = torch.tensor([False, True, True, False])
    metric = Identification(storage_dtype="float32")
    metric.update(preds, target, frame_mask=pattern.expand(B, K))
    ranks = ref_ranks(p[:, pattern.numpy()], t[:, pattern.numpy()])
    assert as_float(metric.compute())["mean_rank"] == pytest.approx(ranks.mean())
    varying = pattern.expand(B, K).clone()
    varying[0, 0] = True
    with pytest.raises(ValueError, match="same frame_mask"):
        metric.update(preds, target, frame_mask=varying)
    with pytest.raises(ValueError, match="fixed within one evaluation"):
        metric.update(preds, target)  # all K frames: a different window length


# --------------------------------------------------------------------------------------------
# Accumulation, reset, dtype
# --------------------------------------------------------------------------------------------


def make_all(cols):
    identification = Identification(cols, storage_dtype="float32")
    return [SpatialMetrics(cols), TemporalCorrelation(cols, n_vertices=V), identification]


def test_many_small_batches_equal_one_big_batch():
    cols = random_columns(14)
    preds, target, _, _ = random_windows(15, n=24, noise=3.0)
    mask = torch.rand(24, K, generator=torch.Generator().manual_seed(2)) < 0.7
    for one, many in zip(make_all(cols), make_all(cols)):
        kwargs = {} if isinstance(one, Identification) else {"frame_mask": mask}
        one.update(preds, target, **kwargs)
        for i in range(0, 24, 5):
            many.update(preds[i : i + 5], target[i : i + 5], **{k: v[i : i + 5] for k, v in kwargs.items()})
        a, b = as_float(one.compute()), as_float(many.compute())
        assert a.keys() == b.keys()
        for key in a:
            assert a[key] == pytest.approx(b[key], rel=1e-12, abs=1e-12), (type(one).__name__, key)


def test_reset_forgets_everything():
    cols = random_columns(16)
    first, second = random_windows(17), random_windows(18)
    for used, fresh in zip(make_all(cols), make_all(cols)):
        used.update(first[0], first[1])
        used.compute()
        used.reset()
        used.update(second[0], second[1])
        fresh.update(second[0], second[1])
        assert as_float(used.compute()) == as_float(fresh.compute())


def test_states_keep_their_dtype_when_the_module_is_cast():
    metrics = {"t": TemporalCorrelation(n_vertices=V), "s": SpatialMetrics(), "i": Identification()}
    module = torch.nn.ModuleDict(metrics)
    module.to(torch.bfloat16)
    assert module["t"].sum_xy.dtype == torch.float64 and module["s"].mse_sum.dtype == torch.float64
    preds, target, _, _ = random_windows(19, dtype=torch.bfloat16)
    module["t"].update(preds, target)
    module["i"].update(preds, target)
    assert module["t"].sum_xy.dtype == torch.float64 and module["i"].preds[0].dtype == torch.float16
    uncast = TemporalCorrelation(n_vertices=V)
    uncast.update(preds, target)
    assert torch.equal(module["t"].per_vertex(), uncast.per_vertex())


def test_region_columns_are_checked():
    with pytest.raises(ValueError, match="duplicates"):
        SpatialMetrics([1, 2, 2])
    with pytest.raises(ValueError, match="non-empty"):
        SpatialMetrics(np.array([], dtype=int))
    metric = SpatialMetrics(np.array([0, V + 5]))
    with pytest.raises(ValueError, match=f"only {V} grayordinate columns"):
        metric.update(torch.zeros(1, K, V), torch.zeros(1, K, V))
    mask = np.zeros(V, bool)
    mask[[2, 9]] = True
    assert SpatialMetrics(mask).columns.tolist() == [2, 9]


# --------------------------------------------------------------------------------------------
# RegionMetrics
# --------------------------------------------------------------------------------------------


def test_region_metrics_names_and_values():
    regions = {"whole": None, "V1": random_columns(20, n=10), "V1+A1": random_columns(20, n=25)}
    collection = region_metrics(regions, n_vertices=V, max_features=None)
    assert isinstance(collection, RegionMetrics)
    batches = [random_windows(seed, noise=3.0) for seed in (21, 22)]
    for preds, target, _, _ in batches:
        collection.update(preds, target)
    got = collection.compute()
    assert all(isinstance(v, (int, float)) for v in got.values())
    per_region = {
        "mse",
        "r",
        "cos",
        "mse_std",
        "r_std",
        "cos_std",
        "n_windows",
        "n_frames",
        "temporal_r_median",
        "temporal_r_mean",
        "temporal_n_valid",
        "identification_top1",
        "identification_top5",
        "identification_mean_rank",
        "identification_n_windows",
    }
    assert set(got) == {f"{region}/{key}" for region in regions for key in per_region}
    cols = regions["V1+A1"]
    p = np.concatenate([b[2] for b in batches])[..., cols]
    t = np.concatenate([b[3] for b in batches])[..., cols]
    assert got["V1+A1/r"] == pytest.approx(ref_spatial(p, t)["r"], rel=1e-5)
    assert got["V1+A1/temporal_r_mean"] == pytest.approx(ref_temporal(p, t).mean(), rel=1e-6)
    assert got["V1+A1/identification_mean_rank"] == pytest.approx(ref_ranks(p, t).mean())
    prefixed = collection.clone(prefix="test/").compute()
    assert prefixed == {f"test/{k}": v for k, v in got.items()}


def test_region_metrics_without_identification_and_with_a_frame_mask():
    collection = RegionMetrics({"my.mask": random_columns(23)}, n_vertices=V, identification=False)
    preds, target, _, _ = random_windows(24)
    mask = torch.zeros(B, K, dtype=torch.bool)
    mask[:, 1] = True
    collection.update(preds, target, frame_mask=mask)
    got = collection.compute()
    assert not any("identification" in k for k in got)
    assert got["my.mask/n_frames"] == B and got["my.mask/n_windows"] == B
    collection.reset()
    collection.update(preds, target)
    assert collection.compute()["my.mask/n_frames"] == B * K
