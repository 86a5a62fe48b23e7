"""The diffusion LightningModule, its sampling / InterRecon, the callbacks and interpolation refs."""

import numpy as np
import pytest
import torch
from lightning.pytorch import Trainer, seed_everything
from scipy.interpolate import CubicSpline

from eeg2fmri import diffusion as D
from eeg2fmri.callbacks import Evaluator, FiniteLossGuard
from eeg2fmri.data.datamodule import EEGfMRIDataModule
from eeg2fmri.ema import EMA
from eeg2fmri.interpolate import cubic_fill, linear_fill
from eeg2fmri.module import EEG2fMRIDiffusion

TINY = dict(
    latent_dim=16, eeg_embed_dim=16, eeg_channels=8, eeg_blocks=2, hidden_size=32, depth=1, num_heads=2, sfreq=100.0
)  # 64-sample windows: band power on 0.4 s segments at 100 Hz


def tiny_model(n_vertices=50, n_frames=4, **kw):
    return EEG2fMRIDiffusion(n_vertices=n_vertices, n_chans=4, n_times=64, n_frames=n_frames, **{**TINY, **kw})


def batch(B=3, K=4, V=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "eeg": torch.randn(B, K, 4, 64, generator=g),
        "fmri": torch.randn(B, K, V, generator=g),
        "frame_index": torch.arange(B * K).reshape(B, K),
        "clip": torch.zeros(B, dtype=torch.long),
    }


def test_loss_is_diffusion_plus_reconstruction_and_trains():
    seed_everything(0)
    m = tiny_model()
    b = batch()
    losses = m._losses(b, generator=torch.Generator().manual_seed(1))
    expected = (
        losses["diffusion"]
        + m.hparams.recon_weight * losses["recon"]
        + m.hparams.regression_weight * losses["regression"]
    )
    assert torch.allclose(losses["loss"], expected)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    first = None
    for _ in range(30):
        loss = m._losses(b, generator=torch.Generator().manual_seed(1))["loss"]
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.8 * first


@pytest.mark.parametrize("mask_rows", [[[1, 0, 0, 1]], [[0, 1, 0, 0]], [[1, 1, 0, 1]], [[0, 0, 1, 1]]])
def test_interrecon_returns_observed_frames_unchanged(mask_rows):
    m = tiny_model().eval()
    b = batch(B=1)
    mask = torch.tensor(mask_rows, dtype=torch.bool)
    out = m.sample(b["eeg"], num_inference_steps=5, observed=b["fmri"], observed_mask=mask)
    assert out.shape == b["fmri"].shape
    assert torch.equal(out[mask], b["fmri"][mask])  # bit for bit
    assert not torch.equal(out[~mask], b["fmri"][~mask])
    # time-travel and η > 0 keep anchors exact too; without the null space they are pasted
    out = m.sample(b["eeg"], num_inference_steps=5, eta=0.5, observed=b["fmri"], observed_mask=mask, time_travel=2)
    assert torch.equal(out[mask], b["fmri"][mask])
    out = m.sample(b["eeg"], num_inference_steps=5, observed=b["fmri"], observed_mask=mask, null_space=False)
    assert torch.equal(out[mask], b["fmri"][mask])


