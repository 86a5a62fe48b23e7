"""The baselines: shapes, per-frame independence, training, closed forms against numpy, EEG features
against SciPy, configs composed after a subject config, and fit -> test through the real CLI."""

import inspect
import json
from pathlib import Path

import numpy as np
import pytest
import scipy.signal
import torch
import yaml
from lightning.pytorch import Trainer, seed_everything

from eeg2fmri import baselines as B
from eeg2fmri.baselines.framewise import r_mse_loss
from eeg2fmri.cli import main
from eeg2fmri.data.prepare import prepare
from eeg2fmri.module import EEG2fMRIDiffusion
from eeg2fmri.nn.baselines import features as feat
from eeg2fmri.nn.baselines.cnn_tag import TopographicalAttention
from tests.conftest import make_raw_subject

ROOT = Path(__file__).resolve().parents[1]
C, W, V = 8, 800, 20  # tiny montage (one TR at 1000 Hz), tiny region
TINY = {
    "CNNTC": dict(channels=8, n_blocks=3, latent_dim=16, decoder_channels=8, grid=4),
    "CNNTAG": dict(channels=4, n_blocks=2, latent_dim=16),
    "E2fNet": dict(unet_channels=8, base_channels=4),
    "E2fGAN": dict(unet_channels=8, base_channels=4),
    "MeanFrame": {},
    "Ridge": dict(alpha=10.0),
    "FIRRidge": dict(lags=(0, 0), eeg_context=(0, 0)),
}
NETWORKS = ["CNNTC", "CNNTAG", "E2fNet", "E2fGAN"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny convolutions run 10-100x slower with 2 OpenMP threads on a busy 2-core runner."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def make(name: str, n_frames: int = 3, **kw):
    torch.manual_seed(0)
    return getattr(B, name)(n_vertices=V, n_chans=C, n_times=W, n_frames=n_frames, **{**TINY[name], **kw})


def make_batch(b: int = 2, k: int = 3, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "eeg": (0.3 * torch.randn(b, k, C, W, generator=g)).clamp(-1, 1),
        "fmri": torch.randn(b, k, V, generator=g),
        "frame_index": torch.arange(b * k).reshape(b, k),
        "clip": torch.zeros(b, dtype=torch.long),
    }


def fit(model, batches: list[dict], epochs: int = 1) -> Trainer:
    trainer = Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, train_dataloaders=torch.utils.data.DataLoader(batches, batch_size=None))
    return trainer


# ----------------------------------------------------------------------------- shapes, independence


@pytest.mark.parametrize("K", [3, 10])
@pytest.mark.parametrize("name", list(TINY))
def test_output_shapes(name, K):
    model = make(name, n_frames=K).eval()
    batch = make_batch(3, K)
    out = model.predict_frames(batch, num_inference_steps=7, eta=0.5)  # sampling settings are ignored
    assert out.shape == (3, K, V) and out.dtype == torch.float32 and torch.isfinite(out).all()


@pytest.mark.parametrize("name", list(TINY))
def test_each_frame_depends_on_its_own_eeg_only(name):
    model = make(name, n_frames=4).eval()
    if name in ("Ridge", "FIRRidge"):  # give the (unsolved) regression weights so that it depends on the EEG
        g = torch.Generator().manual_seed(1)
        model.weight.copy_(torch.randn(model.weight.shape, generator=g))
    batch = make_batch(2, 4)
    out = model.predict_frames(batch)
    changed = {**batch, "eeg": batch["eeg"].clone()}
    changed["eeg"][0, 2] = (0.5 * torch.randn(C, W)).clamp(-1, 1)
    diff = (model.predict_frames(changed) - out).abs().amax(-1)  # (B, K)
    others = torch.ones_like(diff, dtype=torch.bool)
    others[0, 2] = False
    assert diff[others].max() <= 1e-5
    if name == "MeanFrame":  # the floor ignores the EEG altogether
        assert diff[0, 2] == 0
    else:
        assert diff[0, 2] > 1e-5


