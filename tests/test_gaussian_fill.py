"""The Gaussian conditional fill (issue 23): the conditional mean against the AR(1) closed forms, the
autocovariance estimate, the statistics a fit stores, ``eeg2fmri fill --method gaussian`` on a tiny
checkpoint (observed frames bit-identical, fills in the run's units and moving with their anchors),
and a checkpoint written before the statistics existed."""

import json
import re

import nibabel as nib
import numpy as np
import pytest
import torch

from eeg2fmri import gaussian as G
from eeg2fmri.cli import main
from eeg2fmri.fill import FillError, fill_run
from tests import test_fill
from tests.cli_errors import cli_error
from tests.conftest import TINY_INDICES
from tests.test_fill import AROUND_GAP, CENSORED, GAP, _hashes, _mask

# test_fill's fixtures (a tiny raw subject with a K = 4 checkpoint fitted on it; the run on a BOLD scale)
tiny = test_fill.tiny
bold_scale = test_fill.bold_scale

PHI, S2, M = 0.6, 2.0, 0.7  # the AR(1) of the closed-form tests: coefficient, stationary variance, mean


def ar1_acov(phi: float, s2: float, n_lags: int, d: int = 1) -> torch.Tensor:
    return torch.tensor([s2 * phi**k for k in range(n_lags)], dtype=torch.float64).expand(d, n_lags)  # (d, L)


def ar1_series(phi: float, s2: float, mean: float, n: int, d: int, rng: np.random.Generator) -> np.ndarray:
    """(n, d) stationary AR(1): x_t - m = phi (x_{t-1} - m) + e_t, var(x) = s2."""
    x = np.empty((n, d))
    x[0] = rng.standard_normal(d) * np.sqrt(s2)
    e = rng.standard_normal((n, d)) * np.sqrt(s2 * (1 - phi**2))
    for t in range(1, n):
        x[t] = phi * x[t - 1] + e[t]
    return x + mean


# ------------------------------------------------------------------------------------------------
# The conditional mean
# ------------------------------------------------------------------------------------------------