def test_interrecon_needs_an_anchor_and_a_gap():
    m = tiny_model().eval()
    b = batch(B=2)
    with pytest.raises(ValueError, match="no observed frame"):
        m.sample(b["eeg"], num_inference_steps=3, observed=b["fmri"], observed_mask=torch.zeros(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="every frame observed"):
        m.sample(b["eeg"], num_inference_steps=3, observed=b["fmri"], observed_mask=torch.ones(2, 4, dtype=torch.bool))


def test_sampling_is_seeded_and_guidance_changes_it():
    m = tiny_model(cond_drop_prob=0.1).eval()  # a conditioned DiT (the default is an unconditional prior)
    # make the DiT non-trivial (adaLN-zero starts at exactly zero output)
    for p in m.dit.parameters():
        p.data.normal_(0, 0.05)
    b = batch()
    a = m.sample(b["eeg"], num_inference_steps=4, seed=3)
    assert torch.equal(a, m.sample(b["eeg"], num_inference_steps=4, seed=3))
    assert not torch.equal(a, m.sample(b["eeg"], num_inference_steps=4, seed=4))
    assert not torch.allclose(a, m.sample(b["eeg"], num_inference_steps=4, seed=3, guidance_scale=3.0))


def test_callbacks_log_sampling_interrecon_and_linear(tmp_path, raw_subject):
    from eeg2fmri.data.prepare import prepare

    cache = prepare(raw_subject, tmp_path / "prep", progress=False)
    dm = EEGfMRIDataModule(str(cache), n_frames=4, batch_size=8)
    model = EEG2fMRIDiffusion(n_vertices=dm.n_vertices, n_chans=dm.n_chans, n_times=dm.n_times, n_frames=4, **TINY)
    ema = EMA(decay=0.9)
    trainer = Trainer(
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        callbacks=[Evaluator(num_inference_steps=3, max_val_batches=1), ema, FiniteLossGuard()],
        default_root_dir=tmp_path,
        limit_train_batches=3,
    )
    trainer.fit(model, dm)
    logged = trainer.callback_metrics
    for prefix in ("val_pred", "val_interrecon", "val_linear"):
        for region in ("whole", "V1", "V1+A1"):
            assert f"{prefix}/{region}/r" in logged and torch.isfinite(logged[f"{prefix}/{region}/mse"])
    # after fit, the module holds the EMA weights, which differ from the raw training weights
    trainer.save_checkpoint(tmp_path / "after.ckpt")  # state_dict: the average
    avg = torch.load(tmp_path / "after.ckpt", weights_only=True)["state_dict"]
    for name, p in model.named_parameters():
        assert torch.equal(p, avg[name])


def test_nan_loss_stops_training_naming_the_step(tmp_path, raw_subject):
    from eeg2fmri.data.prepare import prepare

    cache = prepare(raw_subject, tmp_path / "prep", progress=False)
    dm = EEGfMRIDataModule(str(cache), n_frames=4, batch_size=4)
    model = EEG2fMRIDiffusion(n_vertices=dm.n_vertices, n_chans=dm.n_chans, n_times=dm.n_times, n_frames=4, **TINY)
    original = model.training_step

    def poisoned(batch, batch_idx):
        loss = original(batch, batch_idx)
        return loss * float("nan") if model.global_step == 3 else loss

    model.training_step = poisoned
    trainer = Trainer(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        callbacks=[FiniteLossGuard(check_every_n_steps=5)],
        limit_val_batches=0,
        default_root_dir=tmp_path,
    )
    with pytest.raises(FloatingPointError, match=r"NaN/Inf at step 3 \(epoch 0\).*cache rows \["):
        trainer.fit(model, dm)


# ------------------------------------------------------------------ interpolation references


def test_linear_fill_matches_numpy_interp():
    rng = np.random.default_rng(0)
    x = torch.as_tensor(rng.standard_normal((5, 9, 7)), dtype=torch.float32)
    mask = torch.as_tensor(rng.random((5, 9)) < 0.4)
    mask[:, 4] = True
    out = linear_fill(x, mask).numpy()
    for b in range(5):
        obs = np.flatnonzero(mask[b].numpy())
        for v in range(7):
            ref = np.interp(np.arange(9), obs, x[b, obs, v].numpy())  # holds the ends, like ours
            np.testing.assert_allclose(out[b, :, v], ref, rtol=1e-6, atol=1e-6)
    assert torch.equal(linear_fill(x, mask)[mask], x[mask])


def test_cubic_fill_matches_scipy():
    rng = np.random.default_rng(1)
    x = torch.as_tensor(rng.standard_normal((2, 10, 3)), dtype=torch.float32)
    mask = torch.zeros(2, 10, dtype=torch.bool)
    mask[:, [1, 3, 6, 8]] = True
    out = cubic_fill(x, mask).numpy()
    obs = [1, 3, 6, 8]
    ref = CubicSpline(obs, x[0, obs].numpy(), axis=0)(np.arange(2, 8))
    np.testing.assert_allclose(out[0, 2:8], ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(out[0, 0], x[0, 1].numpy())  # before the first anchor: held
    np.testing.assert_array_equal(out[0, 9], x[0, 8].numpy())
    assert torch.equal(cubic_fill(x, mask)[mask], x[mask])


def test_ema_averages_with_the_warmed_up_decay(tmp_path):
    """After a fit the module holds the average: the first step's weights, then a lerp towards each
    step's weights by 1 - min(decay, (1 + n) / (10 + n)); integer buffers follow the module."""
    from lightning.pytorch import LightningModule
    from lightning.pytorch.callbacks import Callback
    from torch.utils.data import DataLoader, TensorDataset

    class Net(LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.BatchNorm1d(7))  # float and integer buffers

        def training_step(self, batch, batch_idx):
            return self.net(batch[0]).square().mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.5)

    class Weights(Callback):  # the weights each step left, which the average takes in
        seen: list = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.seen.append({k: v.clone() for k, v in pl_module.state_dict().items()})

    torch.manual_seed(0)
    model, weights, ema = Net(), Weights(), EMA(decay=0.6)
    trainer = Trainer(
        max_steps=6,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        callbacks=[weights, ema],
        default_root_dir=tmp_path,
    )
    trainer.fit(model, DataLoader(TensorDataset(torch.randn(48, 5)), batch_size=8))
    expected = dict(weights.seen[0])
    for n, w in enumerate(weights.seen[1:], start=1):
        for k, v in w.items():
            expected[k] = torch.lerp(expected[k], v, 1.0 - ema.decay_at(n)) if v.is_floating_point() else v
    for k, v in model.state_dict().items():  # exactly: the same lerp, the same decay in float64
        assert torch.equal(v, expected[k]), k  # counters follow the module (AveragedModel would average them)
    trainer.save_checkpoint(tmp_path / "ema.ckpt")
    assert int(torch.load(tmp_path / "ema.ckpt", weights_only=True)["averaging_state"]["n_averaged"]) == 6
    # the decay reached its cap (n = 5: (1 + 5) / (10 + 5) = 0.4 < 0.6, so not yet; n = 20: 0.6)
    assert ema.decay_at(5) == pytest.approx(0.4) and ema.decay_at(20) == 0.6


def test_ema_average_starts_as_the_module_after_its_setup(tmp_path):
    """A module's set-up hook fills a buffer (the default model's PCA start, ridge start, Gaussian
    statistics): the sanity check's validation, which runs on the average, sees it filled."""
    from lightning.pytorch import LightningModule
    from torch.utils.data import DataLoader, TensorDataset

    class Net(LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Linear(3, 1)
            self.register_buffer("stat", torch.full((2,), float("nan")))
            self.seen: list = []

        def setup(self, stage):
            self.stat.fill_(7.0)

        def training_step(self, batch, batch_idx):
            return self.net(batch[0]).square().mean()

        def validation_step(self, batch, batch_idx):
            self.seen.append(self.stat.clone())

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    data = DataLoader(TensorDataset(torch.randn(8, 3)), batch_size=4)
    model = Net()
    trainer = Trainer(
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        callbacks=[EMA(0.9)],
        num_sanity_val_steps=1,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, data, data)
    assert model.seen and all(torch.equal(v, torch.full((2,), 7.0)) for v in model.seen), model.seen


def test_training_losses_reach_the_logger_every_log_every_n_steps(tmp_path, raw_subject):
    """The losses are handed to Lightning only on the steps it writes (each self.log costs host
    time); the logger still gets train/loss, train/diffusion and train/recon at every such step."""
    from lightning.pytorch.loggers import Logger

    from eeg2fmri.data.prepare import prepare

    class Capture(Logger):
        name, version = "capture", 0
        rows: list = []

        @property
        def experiment(self):
            return None

        def log_hyperparams(self, *args, **kwargs):
            pass

        def log_metrics(self, metrics, step=None):
            self.rows.append((step, dict(metrics)))

    cache = prepare(raw_subject, tmp_path / "prep", progress=False)
    dm = EEGfMRIDataModule(str(cache), n_frames=4, batch_size=4)
    model = EEG2fMRIDiffusion(n_vertices=dm.n_vertices, n_chans=dm.n_chans, n_times=dm.n_times, n_frames=4, **TINY)
    from lightning.pytorch.callbacks import Callback

    class Losses(Callback):  # the loss each step returned, by its 0-based step index
        seen: dict = {}

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.seen[trainer.global_step - 1] = float(outputs["loss"])

    logger, losses = Capture(), Losses()
    trainer = Trainer(
        max_steps=7,
        log_every_n_steps=3,
        logger=logger,
        enable_checkpointing=False,
        callbacks=[losses],
        enable_progress_bar=False,
        limit_val_batches=0,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, dm)
    steps = [s for s, m in logger.rows if "train/loss" in m]
    assert steps == [2, 5]  # Lightning writes after steps 3 and 6 (0-based step index 2, 5)
    for s, m in logger.rows:
        if "train/loss" in m:  # that step's own loss, not a stale one from an earlier step
            assert {"train/diffusion", "train/recon"} <= set(m)
            assert m["train/loss"] == pytest.approx(losses.seen[s], rel=1e-6)


# ----------------------------------------------------------------------------- estimators


def _nonzero_dit(m):
    """adaLN-zero starts the DiT at exactly zero output; give it weights so that estimators differ."""
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in m.dit.parameters():
            p.copy_(0.2 * torch.randn(p.shape, generator=g))
    return m


@pytest.mark.parametrize("context", [(0, 0), (2, 1)])
def test_posterior_mean_is_x0_at_the_noisiest_step(context):
    from eeg2fmri import diffusion as D

    m = _nonzero_dit(tiny_model(eeg_context=context, cond_drop_prob=0.1, residual_cond=True)).eval()
    b = batch(B=2)
    b["eeg"] = torch.randn(2, 4 + sum(context), 4, 64, generator=torch.Generator().manual_seed(2))
    b["eeg_mask"] = torch.ones(2, 4 + sum(context), dtype=torch.bool)
    if context[0]:
        b["eeg_mask"][0, 0] = False  # a context frame outside the clip
    got = m.predict_frames(b, estimator="mean", num_samples=1, seed=3, num_inference_steps=5, eta=0.0)
    # by hand: x_T from the seed, one DiT call at n = N - 1 (v-parameterisation), x0, + mu, decode
    h, mu = m.encode_eeg(b["eeg"], b["eeg_mask"])
    x_T = torch.randn((2, 4, m.hparams.latent_dim), generator=torch.Generator().manual_seed(3))
    n = len(m.alphas_cumprod) - 1
    a = m.alphas_cumprod[n]
    v = m.dit(x_T, torch.full((2,), n), h, cond_mask=b["eeg_mask"], x_cond=mu)
    x0 = a.sqrt() * x_T - (1 - a).sqrt() * v  # the v-network's x0: sqrt(a) x_t - sqrt(1 - a) v
    expect = m.autoencoder.decoder(x0 + mu)
    assert torch.allclose(got, expect, atol=1e-4), (got - expect).abs().max()
    assert not torch.allclose(got, m.predict_frames(b, estimator="sample", seed=3, num_inference_steps=5), atol=1e-3)
    # the same x0 through the sampler's own formulas (eps from v, then x0 from eps)
    assert torch.allclose(D.predict_x0(x_T, D.eps_from_v(x_T, v, a), a), x0, atol=1e-3)


def test_an_unconditional_prior_samples_with_the_null_token():
    """cond_drop_prob = 1 (the default with the regression stage): the DiT saw only the null token
    in training, so sampling must not feed it EEG tokens it never saw; the EEG then reaches the
    frames through mu alone, and two EEG batches with the same mu give the same frames."""
    m = _nonzero_dit(tiny_model()).eval()
    assert m.hparams.cond_drop_prob == 1.0 and m.dit.latent_cond_embedder is None
    x_t = torch.randn(2, 4, m.hparams.latent_dim, generator=torch.Generator().manual_seed(0))
    t = torch.full((2,), 500)
    h1, h2 = torch.randn(2, 2, 4, m.hparams.eeg_embed_dim, generator=torch.Generator().manual_seed(1))
    assert torch.equal(m._eps(x_t, t, h1), m._eps(x_t, t, h2))
    v = m.dit(x_t, t, None)  # the null token everywhere
    assert torch.allclose(m._eps(x_t, t, h1), D.eps_from_v(x_t, v, m.alphas_cumprod[t]))
    cond = _nonzero_dit(tiny_model(cond_drop_prob=0.1)).eval()
    assert not torch.allclose(cond._eps(x_t, t, h1), cond._eps(x_t, t, h2))
    # its posterior mean is D(mu): mu + E[r], the prior's mean residual being 0 (no network call)
    b = batch(B=2)
    _, mu = m.encode_eeg(b["eeg"])
    assert m.mean_is_mu and not cond.mean_is_mu
    assert torch.equal(m.predict_frames(b, estimator="mean"), m.autoencoder.decode(mu))
    assert not torch.allclose(
        cond.predict_frames(b, estimator="mean"), cond.autoencoder.decode(cond.encode_eeg(b["eeg"])[1])
    )
    # training drops every window's EEG too: the loss does not depend on the EEG tokens' values
    b = batch(B=2)
    m.train()
    torch.manual_seed(0)
    a = m._losses(b)["diffusion"]
    torch.manual_seed(0)
    with torch.no_grad():
        for p in m.eeg_encoder.parameters():
            p.add_(1.0)
    assert torch.equal(a, m._losses(b)["diffusion"])


def test_mean_of_n_samples_is_their_average():
    m = _nonzero_dit(tiny_model()).eval()
    b = batch(B=2)
    kw = dict(num_inference_steps=4, eta=0.5)
    got = m.predict_frames(b, estimator="mean", num_samples=3, seed=5, **kw)
    expect = sum(m.sample(b["eeg"], seed=5 + i, **kw) for i in range(3)) / 3
    assert torch.allclose(got, expect, atol=1e-6)
    one = m.predict_frames(b, estimator="sample", seed=5, **kw)
    assert torch.equal(one, m.sample(b["eeg"], seed=5, **kw))


def test_estimator_options_are_checked():
    m = tiny_model().eval()
    b = batch(B=1)
    with pytest.raises(ValueError, match="estimator='median': expected 'mean' or 'sample'"):
        m.predict_frames(b, estimator="median")
    with pytest.raises(ValueError, match="num_samples=0: expected at least 1"):
        m.predict_frames(b, estimator="mean", num_samples=0)
    with pytest.raises(ValueError, match="estimator 'sample' draws one sample; got num_samples=2"):
        m.predict_frames(b, estimator="sample", num_samples=2)
    with pytest.raises(ValueError, match="evaluator.estimator='x0': expected 'mean' or 'sample'"):
        Evaluator(estimator="x0")
    with pytest.raises(ValueError, match="evaluator.num_samples=0: expected an integer >= 1"):
        Evaluator(num_samples=0)
    with pytest.raises(ValueError, match="evaluator.num_samples=3"):
        Evaluator(estimator="sample", num_samples=3)


def test_fir_head_design_is_what_forward_applies():
    from eeg2fmri.nn.regression import FIRHead

    head = FIRHead(n_features=5, latent_dim=3, before=2, after=1)
    g = torch.Generator().manual_seed(0)
    feats, mask = torch.randn(2, 7, 5, generator=g), torch.rand(2, 7, generator=g) > 0.3  # N = 2 + 4 + 1
    w, bias = torch.randn(4 * 6, 3, generator=g), torch.randn(3, generator=g)
    head.set_linear(w, bias)
    X = head.design(feats, mask)  # (2, 4, 24)
    assert X.shape == (2, 4, 24)
    assert torch.allclose(head(feats, mask), X @ w + bias, atol=1e-5)
    # frame k's lag l block holds EEG frame k + 2 + l: zeros and a missing flag where masked
    k, lag = 1, -2
    block = X[0, k, (lag + 2) * 6 : (lag + 3) * 6]
    src = k + 2 + lag
    assert torch.equal(block[:5], feats[0, src] * mask[0, src]) and block[5] == float(not mask[0, src])


def test_ridge_per_target_matches_numpy():
    from eeg2fmri.ridge import ridge_per_target

    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 8)) * np.array([1, 2, 3, 0.1, 1, 1, 5, 1]) + 3.0
    Y = X[:, :3] @ rng.standard_normal((3, 4)) + rng.standard_normal((60, 4))
    Xv, Yv = X[:15], Y[:15] + 0.5 * rng.standard_normal((15, 4))
    Xt, Yt = X[15:], Y[15:]
    mx, my, sd = Xt.mean(0), Yt.mean(0), Xt.std(0)
    Xc, Yc = Xt - mx, Yt - my
    alphas = [0.01, 1.0, 100.0]
    w, best = ridge_per_target(
        torch.from_numpy(Xc.T @ Xc),
        torch.from_numpy(Xc.T @ Yc),
        45,
        torch.tensor(alphas, dtype=torch.float64),
        torch.from_numpy(Xv - mx),
        torch.from_numpy(Yv - my),
    )
    Xs = Xc / sd
    sols = [np.linalg.solve(Xs.T @ Xs + a * np.eye(8), Xs.T @ Yc) / sd[:, None] for a in alphas]
    errs = np.stack([(((Xv - mx) @ W - (Yv - my)) ** 2).sum(0) for W in sols])
    pick = errs.argmin(0)
    np.testing.assert_allclose(
        w.numpy(), np.stack([sols[p][:, j] for j, p in enumerate(pick)], 1), rtol=1e-8, atol=1e-10
    )
    np.testing.assert_array_equal(best.numpy(), np.asarray(alphas)[pick])