def test_wrong_montage_is_named():
    with pytest.raises(ValueError, match=r"4 channels x 800 samples; CNNTC was built for 8 x 800"):
        make("CNNTC")(torch.zeros(1, 3, 4, W))


# ----------------------------------------------------------------------------- training


@pytest.mark.parametrize("name", NETWORKS)
def test_a_few_steps_reduce_the_training_loss(name):
    seed_everything(0)
    kw = dict(lr=3e-3)
    if name.startswith("E2f"):
        kw.update(warmup_steps=0, cosine_schedule=False)
    model = make(name, **kw)
    batch = make_batch(4, 3)
    model.train()
    with torch.no_grad():
        before = model.loss_fn(model(batch["eeg"]), batch["fmri"]).item()
    fit(model, [batch] * 15)
    with torch.no_grad():
        after = model.loss_fn(model(batch["eeg"]), batch["fmri"]).item()
    assert after < 0.9 * before, (before, after)


def test_e2fgan_steps_both_networks():
    model = make("E2fGAN", warmup_steps=2)
    g0 = model.net.head.weight.detach().clone()
    d0 = model.discriminator.project.weight.detach().clone()
    trainer = fit(model, [make_batch(2, 3, seed=s) for s in range(3)])
    assert trainer.global_step == 6  # two optimizer steps per batch
    assert not torch.equal(model.net.head.weight, g0) and not torch.equal(model.discriminator.project.weight, d0)
    assert model.discriminator(torch.randn(5, V)).shape == (5,)


def test_r_mse_loss_matches_numpy():
    g = torch.Generator().manual_seed(0)
    pred, target = (
        torch.randn(2, 3, V, generator=g, dtype=torch.float64),
        torch.randn(2, 3, V, generator=g, dtype=torch.float64),
    )
    p, t = pred.reshape(-1, V).numpy(), target.reshape(-1, V).numpy()
    r = np.mean([np.corrcoef(a, b)[0, 1] for a, b in zip(p, t)])
    ref = 0.3 * (1 - r) + 0.7 * np.mean((p - t) ** 2)
    np.testing.assert_allclose(r_mse_loss(pred, target, 0.3, 0.7).item(), ref, rtol=1e-5)


def test_topographical_attention_mixes_electrodes_convexly():
    att = TopographicalAttention(C, 6)
    x = torch.randn(2, C, 6)
    out, scores = att(x)
    assert torch.allclose(scores.sum(-1), torch.ones(2, C))
    assert torch.allclose(out, torch.einsum("nij,njd->nid", scores, x), atol=1e-6)


# ----------------------------------------------------------------------------- closed forms


def test_mean_frame_is_the_numpy_mean_of_the_training_frames():
    batches = [make_batch(3, 3, seed=s) for s in range(4)]
    for b in batches:
        b["fmri"] += 0.5  # a mean worth finding
    model = make("MeanFrame")
    trainer = fit(model, batches, epochs=2)  # statistics restart every epoch: still one mean
    frames = np.concatenate([b["fmri"].reshape(-1, V).numpy() for b in batches]).astype(np.float64)
    np.testing.assert_allclose(model.mean_frame.numpy(), frames.mean(0), rtol=1e-6, atol=1e-7)
    assert trainer.global_step == 8  # each accumulated batch counts as a step (checkpoints need it)
    out = model.predict_frames(make_batch(2, 5))
    assert torch.equal(out, model.mean_frame.expand(2, 5, V))