def test_one_missing_frame_of_an_ar1_is_the_closed_form():
    """AR(1) is Markov: a missing frame with both neighbours observed has E = m + phi / (1 + phi^2)
    (x_{t-1} + x_{t+1} - 2m) whatever else is observed; at the run's edge, m + phi (x_1 - m)."""
    rng = np.random.default_rng(0)
    T, d = 200, 5
    x = ar1_series(PHI, S2, M, T, d, rng)  # (T, d)
    observed = np.ones(T, bool)
    observed[[0, 50, 120]] = False
    out = G.conditional_mean(
        torch.from_numpy(x)[None], torch.from_numpy(observed)[None], ar1_acov(PHI, S2, 64, d), torch.full((d,), M)
    )[0].numpy()
    for t in (50, 120):
        expected = M + PHI / (1 + PHI**2) * (x[t - 1] + x[t + 1] - 2 * M)
        np.testing.assert_allclose(out[t], expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(out[0], M + PHI * (x[1] - M), rtol=0, atol=1e-6)
    assert np.array_equal(out[observed], x[observed])  # observed frames exactly as given


@pytest.mark.parametrize("gap", [2, 5, 9])
def test_a_longer_gap_of_an_ar1_is_the_bridge_closed_form(gap):
    """Frames a+1 .. b-1 missing between observed x_a and x_b (n = b - a): E[x_{a+i}] = m + w_a (x_a - m)
    + w_b (x_b - m), w_a = (phi^i - phi^(2n-i)) / (1 - phi^(2n)), w_b = (phi^(n-i) - phi^(n+i)) /
    (1 - phi^(2n)) (the 2x2 Toeplitz solve); the other observed frames do not enter (Markov)."""
    rng = np.random.default_rng(gap)
    T, d, a = 120, 3, 40
    b, n = a + gap + 1, gap + 1
    x = ar1_series(PHI, S2, M, T, d, rng)
    observed = np.ones(T, bool)
    observed[a + 1 : b] = False
    out = G.conditional_mean(
        torch.from_numpy(x)[None], torch.from_numpy(observed)[None], ar1_acov(PHI, S2, 32, d), torch.full((d,), M)
    )[0].numpy()
    for i in range(1, n):
        wa = (PHI**i - PHI ** (2 * n - i)) / (1 - PHI ** (2 * n))
        wb = (PHI ** (n - i) - PHI ** (n + i)) / (1 - PHI ** (2 * n))
        np.testing.assert_allclose(out[a + i], M + wa * (x[a] - M) + wb * (x[b] - M), rtol=0, atol=1e-6)


def test_a_mean_per_frame_and_any_covariance_match_the_numpy_solve():
    """A mean per frame (the EEG's μ) and a non-Markov covariance: each missing frame is
    μ_t + Σ_tO Σ_OO^-1 (x_O - μ_O) over the observed frames of its window (every frame within
    (L - gap) // 2 of the gap), per dim, against numpy's solve; dims do not mix."""
    rng = np.random.default_rng(3)
    T, d, L = 60, 4, 12
    lags = np.arange(L)
    acov = np.stack([np.exp(-((lags / s) ** 2)) * v + (lags == 0) * 0.1 for s, v in ((2, 1), (3, 2), (4, 0.5), (1, 3))])
    x, mu = rng.standard_normal((T, d)), rng.standard_normal((T, d))
    observed = np.ones(T, bool)
    observed[[20, 21, 22, 40]] = False
    observed[[15, 17]] = False  # missing frames inside the window of another gap are not conditioned on
    out = G.conditional_mean(
        torch.from_numpy(x)[None], torch.from_numpy(observed)[None], torch.from_numpy(acov), torch.from_numpy(mu)[None]
    )[0].numpy()
    for a, e in ((15, 16), (17, 18), (20, 23), (40, 41)):
        side = (L - (e - a)) // 2
        win = np.arange(max(0, a - side), min(T, e + side))
        obs = win[observed[win]]
        for j in range(d):
            g = acov[j]
            s_oo = g[np.abs(obs[:, None] - obs[None, :])]
            s_mo = g[np.abs(np.arange(a, e)[:, None] - obs[None, :])]
            expected = mu[a:e, j] + s_mo @ np.linalg.solve(s_oo, x[obs, j] - mu[obs, j])
            np.testing.assert_allclose(out[a:e, j], expected, rtol=0, atol=1e-9)


def test_runs_longer_than_the_lags_are_cut_and_far_frames_get_the_mean():
    """A run of 30 missing frames with L = 8 lags: its frames near an anchor follow the AR(1) pull of
    that anchor, its middle (out of reach of every anchor) is the mean; a window with no observed frame
    at all (every frame missing but one far away) is the mean too."""
    T, L = 60, 8
    x = torch.full((1, T, 1), 3.0, dtype=torch.float64)
    observed = torch.ones(1, T, dtype=torch.bool)
    observed[0, 10:40] = False
    out = G.conditional_mean(x, observed, ar1_acov(PHI, S2, L), torch.zeros(1))[0, :, 0]
    assert torch.isfinite(out).all()
    assert out[10] == pytest.approx(3 * PHI, abs=0.05)  # one frame from the anchor at 9
    assert out[39] == pytest.approx(3 * PHI, abs=0.05)
    assert (out[20:30] == 0).all()  # far from both anchors: the mean


def test_weights_are_shared_between_windows_of_the_same_pattern(monkeypatch):
    """Windows with the same observed / missing pattern (Table 2's) solve once."""
    calls = []
    real = G._weights
    monkeypatch.setattr(G, "_weights", lambda *a: calls.append(1) or real(*a))
    B, K, d = 16, 10, 3
    observed = torch.zeros(B, K, dtype=torch.bool)
    observed[:, [0, -1]] = True
    out = G.conditional_mean(torch.randn(B, K, d), observed, ar1_acov(PHI, S2, 16, d), torch.zeros(d))
    assert len(calls) == 1 and out.shape == (B, K, d) and torch.isfinite(out).all()


# ------------------------------------------------------------------------------------------------
# The statistics
# ------------------------------------------------------------------------------------------------


def test_the_autocovariance_of_a_long_ar1_approaches_phi_to_the_k():
    rng = np.random.default_rng(1)
    phi, s2, m = 0.7, 1.5, -2.0
    # 40 clips of 500 frames, each its own AR(1) (no pair reaches across clips)
    x = np.concatenate([ar1_series(phi, s2, m, 500, 4, rng) for _ in range(40)])  # (20000, 4)
    segment = torch.arange(40).repeat_interleave(500)
    mean, acov = G.autocovariance(torch.from_numpy(x), segment, 16)
    np.testing.assert_allclose(mean.numpy(), m, atol=0.1)
    np.testing.assert_allclose(acov.numpy(), np.broadcast_to(s2 * phi ** np.arange(16), (4, 16)), atol=0.08)


def test_pairs_never_cross_a_segment_and_scarce_lags_are_nan():
    """[1, 1, 1 | -1, -1, -1]: lag 1's four pairs within the segments are (1, 1) or (-1, -1),
    covariance 1 (with the pair across the edge, 3/5); lag 2 has 2 pairs for 6 frames (fewer than
    half of the frames have a partner), so lags 2.. are NaN."""
    x = torch.tensor([[1.0], [1.0], [1.0], [-1.0], [-1.0], [-1.0]])
    mean, acov = G.autocovariance(x, torch.tensor([0, 0, 0, 1, 1, 1]), 5)
    assert mean.item() == 0.0 and torch.isnan(acov[0, 2:]).all() and G.valid_lags(acov) == 2
    # lags (1, 1) are not positive definite ([[1, 1], [1, 1]] is singular): raised to the floor
    assert acov[0, 0].item() == pytest.approx(1.0, abs=1e-5) and acov[0, 1].item() == pytest.approx(1.0, abs=1e-5)
    assert acov[0, 1] < acov[0, 0]


def test_positive_definite_keeps_a_valid_sequence_and_repairs_an_invalid_one():
    good = ar1_acov(0.5, 1.0, 32)
    np.testing.assert_allclose(G.positive_definite(good).numpy(), good.numpy(), atol=1e-12)
    bad = torch.tensor([[1.0, 0.9, 0.2, 0.9, 0.1]], dtype=torch.float64)  # Toeplitz has a negative eigenvalue
    idx = torch.as_tensor(np.abs(np.arange(5)[:, None] - np.arange(5)[None, :]))
    assert torch.linalg.eigvalsh(bad[0, idx]).min() < 0
    fixed = G.positive_definite(bad)
    assert torch.linalg.eigvalsh(fixed[0, idx]).min() > 0
    assert (fixed - bad).abs().max() < 0.5


# ------------------------------------------------------------------------------------------------
# The model's fill: latents, μ, the statistics it picks, the decoder
# ------------------------------------------------------------------------------------------------


def test_the_models_fill_is_the_closed_form_around_mu_in_its_latents():
    """A tiny model with a regression stage whose residual latents are AR(1) phi (mean c): a frame
    missing between two observed ones is D(μ_t + c + phi / (1 + phi^2) (r_{t-1} + r_{t+1} - 2c)),
    r = E x - μ; without the EEG the model of z (AR(1) phi_z, mean m) and no μ; observed frames are
    the input exactly."""
    from tests.test_module import tiny_model

    torch.manual_seed(0)
    model = tiny_model(n_vertices=30, n_frames=6).eval()
    with torch.no_grad():
        model.regression_head.fir.weight.normal_(0, 0.5)  # a μ that is not zero
        model.regression_head.fir.bias.normal_()
        c, m = torch.randn(16, dtype=torch.float64), torch.randn(16, dtype=torch.float64)
        model.gauss_r_mean.copy_(c)
        model.gauss_r_acov.copy_(ar1_acov(PHI, S2, G.N_LAGS, 16))
        model.gauss_z_mean.copy_(m)
        model.gauss_z_acov.copy_(ar1_acov(0.3, 1.0, G.N_LAGS, 16))
    x, eeg = torch.randn(2, 6, 30), torch.randn(2, 6, 4, 64)
    observed = torch.ones(2, 6, dtype=torch.bool)
    observed[:, 3] = False
    x[:, 3] = float("nan")  # a lost frame: never read
    with torch.no_grad():
        out = model.gaussian_fill(x, observed, eeg)  # (2, 6, 30)
        z = model.autoencoder.encode(torch.nan_to_num(x)).double()  # (2, 6, d)
        mu = model.encode_eeg(eeg)[1].double()  # (2, 6, d)
        assert mu.abs().mean() > 0.1
        r = z - mu
        z3 = mu[:, 3] + c + PHI / (1 + PHI**2) * (r[:, 2] + r[:, 4] - 2 * c)  # (2, d)
        expected = model.autoencoder.decode(z3.float())  # (2, V)
        torch.testing.assert_close(out[:, 3], expected, rtol=0, atol=1e-5)
        assert torch.equal(out[observed], x[observed])
        no_eeg = model.gaussian_fill(x, observed)
        z3 = m + 0.3 / (1 + 0.3**2) * (z[:, 2] + z[:, 4] - 2 * m)
        torch.testing.assert_close(no_eeg[:, 3], model.autoencoder.decode(z3.float()), rtol=0, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# What a fit stores
# ------------------------------------------------------------------------------------------------


def _check_statistics(state: dict, model, cache) -> None:
    """``state``'s Gaussian statistics are those of ``model``'s latents of the cache's training frames
    over their clips' consecutive frames (recomputed here in numpy), and the residual's those of z - μ."""
    from eeg2fmri.data.datamodule import EEGfMRIDataModule
    from eeg2fmri.data.frames import segment_ids
    from eeg2fmri.data.prepare import SPLITS

    dm = EEGfMRIDataModule(str(cache), n_frames=4, eeg_context=model.eeg_context)
    dm.setup("fit")
    train = np.flatnonzero(dm.split == SPLITS["train"])
    seg = segment_ids(dm.frame_volume, same=(dm.frame_clip, dm.split))[train]
    model.eval()
    with torch.no_grad():
        b = next(dm.iter_frames("train", batch_size=10**6))
        z = model.autoencoder.encode(b["fmri"][:, 0]).double().numpy()  # (N, d)
        r = z - model.encode_eeg(b["eeg"], b["eeg_mask"])[1][:, 0].double().numpy()
    for name, v in (("z", z), ("r", r)):
        n_lags = G.valid_lags(state[f"gauss_{name}_acov"])
        same = [seg[k:] == seg[: len(v) - k] for k in range(G.N_LAGS)]
        # the lags at which at least half of the frames have a partner in their clip
        assert n_lags == min(k for k in range(G.N_LAGS) if 2 * same[k].sum() < len(v)) > 3
        vc = v - v.mean(0)
        raw = np.stack([(vc[k:] * vc[: len(v) - k])[same[k]].mean(0) for k in range(n_lags)], 1)  # (d, n_lags)
        np.testing.assert_allclose(state[f"gauss_{name}_mean"].numpy(), v.mean(0), rtol=0, atol=1e-5)
        got = state[f"gauss_{name}_acov"][:, :n_lags]
        np.testing.assert_allclose(got.numpy(), G.positive_definite(torch.from_numpy(raw)).numpy(), rtol=0, atol=1e-4)
        np.testing.assert_allclose(got[:, 0].numpy(), raw[:, 0], rtol=0.02)  # lag 0: the latents' variance


def test_fit_stores_the_statistics_of_the_training_latents(tiny):
    """The statistics of the model as it ends its epoch (``current_model_state``: the tiny fit runs no
    validation, so its autoencoder's running statistics move in training mode and the estimate is
    refreshed at the epoch's end); the checkpoint loads with them."""
    from eeg2fmri.fill import load_model

    current = torch.load(tiny["ckpt"], map_location="cpu", weights_only=False)["current_model_state"]
    model, _ = load_model(tiny["ckpt"])
    assert model.has_gaussian and model.regression_head is not None
    model.load_state_dict(current)
    _check_statistics(current, model, tiny["cache"])


# ------------------------------------------------------------------------------------------------
# eeg2fmri fill --method gaussian
# ------------------------------------------------------------------------------------------------


def _checkpoint_with(tiny, path, phi: float | None = None, drop: bool = False):
    """A copy of the tiny checkpoint whose latents are AR(1) ``phi`` (unit variance) in every dim, or,
    with ``drop``, without the Gaussian statistics (a checkpoint from before them)."""
    ck = torch.load(tiny["ckpt"], map_location="cpu", weights_only=False)
    for state in (ck["state_dict"], ck.get("current_model_state", {})):
        for key in [k for k in state if k.startswith("gauss_")]:
            if drop:
                del state[key]
            elif key.endswith("_acov"):
                state[key] = ar1_acov(phi, 1.0, state[key].shape[1], state[key].shape[0]).clone()
    torch.save(ck, path)
    return path


def _fill(ckpt, fmri, eeg, censor, out, method="gaussian"):
    path = fill_run(ckpt, fmri, eeg, censor, out, method=method, progress=False)
    return np.asarray(nib.load(path).dataobj)


def test_gaussian_fill_round_trip(tiny, tmp_path):
    before = _hashes(tiny["raw"], tiny["ckpt"], tiny["censor"])
    a = np.asarray(nib.load(tiny["fmri"]).dataobj)
    cens = _mask(CENSORED)
    b = _fill(tiny["ckpt"], tiny["fmri"], tiny["eeg"], tiny["censor"], tmp_path / "g.dtseries.nii")
    assert _hashes(tiny["raw"], tiny["ckpt"], tiny["censor"]) == before
    assert b.dtype == a.dtype and a[~cens].tobytes() == b[~cens].tobytes()
    lin = _fill(tiny["ckpt"], tiny["fmri"], None, tiny["censor"], tmp_path / "lin.dtseries.nii", method="linear")
    assert np.isfinite(b[cens]).all() and np.abs(b[cens] - lin[cens]).max() > 1e-3
    assert abs(float(b[cens].mean()) - float(a[~cens].mean())) < 1.0  # the run's units
    note = json.loads(nib.load(tmp_path / "g.dtseries.nii").header.matrix.metadata["eeg2fmri_fill"])
    assert note["method"] == "gaussian" and note["censored_frames"] == CENSORED and note["mean"].startswith("μ")
    # without --eeg: the training latents' mean, no EEG read
    c = _fill(tiny["ckpt"], tiny["fmri"], None, tiny["censor"], tmp_path / "noeeg.dtseries.nii")
    assert a[~cens].tobytes() == c[~cens].tobytes() and np.abs(c[cens] - b[cens]).max() > 1e-4


def test_gaussian_fill_in_the_runs_units(tiny, bold_scale, tmp_path):
    """The run with per-grayordinate std 50-500 and mean ~1000 (its z-scores those of the tiny run):
    its Gaussian fills, in its z-scores, are the tiny run's, grayordinate by grayordinate (a fill
    that forgot the run's std or mean would be off by 50-500 there)."""
    path, z, M, S = bold_scale
    cens = _mask(CENSORED)
    a = np.asarray(nib.load(tiny["fmri"]).dataobj, np.float64)
    fa = _fill(tiny["ckpt"], tiny["fmri"], tiny["eeg"], tiny["censor"], tmp_path / "a.dtseries.nii")
    fb = _fill(tiny["ckpt"], path, tiny["eeg"], tiny["censor"], tmp_path / "b.dtseries.nii")
    src = np.asarray(nib.load(path).dataobj)
    assert src[~cens].tobytes() == fb[~cens].tobytes()
    z_a = (fa[cens] - a[~cens].mean(0)) / a[~cens].std(0)  # (n_censored, V)
    np.testing.assert_allclose((fb[cens] - M) / S, z_a, rtol=0, atol=1e-3)
    spread = np.sqrt((((fb[cens] - M) / S) ** 2).mean(0))  # (V,) each grayordinate's fills in its z-scores
    assert 0.1 < np.median(spread) < 10, np.median(spread)


def test_gaussian_fill_moves_with_its_anchors(tiny, bold_scale, tmp_path):
    """Latents AR(1) phi in every dim (a checkpoint given those statistics), the uncensored frames
    around the gap 10-12 (7-9, 13-15) raised by c = 1 run z-score along the first decoded latent dim
    u: each gap frame 10 + i - 1 moves along u by the AR(1) bridge's weights on frames 9 and 13,
    w_9 + w_13 (Markov: the other raised frames do not enter), plus the share 1 - w_9 - w_13 of the
    rise of the run's own mean, which the fill's re-z-scoring adds back (6 of the 78 uncensored
    frames raised: 6/78)."""
    from eeg2fmri.data.cifti import write_dtseries
    from eeg2fmri.fill import load_model

    path, z, M, S = bold_scale
    model, _ = load_model(tiny["ckpt"])
    u = model.autoencoder.decoder.weight[:, 0].detach().double().numpy()  # (V,) in z-scores
    u /= np.sqrt((u**2).mean())
    raised = np.asarray(nib.load(path).dataobj, np.float64)  # (T, V)
    raised[AROUND_GAP] += u * S
    raised_path = write_dtseries(tmp_path / "raised.dtseries.nii", raised, 0.8, indices=TINY_INDICES)
    shift = len(AROUND_GAP) / (test_fill.T - len(CENSORED))  # the rise of the run mean, 6/78
    for phi in (0.95, 0.2):
        ckpt = _checkpoint_with(tiny, tmp_path / f"ar{phi}.ckpt", phi)
        f0, f1 = (
            _fill(ckpt, p, tiny["eeg"], tiny["censor"], tmp_path / f"{phi}_{i}.dtseries.nii")
            for i, p in enumerate([path, raised_path])
        )
        move = (f1[GAP].astype(np.float64) - f0[GAP]) / S  # (3, V) in the run's z-scores
        along = move @ u / (u @ u)  # (3,)
        n, i = 4, np.arange(1, 4)
        w = ((phi**i - phi ** (2 * n - i)) + (phi ** (n - i) - phi ** (n + i))) / (1 - phi ** (2 * n))  # (3,)
        np.testing.assert_allclose(along, w + shift * (1 - w), rtol=0, atol=0.02)


def test_gaussian_on_a_checkpoint_without_the_statistics_is_refused(tiny, tmp_path, capsys):
    """A checkpoint written before the statistics: it loads (strictly), InterRecon still fills with
    it, and --method gaussian is one line naming it and the way out; no output, inputs untouched."""
    from eeg2fmri.module import EEG2fMRIDiffusion

    old = _checkpoint_with(tiny, tmp_path / "old.ckpt", drop=True)
    assert not EEG2fMRIDiffusion.load_from_checkpoint(old, map_location="cpu").has_gaussian
    out = tmp_path / "out.dtseries.nii"
    before = _hashes(tiny["raw"], old, tiny["censor"])
    with pytest.raises(FillError, match=r"old\.ckpt: .*no statistics .*--method gaussian.*refit"):
        fill_run(old, tiny["fmri"], tiny["eeg"], tiny["censor"], out, method="gaussian", progress=False)
    args = ["fill", "--fmri", str(tiny["fmri"]), "--censor", str(tiny["censor"]), "--out", str(out)]
    line = cli_error(capsys, [*args, "--method", "gaussian", "--ckpt_path", str(old)])
    assert re.search(r"old\.ckpt: .*refit", line), line
    with pytest.raises(FillError, match=r"method gaussian \(the default\) needs --ckpt_path.*--method linear or cubic"):
        fill_run(None, tiny["fmri"], None, tiny["censor"], out, method="gaussian", progress=False)
    assert not out.exists()
    fill_run(
        old, tiny["fmri"], tiny["eeg"], tiny["censor"], out, num_inference_steps=2, progress=False, method="interrecon"
    )
    assert _hashes(tiny["raw"], old, tiny["censor"]) == before


def test_fill_help_lists_gaussian(capsys):
    with pytest.raises(SystemExit):
        main(["fill", "--help"])
    text = capsys.readouterr().out
    assert "gaussian" in text and "μ" in text
    assert re.search(r"--method \{[^}]*\}\s+gaussian, the default", text), text
    assert re.search(r"default: gaussian\)", text), text


def test_fill_without_a_method_is_the_gaussian_fill(tiny, tmp_path, capsys):
    """The fill closest to the recorded frames measured is the default (notes/interrecon.md): the command without --method
    writes what --method gaussian writes, and its note says so."""
    common = ["fill", "--fmri", str(tiny["fmri"]), "--censor", str(tiny["censor"])]
    common += ["--ckpt_path", str(tiny["ckpt"]), "--eeg", str(tiny["eeg"])]
    main([*common, "--out", str(tmp_path / "default.dtseries.nii")])
    main([*common, "--out", str(tmp_path / "gaussian.dtseries.nii"), "--method", "gaussian"])
    assert "filled with gaussian" in capsys.readouterr().out
    default, gaussian = (nib.load(tmp_path / f"{m}.dtseries.nii") for m in ("default", "gaussian"))
    np.testing.assert_array_equal(np.asarray(default.dataobj), np.asarray(gaussian.dataobj))
    assert json.loads(default.header.matrix.metadata["eeg2fmri_fill"])["method"] == "gaussian"


def test_an_old_cell_gets_the_statistics_a_fit_would_have_stored(tiny, tmp_path):
    """The fill study's repair of a cell fitted before the statistics: a copy of its checkpoint with
    them estimated on its cache for its weights, reused while newer than the checkpoint; a current
    checkpoint is used as is."""
    from eeg2fmri.experiments.fill_study import _with_gaussian
    from eeg2fmri.module import EEG2fMRIDiffusion

    old = _checkpoint_with(tiny, tmp_path / "old.ckpt", drop=True)
    copy = tmp_path / "fill" / "gaussian.ckpt"
    assert _with_gaussian(old, tiny["cache"], 4, copy) == copy
    repaired = torch.load(copy, map_location="cpu", weights_only=False)
    model = EEG2fMRIDiffusion.load_from_checkpoint(copy, map_location="cpu")
    _check_statistics(repaired["state_dict"], model, tiny["cache"])
    stats = [k for k in repaired["state_dict"] if k.startswith("gauss_")]
    assert len(stats) == 4 and all(
        torch.equal(repaired["current_model_state"][k].nan_to_num(), repaired["state_dict"][k].nan_to_num())
        for k in stats
    )
    stamp = copy.stat().st_mtime_ns
    assert _with_gaussian(old, tiny["cache"], 4, copy) == copy and copy.stat().st_mtime_ns == stamp
    assert _with_gaussian(tiny["ckpt"], tiny["cache"], 4, tmp_path / "unused.ckpt") == tiny["ckpt"]


def test_a_fit_resumes_from_a_checkpoint_without_the_statistics(tiny, tmp_path):
    """Resuming (with the EMA's two states, both loaded strictly) from a checkpoint written before
    the statistics: the fit estimates them at set-up and the next checkpoint holds them."""
    from tests.test_cli import TINY_MODEL

    old = _checkpoint_with(tiny, tmp_path / "old.ckpt", drop=True)
    root = tmp_path / "run"
    args = ["--data.data_path", str(tiny["cache"]), "--data.n_frames", "4", "--data.batch_size", "8"]
    args += ["--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", "false"]
    args += ["--trainer.logger", "false", "--evaluator.every_n_epochs", "1000", "--trainer.num_sanity_val_steps", "0"]
    main(["fit", *args, *TINY_MODEL, "--trainer.max_epochs", "2", "--ckpt_path", str(old)])
    ck = torch.load(root / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ck["epoch"] == 1
    for key in ("state_dict", "current_model_state"):
        assert G.valid_lags(ck[key]["gauss_z_acov"]) > 3 and torch.isfinite(ck[key]["gauss_r_mean"]).all()
