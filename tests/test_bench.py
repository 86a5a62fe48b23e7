"""eeg2fmri bench: runs on CPU at a tiny size, counts FLOPs right, times the same model as the module."""

import json
import math

import h5py
import numpy as np
import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from eeg2fmri.data.datamodule import EEGfMRIDataModule
from eeg2fmri.data.prepare import prepare
from eeg2fmri.experiments.bench import bench, format_table
from eeg2fmri.experiments.bench.cache import write_synthetic_cache
from eeg2fmri.experiments.bench.costs import sampler_flops, step_flops
from eeg2fmri.experiments.bench.harness import reference_networks
from eeg2fmri.losses import training_losses
from eeg2fmri.module import EEG2fMRIDiffusion
from tests.conftest import make_raw_subject

TINY = dict(
    latent_dim=32,
    eeg_embed_dim=16,
    eeg_blocks=3,
    eeg_channels=8,
    hidden_size=48,
    depth=2,
    num_heads=2,
    mlp_ratio=2.0,
    eeg_features="conv",
    regression=False,
    train_autoencoder=True,
    loss_weighting="eps",  # what the bench's reference trains
    cond_drop_prob=0.1,  # the paper's classifier-free guidance dropout (bench's PAPER_ARCHITECTURE)
)


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_bench_runs_on_cpu_and_writes_the_documented_keys(tmp_path):
    out = tmp_path / "sub" / "bench.json"
    r = bench(scale="ci", steps=2, warmup=1, out=str(out), device="cpu")
    assert r["device"] == "cpu" and r["scale"] == "ci" and r["compile"] == "none"
    for key in ("matmul_tflops", "copy_gbps"):
        assert _positive(r["ceilings"][key]), key
    for key in ("flops_per_step", "bytes_per_step", "flop_floor_ms", "byte_floor_ms", "floor_ms"):
        assert _positive(r["floors"][key]), key
    for key in ("bytes", "seconds", "load_gbps"):
        assert _positive(r["cache"][key]), key
    for row in ("reference", "lightning"):
        for key in ("ms_per_step", "ms_per_step_mean", "tflops", "gbps", "peak_memory_bytes"):
            assert _positive(r[row][key]), (row, key)
    assert "errors" not in r
    ae = r["ae_bf16"]  # bf16 autocast moves the reconstruction by ~1e-3 relative, far below its own error
    assert 1e-5 < ae["recon_rel_err"] < 2e-2 and ae["recon_rel_err"] < ae["recon_vs_data_rel_err"]
    for key in ("ratio_to_reference", "ema_update_ms", "ema_update_stock_ms"):
        assert _positive(r["lightning"][key]), key
    assert r["lightning"]["ema_device"] == "cpu"  # where the EMA callback keeps its average
    for key in ("frames_per_s", "seconds", "frames", "tflops", "peak_memory_bytes"):
        assert _positive(r["sampler"][key]), key
    c = r["config"]
    assert (c["n_vertices"], c["n_frames"], c["batch_size"], c["steps"], c["warmup"]) == (4565, 10, 32, 2, 1)
    assert r["sampler"]["frames"] == c["n_test_windows"] * 10 and r["sampler"]["num_inference_steps"] == 50
    # the JSON holds the same numbers; the table names every row
    saved = json.loads(out.read_text())
    assert saved["lightning"]["ms_per_step"] == pytest.approx(r["lightning"]["ms_per_step"])
    table = format_table(r)
    for text in ("reference (bare PyTorch)", "Lightning fit step", "frames/s", "cache load", "TFLOP/s"):
        assert text in table


def test_a_failing_section_is_recorded_and_the_rest_still_measured(tmp_path, monkeypatch):
    """A failure in one measurement (here the Lightning step) keeps what the others measured, in
    the returned dict, the JSON written and the table, and names the failed section."""
    import eeg2fmri.experiments.bench.run as B

    def broken(*args, **kwargs):
        raise RuntimeError("planted failure")

    monkeypatch.setattr(B, "bench_lightning", broken)
    out = tmp_path / "bench.json"
    r = bench(scale="ci", steps=2, warmup=1, out=str(out), device="cpu")
    assert r["errors"] == ["lightning"] and "planted failure" in r["lightning"]["error"]
    assert _positive(r["reference"]["ms_per_step"]) and _positive(r["sampler"]["frames_per_s"])
    saved = json.loads(out.read_text())
    assert saved["errors"] == ["lightning"] and _positive(saved["sampler"]["frames_per_s"])
    table = format_table(r)
    assert "Lightning fit step" in table and "FAILED: RuntimeError: planted failure" in table and "frames/s" in table