def test_ridge_per_target_in_place_with_float16_targets_is_the_same_fit():
    """The whole-brain form (cxy overwritten, validation targets as float16 centred per chunk) gives
    the ridge of the float32 form: the same penalties and the same projected solution."""
    from eeg2fmri.ridge import ridge_per_target

    g = torch.Generator().manual_seed(0)
    X = torch.randn(80, 6, generator=g, dtype=torch.float64)
    Y = (
        X[:, :2] @ torch.randn(2, 30, generator=g, dtype=torch.float64)
        + torch.randn(80, 30, generator=g, dtype=torch.float64)
    ) * 3 + 2
    Y = Y.half().double()  # targets a float16 store holds exactly
    Xt, Yt, Xv, Yv = X[:60], Y[:60], X[60:], Y[60:]
    mx, my = Xt.mean(0), Yt.mean(0)
    cxx, cxy = (Xt - mx).T @ (Xt - mx), ((Xt - mx).T @ (Yt - my)).float()  # (6, 6), (6, 30)
    alphas, project = torch.tensor([0.1, 10.0, 1e3], dtype=torch.float64), torch.randn(30, 4, generator=g)
    w, best = ridge_per_target(cxx, cxy.clone(), 60, alphas, Xv - mx, (Yv - my).float(), project=project, chunk=7)
    w2, best2 = ridge_per_target(
        cxx, cxy, 60, alphas, Xv - mx, Yv.half(), project=project, chunk=7, y_center=my.float(), overwrite=True
    )
    assert len(set(best.tolist())) > 1  # the penalty differs between targets: the choice is tested
    torch.testing.assert_close(best2, best, rtol=0, atol=0)
    torch.testing.assert_close(w2, w)


