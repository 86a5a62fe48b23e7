"""The eeg2fmri command through main([...]): fit -> test -> predict on tiny data, configs, errors."""

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from eeg2fmri.cli import main
from eeg2fmri.data.prepare import prepare
from tests.cli_errors import cli_error
from tests.conftest import TINY_INDICES, make_raw_subject

CONFIGS = sorted(str(p) for p in Path(__file__).resolve().parents[1].glob("configs/**/*.yaml"))

TINY_MODEL = [
    "--model.latent_dim",
    "16",
    "--model.eeg_embed_dim",
    "16",
    "--model.eeg_channels",
    "8",
    "--model.eeg_blocks",
    "2",
    "--model.hidden_size",
    "32",
    "--model.depth",
    "1",
    "--model.num_heads",
    "2",
]


def common(cache: Path, root: Path) -> list[str]:
    return [
        "--data.data_path",
        str(cache),
        "--data.n_frames",
        "3",
        "--data.batch_size",
        "8",
        "--trainer.default_root_dir",
        str(root),
        "--trainer.enable_progress_bar",
        "false",
        "--evaluator.num_inference_steps",
        "4",
        "--trainer.logger",
        "false",
    ]


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    return prepare(make_raw_subject(root / "raw"), root / "prep", progress=False)


@pytest.fixture(scope="module")
def trained(tiny_cache, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("run")
    main(["fit", *common(tiny_cache, root), *TINY_MODEL, "--trainer.max_epochs", "2"])
    ckpts = sorted(root.rglob("last.ckpt"))
    assert ckpts, "fit wrote no last.ckpt"
    return ckpts[0]


def test_fit_test_predict_round_trip(trained, tiny_cache, tmp_path, capsys):
    ckpt = torch.load(trained, map_location="cpu", weights_only=False)
    hp = ckpt["hyper_parameters"]
    assert (hp["n_vertices"], hp["n_chans"], hp["n_times"], hp["n_frames"]) == (len(TINY_INDICES), 64, 800, 3)
    np.testing.assert_array_equal(ckpt["state_dict"]["grayordinates"].numpy(), TINY_INDICES)
    # test: rebuilt from the checkpoint alone (no --model.* arguments), metrics next to it
    capsys.readouterr()
    main(["test", *common(tiny_cache, tmp_path), "--ckpt_path", str(trained)])
    printed = capsys.readouterr().out
    assert "spatial r" in printed and "Test metric" not in printed  # the region table, not also Lightning's list
    res = json.loads((trained.parent / "test_metrics.json").read_text())
    m = res["metrics"]["model"]
    for region in ("whole", "V1", "V1+A1"):
        for key in ("mse", "r", "cos", "temporal_r_median", "identification_top1"):
            assert np.isfinite(m[f"{region}/{key}"]), (region, key)
    assert res["sampling"]["num_inference_steps"] == 4
    csv_rows = (trained.parent / "test_metrics.csv").read_text().strip().splitlines()
    # a row per region for the posterior mean and for one sample (no noise-free BOLD here: no ceiling)
    assert csv_rows[0].startswith("method,source,region,mse,mse_std,r") and len(csv_rows) == 1 + 3 + 3
    assert [r.split(",")[1] for r in csv_rows[1:]] == ["model"] * 3 + ["model_sample"] * 3
    assert res["estimator"].startswith("posterior mean") and "model_sample" in res["metrics"]
    # predict: one .dtseries.nii per run holding test clips, in BOLD units, input brain models
    out = tmp_path / "pred"
    main(["predict", *common(tiny_cache, tmp_path), "--ckpt_path", str(trained), "--writer.output_dir", str(out)])
    files = sorted(out.glob("*.dtseries.nii"))
    assert files
    img = nib.load(files[0])
    assert img.shape[1] == len(TINY_INDICES)
    assert img.header.get_axis(0).step == pytest.approx(0.8)
    data = np.asarray(img.dataobj)
    finite = np.isfinite(data).all(axis=1)
    assert finite.any() and abs(np.nanmean(data) - 1000) < 50  # de-normalised to the raw BOLD scale


def test_checkpoint_from_another_layout_is_refused(trained, tmp_path, capsys):
    other = prepare(
        make_raw_subject(tmp_path / "raw", indices=np.arange(0, 91_282, 300)), tmp_path / "prep", progress=False
    )
    line = cli_error(capsys, ["test", *common(other, tmp_path), "--ckpt_path", str(trained)])
    # refused before the data is loaded, by the layout the checkpoint holds
    assert re.search(r"last.ckpt: the model was trained on 457 grayordinates but .*sub_0001.h5 holds 305", line), line


@pytest.mark.parametrize(
    "config",
    CONFIGS,
    ids=lambda p: (
        Path(p).relative_to(Path(p).parents[1]).as_posix() if "ablation" in p or "baselines" in p else Path(p).name
    ),
)
def test_every_config_parses(config, capsys, tiny_cache):
    with pytest.raises(SystemExit) as e:
        main(["fit", "--config", config, "--data.data_path", str(tiny_cache), "--print_config"])
    assert e.value.code in (0, None)
    assert "class_path" in capsys.readouterr().out


def test_unknown_config_key_is_an_error(tmp_path, tiny_cache, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  init_args:\n    latent_dimm: 12\n")
    with pytest.raises(SystemExit) as e:
        main(["fit", "--config", str(bad), "--data.data_path", str(tiny_cache)])
    assert e.value.code != 0
    assert "latent_dimm" in capsys.readouterr().err


def test_python_m_help():
    out = subprocess.run(
        [sys.executable, "-m", "eeg2fmri", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for cmd in ("fit", "test", "predict", "simulate", "prepare"):
        assert cmd in out
    out = subprocess.run(
        [sys.executable, "-m", "eeg2fmri", "prepare", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "--shift_s" in out and "seconds" in out


def test_the_experiments_run_the_trainer_not_the_cli():
    """The arrows run one way (cli -> experiments -> trainer): nothing the cli runs imports it back."""
    package = Path(__file__).resolve().parents[1] / "eeg2fmri"
    for path in [package / "trainer.py", *(package / "experiments").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or "", *(f"{node.module}.{a.name}" for a in node.names)]
            else:
                continue
            assert "eeg2fmri.cli" not in names, path