def test_step_and_sampler_flops_match_torch_flop_counter():
    """The analytic counts equal what the autograd graph executes (math attention, so that the
    counter sees the attention products as bmm)."""
    V, B, K = 300, 4, 5
    torch.manual_seed(0)
    m = EEG2fMRIDiffusion(n_vertices=V, n_frames=K, **TINY)
    hp = dict(m.hparams)
    batch = {"fmri": torch.randn(B, K, V), "eeg": torch.randn(B, K, 64, 800)}
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fc:
        training_losses(m.autoencoder, m.eeg_encoder, m.dit, None, m.alphas_cumprod, batch, hp)["loss"].backward()
    assert step_flops(V, B, K, hp)["total"] == fc.get_total_flops()
    m.eval()
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fc, torch.no_grad():
        m.sample(batch["eeg"], num_inference_steps=7)
    assert sampler_flops(B, K, V, hp, steps=7) == fc.get_total_flops()


@pytest.mark.parametrize("loss_weighting", ["eps", "v"])
def test_reference_trains_the_module_loss_from_the_module_weights(loss_weighting):
    """The bare-PyTorch reference starts from the module's initial weights (both built under seed 0)
    and its loss, computed on its own networks, is EEG2fMRIDiffusion._losses exactly, for either
    loss weighting."""
    V, B, K = 120, 3, 4
    torch.manual_seed(0)
    m = EEG2fMRIDiffusion(n_vertices=V, n_frames=K, **{**TINY, "cond_drop_prob": 0.5, "loss_weighting": loss_weighting})
    hp = dict(m.hparams)
    ae, enc, dit, ac = reference_networks(hp, V, K, torch.device("cpu"))
    for ref, mod in ((ae, m.autoencoder), (enc, m.eeg_encoder), (dit, m.dit)):
        want = mod.state_dict()
        assert ref.state_dict().keys() == want.keys()
        assert all(torch.equal(v, want[k]) for k, v in ref.state_dict().items())
    assert torch.equal(ac, m.alphas_cumprod)
    batch = {"fmri": torch.randn(B, K, V), "eeg": torch.randn(B, K, 64, 800)}
    torch.manual_seed(1)
    want = m.train()._losses(batch, generator=torch.Generator().manual_seed(3))
    torch.manual_seed(1)
    got = training_losses(ae, enc, dit, None, ac, batch, hp, generator=torch.Generator().manual_seed(3))
    assert got.keys() == want.keys() == {"loss", "diffusion", "recon"}
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=0)


def test_reference_refuses_an_architecture_it_does_not_build():
    hp = dict(EEG2fMRIDiffusion(n_vertices=50, n_frames=4, **{**TINY, "regression": True}).hparams)
    with pytest.raises(ValueError, match="paper's architecture"):
        reference_networks(hp, 50, 4, torch.device("cpu"))


def test_synthetic_cache_has_the_layout_prepare_writes(tmp_path):
    real = prepare(make_raw_subject(tmp_path / "raw", n_runs=1, n_volumes=40), tmp_path / "prep", progress=False)
    synth = write_synthetic_cache(tmp_path / "synthetic.h5", every=200, n_clips=10, clip_frames=12)
    with h5py.File(real) as a, h5py.File(synth) as b:
        assert set(b) >= set(a) - {"fmri_clean"}, set(a) - set(b)
        assert set(b.attrs) >= set(a.attrs), set(a.attrs) - set(b.attrs)
        for name in a:
            if name in b:
                assert a[name].dtype.kind == b[name].dtype.kind and a[name].ndim == b[name].ndim, name
        assert b["fmri"].dtype == np.float16 and b["eeg"].shape[1:] == (64, 800)
    dm = EEGfMRIDataModule(str(synth), n_frames=4, batch_size=2)
    dm.setup()
    assert dm.n_vertices == len(range(0, 91_282, 200))
    assert {k: len(v) > 0 for k, v in dm.windows.items()} == dict.fromkeys(dm.windows, True)
    assert len(dm.windows["test"]) == 2 * 3  # 2 test clips of 12 frames, non-overlapping windows of 4