def test_a_latent_of_training_noise_is_warned_about(caplog, monkeypatch):
    """A PCA start with more latent dims than the data's signal has: the fit's check names the
    latent_dim that fits (rank-3 signal in 400 grayordinates, 60 training frames, d = 16)."""
    g = torch.Generator().manual_seed(0)
    V, rank = 400, 3
    basis = torch.linalg.qr(torch.randn(V, rank, generator=g))[0].T  # (rank, V)

    def frames(n):
        return torch.randn(n, rank, generator=g) * 10.0 @ basis + torch.randn(n, V, generator=g)  # (n, V)

    class ValFrames:  # the one DataModule method the check reads
        def iter_frames(self, split, **kw):
            assert split == "val"
            x = frames(64)
            yield {"fmri": x[:, None]}  # (b, 1, V)

    model = tiny_model(n_vertices=V)
    model.autoencoder.init_from_data(frames(60))
    with caplog.at_level("WARNING", logger="eeg2fmri.module"):
        model._check_latent_dim(ValFrames(), torch.device("cpu"))
    assert "--model.init_args.latent_dim 3 fits this data" in caplog.text, caplog.text
    caplog.clear()
    small = tiny_model(n_vertices=V, latent_dim=3)  # every dim generalises: no warning
    small.autoencoder.init_from_data(frames(60))
    with caplog.at_level("WARNING", logger="eeg2fmri.module"):
        small._check_latent_dim(ValFrames(), torch.device("cpu"))
    assert "latent_dim" not in caplog.text
    # the paper's model as published keeps its d by design: a note naming the fitting d, once per process
    monkeypatch.setattr("eeg2fmri.module._published_d_noted", False)
    for _ in range(2):
        paper = tiny_model(n_vertices=V, train_autoencoder=True)
        paper.autoencoder.init_from_data(frames(60))
        with caplog.at_level("WARNING", logger="eeg2fmri.module"):
            paper._check_latent_dim(ValFrames(), torch.device("cpu"))
    assert caplog.text.count("keeps its published d by design") == 1, caplog.text
    assert "--model.init_args.latent_dim 3 would fit this data" in caplog.text


