"""Distributed test metrics: 2 CPU processes (gloo, Lightning's ddp_spawn) give the values of 1 process.

The model is a tiny EEG2fMRIDiffusion with fixed random weights and an evaluation batch of one
window, so every window's DDIM sample is the same whichever rank draws it (the sampler's noise is
seeded per batch); what remains to agree is the metric reduction across ranks.
"""

import json
import os
import socket
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from eeg2fmri.callbacks import Evaluator
from eeg2fmri.data.datamodule import EEGfMRIDataModule
from eeg2fmri.data.prepare import prepare
from eeg2fmri.metrics import RegionMetrics
from eeg2fmri.module import EEG2fMRIDiffusion
from tests.conftest import make_raw_subject


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ddp")
    return prepare(make_raw_subject(root / "raw"), root / "prep", progress=False)


def _test_metrics(cache: Path, n_frames: int, devices: int, out: Path) -> dict:
    torch.manual_seed(0)
    dm = EEGfMRIDataModule(str(cache), n_frames=n_frames, batch_size=4, eval_batch_size=1)
    model = EEG2fMRIDiffusion(
        n_vertices=dm.n_vertices,
        n_chans=dm.n_chans,
        n_times=dm.n_times,
        n_frames=n_frames,
        latent_dim=16,
        eeg_embed_dim=16,
        eeg_blocks=2,
        eeg_channels=8,
        hidden_size=32,
        depth=1,
        num_heads=2,
    )
    with torch.no_grad():  # move off the adaLN-zero start, so predictions depend on the EEG
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp_spawn" if devices > 1 else "auto",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(out),
        callbacks=[Evaluator(num_inference_steps=3, results_dir=str(out))],
    )
    trainer.test(model, datamodule=dm)
    assert sorted(p.name for p in out.iterdir()) == ["test_metrics.csv", "test_metrics.json"]
    return json.loads((out / "test_metrics.json").read_text())


def _n_test_windows(cache: Path, n_frames: int) -> int:
    dm = EEGfMRIDataModule(str(cache), n_frames=n_frames)
    dm.setup()
    return len(dm.windows["test"])


def _assert_same_metrics(one: dict, two: dict) -> None:
    a, b = one["metrics"]["model"], two["metrics"]["model"]
    assert set(a) == set(b)
    for key in a:
        # sums over a different split of the windows: equal up to summation order (float32 per-grayordinate
        # correlations near 0 differ by ~1e-7 in absolute terms, so the bound is absolute)
        np.testing.assert_allclose(b[key], a[key], rtol=1e-6, atol=1e-6, equal_nan=True, err_msg=key)


def test_two_processes_give_the_single_process_metrics(cache, tmp_path):
    n_frames = 3
    n = _n_test_windows(cache, n_frames)
    assert n == 8  # even: DistributedSampler splits the windows 4 + 4 without padding
    one = _test_metrics(cache, n_frames, 1, tmp_path / "one")
    two = _test_metrics(cache, n_frames, 2, tmp_path / "two")
    m = two["metrics"]["model"]
    for region in ("whole", "V1", "V1+A1"):
        assert m[f"{region}/n_windows"] == n and m[f"{region}/identification_n_windows"] == n
        assert m[f"{region}/n_frames"] == n * n_frames
        assert np.isfinite(m[f"{region}/temporal_r_median"]) and np.isfinite(m[f"{region}/r"])
    _assert_same_metrics(one, two)


def test_two_processes_with_an_odd_number_of_windows(cache, tmp_path):
    n_frames = 5
    # Lightning's default DistributedSampler would pad 5 windows to 6 by repeating one; the
    # DataModule's evaluation loaders split them 3 + 2 instead
    assert _n_test_windows(cache, n_frames) == 5
    one = _test_metrics(cache, n_frames, 1, tmp_path / "one")
    two = _test_metrics(cache, n_frames, 2, tmp_path / "two")
    _assert_same_metrics(one, two)


def _windows() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(6, 3, 40, generator=g), torch.randn(6, 3, 40, generator=g)  # (B, K, V) x2


def _compute_with_an_empty_rank(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    metrics = RegionMetrics({"whole": None, "V1": torch.arange(20)}, n_vertices=40, max_features=None)
    if rank == 0:  # rank 1 scores no window
        metrics.update(*_windows())
    result = metrics.compute()
    if rank == 0:
        Path(out).write_text(json.dumps(result))
    dist.destroy_process_group()


def test_a_process_that_scored_no_window_takes_part_in_the_gather(tmp_path):
    """Its per-window states are empty tensors of their own dtype (float64, float16), not
    torchmetrics' float32 default: the gather goes through and gives the one-process result."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "two.json"
    mp.spawn(_compute_with_an_empty_rank, args=(port, str(out)), nprocs=2)
    one = RegionMetrics({"whole": None, "V1": torch.arange(20)}, n_vertices=40, max_features=None)
    one.update(*_windows())
    expected = one.compute()
    two = json.loads(out.read_text())
    assert list(two) == list(expected)
    np.testing.assert_array_equal([two[k] for k in expected], list(expected.values()), err_msg=str(two))