def test_ridge_equals_numpy_solve_on_the_same_features():
    batches = [make_batch(4, 3, seed=s) for s in range(6)]  # 72 frames, 40 features
    model = make("Ridge")
    fit(model, batches)
    X = np.concatenate([model.features(b["eeg"]).reshape(-1, 5 * C).numpy() for b in batches]).astype(np.float64)
    Y = np.concatenate([b["fmri"].reshape(-1, V).numpy() for b in batches]).astype(np.float64)
    mu, sd = X.mean(0), X.std(0)
    Xs = (X - mu) / sd
    W_ref = np.linalg.solve(Xs.T @ Xs + 10.0 * np.eye(Xs.shape[1]), Xs.T @ (Y - Y.mean(0)))
    np.testing.assert_allclose(model.weight.numpy(), W_ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(model.bias.numpy(), Y.mean(0), atol=1e-6)
    test = make_batch(2, 3, seed=99)
    Xt = (model.features(test["eeg"]).reshape(-1, 5 * C).numpy() - mu) / sd
    pred = model.predict_frames(test).reshape(-1, V).numpy()
    np.testing.assert_allclose(pred, Xt @ W_ref + Y.mean(0), rtol=1e-4, atol=1e-4)


def _fir_store(seed: int = 0) -> dict:
    """55 frames in three segments (two training clips of 20 frames, one validation clip of 15)."""
    g = torch.Generator().manual_seed(seed)
    clip = torch.tensor([0] * 20 + [1] * 20 + [2] * 15)
    return {
        "eeg": (0.3 * torch.randn(55, C, W, generator=g)).clamp(-1, 1),
        "fmri": torch.randn(55, V, generator=g),
        "frame_clip": clip,
        "segment": clip.clone(),
    }


def _fir_reference(store: dict, lags: tuple[int, int], alphas: list[float]):
    """Numpy FIR ridge on unique frames: lagged z-scored log band power (0 + indicator where the lag
    leaves the clip), every column standardised, centred ridge per grayordinate, penalty per
    grayordinate by validation MSE."""
    bp = feat.BandPower(1000.0, W)(store["eeg"]).reshape(55, -1).double().numpy()  # (T, Fb) log power
    seg, y = store["segment"].numpy(), store["fmri"].double().numpy()
    train, val = np.flatnonzero(seg < 2), np.flatnonzero(seg == 2)
    m, s = bp[train].mean(0), bp[train].std(0)

    def design(rows):
        cols = []
        for lag in range(lags[0], lags[1] + 1):
            src = rows + lag
            ok = (src >= 0) & (src < 55)
            ok[ok] &= seg[src[ok]] == seg[rows[ok]]
            cols += [np.where(ok[:, None], (bp[np.clip(src, 0, 54)] - m) / s, 0.0), (~ok)[:, None].astype(float)]
        return np.concatenate(cols, 1)

    X, Xv = design(train), design(val)
    mx, my, sx = X.mean(0), y[train].mean(0), X.std(0)
    sx[sx < 1e-12] = 1.0  # the own window's indicator is constant
    Xc, Xvc = (X - mx) / sx, (Xv - mx) / sx
    Ws = [np.linalg.solve(Xc.T @ Xc + a * np.eye(X.shape[1]), Xc.T @ (y[train] - my)) for a in alphas]
    mse = np.stack([((Xvc @ Wa + my - y[val]) ** 2).mean(0) for Wa in Ws])  # (A, V)
    best = mse.argmin(0)
    Wref = np.stack([Ws[b][:, v] for v, b in enumerate(best)], 1) / sx[:, None]  # in unscaled design units
    return Wref, my, np.asarray(alphas)[best], lambda rows: (design(rows) - mx) @ Wref + my


def test_fir_ridge_equals_numpy_on_unique_frames_with_penalties_chosen_on_validation():
    from eeg2fmri.data.datamodule import gather

    store, lags, alphas = _fir_store(), (-2, 1), [0.1, 10.0, 1000.0]
    K, ctx = 3, (2, 1)
    train_starts = [s for a, b in ((0, 20), (20, 40)) for s in range(a, b - K + 1)]  # stride 1: frames repeat
    batches = [gather(store, torch.tensor(train_starts[i : i + 4]), K, ctx) for i in range(0, len(train_starts), 4)]
    val = [gather(store, torch.tensor([40, 43, 46, 49, 52]), K, ctx)]
    model = B.FIRRidge(n_vertices=V, n_chans=C, n_times=W, n_frames=K, eeg_context=ctx, lags=lags, alphas=alphas)
    trainer = Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    loader = lambda bs: torch.utils.data.DataLoader(bs, batch_size=None)  # noqa: E731
    trainer.fit(model, train_dataloaders=loader(batches), val_dataloaders=loader(val))
    Wref, my, best, predict = _fir_reference(store, lags, alphas)
    assert len(set(best.tolist())) > 1  # the choice is per grayordinate, and it matters here
    np.testing.assert_array_equal(model.alpha.numpy(), best.astype(np.float32))
    np.testing.assert_allclose(model.weight.numpy(), Wref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(model.bias.numpy(), my, atol=1e-6)
    test = gather(store, torch.tensor([0, 17, 37]), K, ctx)  # clip edges: missing lags on both sides
    pred = model.predict_frames(test).reshape(-1, V).numpy()
    np.testing.assert_allclose(pred, predict(test["frame_index"].reshape(-1).numpy()), rtol=1e-4, atol=1e-4)


def test_fir_ridge_frame_k_depends_on_the_eeg_of_frames_k_plus_its_lags():
    model = B.FIRRidge(n_vertices=V, n_chans=C, n_times=W, n_frames=4, eeg_context=(3, 2), lags=(-3, 1))
    model.weight.copy_(torch.randn(model.weight.shape, generator=torch.Generator().manual_seed(1)))
    batch = make_batch(1, 3 + 4 + 2)  # EEG of P + K + F = 9 frames
    batch["fmri"], batch["eeg_mask"] = torch.zeros(1, 4, V), torch.ones(1, 9, dtype=torch.bool)
    out = model.predict_frames(batch)
    for j in range(9):  # EEG frame j is frame j - 3 of the window: it drives frames j - 3 - 1 .. j - 3 + 3
        changed = {**batch, "eeg": batch["eeg"].clone()}
        changed["eeg"][0, j] = (0.5 * torch.randn(C, W)).clamp(-1, 1)
        moved = (model.predict_frames(changed) - out).abs().amax(-1)[0] > 1e-5  # (K,)
        assert moved.tolist() == [j - 4 <= k <= j for k in range(4)], j


def test_fir_ridge_lags_beyond_the_eeg_context_are_refused():
    with pytest.raises(
        ValueError, match=r"lags=\[-8, 2\] need the EEG of 8 frame\(s\) before and 2 after.*--data.eeg_context \[8, 2\]"
    ):
        B.FIRRidge(n_vertices=V, n_chans=C, n_times=W, eeg_context=(0, 0), lags=(-8, 2))
    with pytest.raises(ValueError, match=r"lags\[0\] <= lags\[1\]"):
        B.FIRRidge(n_vertices=V, n_chans=C, n_times=W, eeg_context=(8, 2), lags=(1, -1))
    with pytest.raises(ValueError, match="positive penalties"):
        B.FIRRidge(n_vertices=V, n_chans=C, n_times=W, eeg_context=(8, 2), alphas=[0.0])


def test_ridge_features_are_log_band_power_per_channel():
    model = make("Ridge")
    eeg = make_batch(1, 2)["eeg"]
    f = model.features(eeg)  # (1, 2, 5 C)
    ref = np.log(feat.band_power(eeg.double(), 1000.0, 400).numpy())  # (1, 2, C, 5)
    np.testing.assert_allclose(f.numpy(), ref.reshape(1, 2, 5 * C), rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------- EEG features vs SciPy


def _signal(seed=0, shape=(3, W)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(shape[-1]) / 1000.0
    return rng.standard_normal(shape) + np.sin(2 * np.pi * 10.0 * t) + 0.5 * np.sin(2 * np.pi * 22.0 * t + 1.0)


@pytest.mark.parametrize("nperseg,step", [(400, 100), (250, 125), (201, 50)])
def test_spectrogram_matches_scipy(nperseg, step):
    x = _signal()
    _, _, ref = scipy.signal.spectrogram(x, 1000.0, window="hann", nperseg=nperseg, noverlap=nperseg - step, mode="psd")
    ours = feat.spectrogram(torch.from_numpy(x), 1000.0, nperseg, step).numpy()
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("nperseg", [400, 256, 201])
def test_welch_and_band_power_match_scipy(nperseg):
    x = _signal(1)
    freqs, ref = scipy.signal.welch(x, 1000.0, window="hann", nperseg=nperseg)
    np.testing.assert_allclose(feat.welch(torch.from_numpy(x), 1000.0, nperseg).numpy(), ref, rtol=1e-9, atol=1e-12)
    bands = {"alpha": (8.0, 13.0), "beta": (13.0, 30.0)}
    bp = feat.band_power(torch.from_numpy(x), 1000.0, nperseg, bands).numpy()
    df = freqs[1] - freqs[0]
    for i, (lo, hi) in enumerate(bands.values()):
        sel = (freqs >= lo) & (freqs < hi)
        np.testing.assert_allclose(bp[:, i], ref[:, sel].sum(1) * df, rtol=1e-9)
    # the 10 Hz sine puts its power in alpha
    assert (bp[:, 0] > bp[:, 1]).all()


def test_feature_modules_select_bins_and_keep_float32():
    x = torch.from_numpy(_signal(2, (2, 4, W))).float()
    spec = feat.Spectrogram(1000.0, W, segment_s=0.4, hop_s=0.1, fmax=75.0)
    assert (spec.n_freqs, spec.n_segments) == (30, 5) and float(spec.freqs[0]) == 2.5 and float(spec.freqs[-1]) == 75.0
    out = spec(x)  # (2, 4, F, S)
    assert out.shape == (2, 4, 30, 5) and out.dtype == torch.float32
    _, _, ref = scipy.signal.spectrogram(
        x.double().numpy(), 1000.0, window="hann", nperseg=400, noverlap=300, mode="psd"
    )
    np.testing.assert_allclose(out.numpy(), np.log(ref[..., 1:31, :]), rtol=1e-4, atol=1e-4)
    bp = feat.BandPower(1000.0, W)(x)  # (2, 4, 5)
    assert bp.shape == (2, 4, 5) and torch.isfinite(bp).all()
    with pytest.raises(ValueError, match="band 'delta'.*no frequency bin"):
        feat.BandPower(1000.0, W, segment_s=0.1)
    with pytest.raises(ValueError, match="segment_s = 1.0 s is 1000 samples"):
        feat.Spectrogram(1000.0, W, segment_s=1.0)


# ----------------------------------------------------------------------------- configs


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("baselines")
    return prepare(make_raw_subject(root / "raw"), root / "prep", progress=False)


CLASSES = {
    "cnn_tc": "CNNTC",
    "cnn_tag": "CNNTAG",
    "e2fnet": "E2fNet",
    "e2fgan": "E2fGAN",
    "mean": "MeanFrame",
    "ridge": "Ridge",
    "fir_ridge": "FIRRidge",
}


@pytest.mark.parametrize("config", sorted(CLASSES))
def test_baseline_config_composes_after_a_subject_config(config, tiny_cache, capsys):
    path = ROOT / "configs" / "baselines" / f"{config}.yaml"
    with pytest.raises(SystemExit) as e:
        main(
            [
                "fit",
                "--config",
                str(ROOT / "configs/sub1.yaml"),
                "--config",
                str(path),
                "--data.data_path",
                str(tiny_cache),
                "--print_config",
            ]
        )
    assert e.value.code in (0, None)
    cfg = yaml.safe_load(capsys.readouterr().out)
    cls = getattr(B, CLASSES[config])
    assert cfg["model"]["class_path"] == f"eeg2fmri.baselines.{cls.__name__}"
    assert cfg["trainer"]["default_root_dir"] == f"runs/baselines/{config}"
    # nothing of the subject config's diffusion model leaks in: every init arg is the baseline's own
    # default unless its config sets it
    own = yaml.safe_load(path.read_text())["model"].get("init_args", {})
    args = cfg["model"].get("init_args", {})
    for name, p in inspect.signature(cls).parameters.items():
        if name in ("n_vertices", "n_chans", "n_times", "n_frames", "eeg_context"):  # data facts, linked
            continue
        assert args.get(name) == own.get(name, p.default), name
    shared = set(inspect.signature(EEG2fMRIDiffusion).parameters) & set(inspect.signature(cls).parameters)
    assert shared - {"n_vertices", "n_chans", "n_times", "n_frames", "eeg_context", "sfreq", "optimizer"} <= set(own)


# ----------------------------------------------------------------------------- CLI round trip

CLI_TINY = {
    "CNNTC": [
        "--model.channels",
        "8",
        "--model.n_blocks",
        "3",
        "--model.latent_dim",
        "16",
        "--model.decoder_channels",
        "8",
        "--model.grid",
        "4",
    ],
    "CNNTAG": ["--model.channels", "4", "--model.n_blocks", "2", "--model.latent_dim", "16"],
    "E2fNet": ["--model.unet_channels", "8", "--model.base_channels", "4"],
    "E2fGAN": ["--model.unet_channels", "8", "--model.base_channels", "4"],
    "MeanFrame": [],
    "Ridge": [],
    "FIRRidge": ["--model.lags", "[-2, 1]"],
}
CLI_DATA = {"FIRRidge": ["--data.eeg_context", "[2, 1]"]}  # data options the model needs, at fit and test


@pytest.mark.parametrize("name", list(CLI_TINY))
def test_fit_then_test_through_the_cli(name, tiny_cache, tmp_path):
    common = [
        "--data.data_path",
        str(tiny_cache),
        "--data.n_frames",
        "3",
        "--data.batch_size",
        "8",
        "--trainer.default_root_dir",
        str(tmp_path),
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.logger",
        "false",
        *CLI_DATA.get(name, []),
    ]
    main(
        [
            "fit",
            *common,
            "--model",
            f"eeg2fmri.baselines.{name}",
            *CLI_TINY[name],
            "--trainer.max_epochs",
            "1",
            "--trainer.limit_train_batches",
            "3",
            "--trainer.limit_val_batches",
            "1",
        ]
    )
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    assert ckpt.exists() and (tmp_path / "checkpoints" / "best.ckpt").exists(), sorted(tmp_path.rglob("*"))
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert state["hyper_parameters"]["n_frames"] == 3
    if name == "MeanFrame":  # the closed-form solution, not the initial zeros, is in the checkpoint
        assert state["state_dict"]["mean_frame"].abs().sum() > 0
    if name == "Ridge":
        assert state["state_dict"]["weight"].abs().sum() > 0 and state["state_dict"]["feature_std"].ne(1).any()
    if name == "FIRRidge":  # penalties chosen on the validation frames, one per grayordinate
        assert state["state_dict"]["weight"].abs().sum() > 0 and (state["state_dict"]["alpha"] > 0).all()
    main(["test", *common, "--ckpt_path", str(ckpt)])
    res = json.loads((ckpt.parent / "test_metrics.json").read_text())
    assert res["method"] == name
    m = res["metrics"]["model"]
    keys = ["mse", "r", "cos", "identification_top1"] + ([] if name == "MeanFrame" else ["temporal_r_median"])
    for region in ("whole", "V1", "V1+A1"):
        for key in keys:
            assert np.isfinite(m[f"{region}/{key}"]), (region, key)