def test_the_ridge_start_is_the_ridge_of_the_whole_float64_matrices(sim_prepared):
    """The regression stage's start, accumulated in batches with float32 sums against float16
    frames, is the ridge of the whole training design and frames in float64 (penalties chosen on
    the validation frames), projected on the PCA start's latents: μ on the validation frames agrees."""
    from eeg2fmri.ridge import DEFAULT_ALPHAS, ridge_per_target

    dm = EEGfMRIDataModule(str(sim_prepared), n_frames=4, eeg_context=(2, 1))
    dm.setup("fit")
    facts = dict(n_vertices=dm.n_vertices, n_chans=dm.n_chans, n_times=dm.n_times)
    model = EEG2fMRIDiffusion(**facts, n_frames=4, eeg_context=(2, 1), **{**TINY, "sfreq": dm.sfreq, "latent_dim": 8})
    model.autoencoder.init_from_data(dm.train_frames_sample(4096))
    model._start_features(dm, torch.device("cpu"))
    model._start_regression(dm, torch.device("cpu"))

    @torch.no_grad()
    def stacked(split):  # every frame's design (n, F), fMRI (n, V) and the head's μ (n, d)
        parts = []
        for b in dm.iter_frames(split):
            h = model.eeg_encoder.features(b["eeg"], b["eeg_mask"])  # (b, N, Fe)
            x = model.regression_head.design(h, b["eeg_mask"])[:, 0].double()  # (b, F)
            parts.append((x, b["fmri"][:, 0].double(), model.regression_head(h, b["eeg_mask"])[:, 0]))
        return [torch.cat(p) for p in zip(*parts)]

    X, Y, _ = stacked("train")
    Xv, Yv, mu = stacked("val")
    mx, my = X.mean(0), Y.mean(0)  # (F,), (V,)
    A, c = (t.double() for t in model.autoencoder.latent_map())  # (d, V), (d,)
    alphas = torch.tensor(DEFAULT_ALPHAS, dtype=torch.float64)
    w, _ = ridge_per_target((X - mx).T @ (X - mx), (X - mx).T @ (Y - my), len(X), alphas, Xv - mx, Yv - my, project=A.T)
    ref = (Xv - mx) @ w + my @ A.T + c  # (n_val, d)
    assert float((mu.double() - ref).abs().max()) < 1e-3 * float(ref.abs().max())


