"""The research scripts under ``tools/`` run on CI-sized data: each is started as a user would start
it (``python tools/X.py ...``) on a simulated, prepared subject and a checkpoint of a tiny default
model, so that a change in the package's internals that breaks one fails here, not in a later study.
What each prints is a research figure (notes/model.md); these tests check that it runs to the end
and prints its table, and, for ``extract_layout.py``, that it rebuilds the package's own layout."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from eeg2fmri.cli import main
from eeg2fmri.data.cifti import N_GRAYORDINATES, write_dtseries
from tests.test_runs import TINY

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ROOT / "tools"

pytestmark = pytest.mark.slow


def tool(name: str, *args: str, cwd: Path = ROOT) -> str:
    """Run ``tools/<name>`` with this interpreter; its stdout (the test fails with its stderr)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run(
        [sys.executable, str(TOOLS / name), *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=900
    )
    assert p.returncode == 0, f"tools/{name} failed:\n{p.stderr[-3000:]}"
    return p.stdout


@pytest.fixture(scope="module")
def ckpt(sim_prepared, tmp_path_factory) -> Path:
    """The default model (regression stage + residual prior), tiny, one epoch at K = 10."""
    root = tmp_path_factory.mktemp("tools_run")
    common = ["--config", str(ROOT / "configs/demo.yaml"), "--data.data_path", str(sim_prepared)]
    main(
        ["fit", *common, *TINY, "--data.n_frames", "10", "--trainer.max_epochs", "1"]
        + ["--trainer.logger", "false", "--trainer.default_root_dir", str(root)]
    )  # fmt: skip  (flag, value pairs)
    return root / "checkpoints" / "last.ckpt"


def test_cache_scripts_run(sim_prepared):
    out = tool("fir_gap.py", str(sim_prepared), "--k", "10")
    assert "FIR" in out or "fir" in out, out
    assert "test windows" in tool("projection_bootstrap.py", str(sim_prepared))
    assert tool("orthogonal_term.py", str(sim_prepared), "8", "10").strip()
    assert "dims generalise" in tool("latent_dims.py", str(sim_prepared), "--pca_frames", "60", "--max_dim", "32")


def test_cell_bootstrap_orders_two_predictions(sim_prepared, tmp_path):
    """Two cells' test predictions: the truth plus noise of std 0.5 (A) and 1.0 (B), on the same
    windows. B's MSE is above A's by about 0.75, its temporal r below, both beyond the interval."""
    import h5py

    with h5py.File(sim_prepared) as h5:
        y = h5["fmri"][:].astype(np.float32)  # (T, V)
    rows = np.arange(len(y) // 10 * 10).reshape(-1, 10)[:30]  # (30, 10)
    rng = np.random.default_rng(0)
    for name, std in (("a", 0.5), ("b", 1.0)):
        pred = y[rows] + std * rng.standard_normal(y[rows].shape).astype(np.float32)  # (30, 10, V)
        (tmp_path / name).mkdir()
        np.savez(tmp_path / name / "test_predictions.npz", pred=pred, frame_index=rows)
    out = tool("cell_bootstrap.py", str(sim_prepared), str(tmp_path / "a"), str(tmp_path / "b"), "--n", "50")
    import re

    def diff(kind: str) -> tuple[float, float, float]:  # B - A: mean over the resamples, 90 % interval
        line = next(line for line in out.splitlines() if line.startswith(f"  whole  {kind}"))
        m = re.search(r"B - A ([-+.\d]+)\s+90% \[([-+.\d]+), ([-+.\d]+)\]", line)
        assert m, out
        return tuple(float(v) for v in m.groups())

    mean, lo, hi = diff("MSE")
    assert 0.6 < lo < mean < hi < 0.9, out
    mean, lo, hi = diff("temporal r")
    assert lo < mean < hi < 0, out  # B's temporal r below A's across the whole interval


def test_checkpoint_scripts_run(ckpt, sim_prepared):
    assert "posterior mean" in tool("score_parts.py", str(ckpt), str(sim_prepared))
    assert "eps mse" in tool("paper_divergence.py", str(ckpt), str(sim_prepared))
    assert "x0 clipped" in tool("sampler_variants.py", str(ckpt), str(sim_prepared), "2", "noclip,clip")
    assert "DiT prior samples" in tool("prior_coupling.py", str(ckpt), str(sim_prepared))
    out = tool("interrecon_rows.py", str(ckpt), str(sim_prepared), "--n", "1,2", "--steps", "2")
    assert out.strip()
    out = tool("interrecon_estimators.py", str(ckpt), str(sim_prepared), "--n", "2", "--last", "1,2", "--steps", "3")
    rows = {line[:34].strip(): line[34:].split() for line in out.splitlines() if "  " in line}
    # x̂₀ of the last step alone is the final sample: the two rows must agree
    assert rows["RB last 1, 1 chain(s)"] == rows["mean of 1"] and rows["RB last 1, 2 chain(s)"] == rows["mean of 2"]
    assert rows["chain from x_T = 0"] != rows["mean of 1"], out


def test_model_experiment_runs(sim_prepared, tmp_path):
    out = tool(
        "model_experiment.py",
        "tiny",
        "--data",
        str(sim_prepared),
        "--base",
        str(ROOT / "configs/demo.yaml"),
        "--epochs",
        "1",
        *TINY,
        "--data.n_frames",
        "10",
        cwd=tmp_path,
    )  # fmt: skip  (flag, value pairs)
    assert "V1 temporal r" in out and (tmp_path / "runs/experiments/tiny/test_metrics.json").is_file()


def test_extract_layout_rebuilds_the_package_layout(tmp_path):
    """A full 91,282-grayordinate file written by the package holds the standard layout in its XML:
    the script reads it back into the same index arrays the package ships."""
    src = tmp_path / "one.dtseries.nii"
    write_dtseries(src, np.zeros((1, N_GRAYORDINATES), np.float32), 0.8)
    tool("extract_layout.py", str(src), str(tmp_path / "layout.npz"))
    with np.load(ROOT / "eeg2fmri/data/layout_91k.npz") as want, np.load(tmp_path / "layout.npz") as got:
        for key in ("structures", "offsets", "counts", "vertices_left", "vertices_right", "voxels_ijk", "volume_shape"):
            np.testing.assert_array_equal(got[key], want[key], err_msg=key)
        np.testing.assert_allclose(got["volume_affine"], want["volume_affine"])