def test_a_fixed_autoencoder_keeps_its_start_through_training(tmp_path, raw_subject):
    """With train_autoencoder False the latents stay those of the PCA start: no BatchNorm statistic
    moves in a fit without a sanity validation (where Lightning would otherwise train in the mode it
    found the module in)."""
    from lightning.pytorch.callbacks import Callback

    from eeg2fmri.data.prepare import prepare

    cache = prepare(raw_subject, tmp_path / "prep", progress=False)
    dm = EEGfMRIDataModule(str(cache), n_frames=4, batch_size=4)
    model = EEG2fMRIDiffusion(n_vertices=dm.n_vertices, n_chans=dm.n_chans, n_times=dm.n_times, n_frames=4, **TINY)
    model.autoencoder.train()  # as a freshly built module is
    seen = {}

    class Start(Callback):
        def on_train_start(self, trainer, pl_module):  # after setup's PCA start, before any step
            seen["start"] = {k: v.clone() for k, v in pl_module.autoencoder.state_dict().items()}

    trainer = Trainer(
        max_steps=5,
        logger=False,
        enable_checkpointing=False,
        callbacks=[Start()],
        enable_progress_bar=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, dm)
    for k, v in model.autoencoder.state_dict().items():
        torch.testing.assert_close(v, seen["start"][k], msg=k)
