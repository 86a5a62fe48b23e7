"""What a run leaves behind and prints: a resumable last.ckpt after every epoch and after a time-limited
stop, a weights-only best.ckpt, one folder per composition of configs, progress lines in a log, and
no noise from the libraries underneath."""

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from eeg2fmri.cli import main
from eeg2fmri.data.prepare import prepare
from eeg2fmri.module import EEG2fMRIDiffusion
from tests.cli_errors import cli_error
from tests.conftest import make_raw_subject

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "--model.latent_dim",
    "8",
    "--model.eeg_embed_dim",
    "8",
    "--model.eeg_channels",
    "4",
    "--model.eeg_blocks",
    "2",
    "--model.hidden_size",
    "16",
    "--model.depth",
    "1",
    "--model.num_heads",
    "2",
]
NOISE = ("Unable to serialize", "litlogger", "LeafSpec", "Please add the following callbacks", "dirpath has changed")


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    return prepare(make_raw_subject(root / "raw", n_volumes=60), root / "prep", progress=False)


def data(cache: Path) -> list[str]:
    return [
        "--data.data_path",
        str(cache),
        "--data.n_frames",
        "3",
        "--data.batch_size",
        "4",
        "--evaluator.num_inference_steps",
        "2",
        "--evaluator.num_samples",
        "1",
    ]


def fit(cache: Path, root: Path, *extra: str) -> Path:
    main(["fit", *data(cache), *TINY, "--trainer.default_root_dir", str(root), "--trainer.logger", "false", *extra])
    return root / "checkpoints" / "last.ckpt"


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def test_short_fit_without_validation_leaves_a_resumable_last_ckpt(cache, tmp_path, capsys):
    """max_epochs below check_val_every_n_epoch: no validation ever runs, last.ckpt still follows every
    epoch; it loads alone and resumes; progress is printed as plain lines (stderr is not a terminal)."""
    last = fit(
        cache,
        tmp_path,
        "--trainer.max_epochs",
        "2",
        "--trainer.check_val_every_n_epoch",
        "5",
        "--trainer.limit_train_batches",
        "3",
        "--trainer.log_every_n_steps",
        "1",
    )
    err = capsys.readouterr().err
    ckpt = load(last)
    assert (ckpt["epoch"], ckpt["global_step"]) == (1, 6) and ckpt["optimizer_states"]
    assert not (last.parent / "best.ckpt").exists()  # no validation, so no best
    EEG2fMRIDiffusion.load_from_checkpoint(last, map_location="cpu")
    # progress: where the checkpoints go, each epoch's first step with the loss, each epoch's end
    assert f"fit: 3 steps per epoch, 2 epochs; checkpoints in {last.parent}" in err
    assert "epoch 1/2  step 1/3 (total 1)  loss " in err and "epoch 2/2 done in " in err
    assert "\r" not in err
    # resume: one more epoch from where it stopped, without a warning that its own folder is not empty
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(
            cache,
            tmp_path,
            "--trainer.max_epochs",
            "3",
            "--trainer.check_val_every_n_epoch",
            "5",
            "--trainer.limit_train_batches",
            "3",
            "--trainer.enable_progress_bar",
            "false",
            "--ckpt_path",
            str(last),
        )
    ckpt = load(last)
    assert (ckpt["epoch"], ckpt["global_step"]) == (2, 9)
    assert not [w for w in caught if "exists and is not empty" in str(w.message)]


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "eeg2fmri", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def test_time_limited_fit_saves_where_it_stopped_and_prints_no_noise(cache, tmp_path, capsys):
    """A --trainer.max_time stop long before the first validation leaves last.ckpt; the log of fit and of
    the predict that reads it has progress lines and none of the libraries' noise."""
    common = [*data(cache), "--trainer.default_root_dir", str(tmp_path / "run"), "--trainer.logger", "false"]
    p = run(
        [
            "fit",
            *common,
            *TINY,
            "--trainer.max_time",
            "00:00:00:02",
            "--trainer.max_epochs",
            "1000",
            "--trainer.check_val_every_n_epoch",
            "1000",
            "--trainer.log_every_n_steps",
            "1",
        ],
        tmp_path,
    )
    log = p.stdout + p.stderr
    assert p.returncode == 0, log[-3000:]
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    ckpt = load(last)
    assert 0 < ckpt["global_step"] < 1000 and "Timer" in ckpt["callbacks"]
    assert "Time limit reached" in log and "step 1/" in log and "loss " in log
    assert not [n for n in NOISE if n in log], log
    assert "class_path: eeg2fmri.checkpoint.AtomicCheckpointIO" in (last.parent.parent / "config.yaml").read_text()
    # predict (as test) reads it without the fit's Timer, and from another folder name than the fit's
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        main(
            [
                "predict",
                *data(cache),
                "--trainer.logger",
                "false",
                "--trainer.limit_predict_batches",
                "1",
                "--writer.output_dir",
                str(tmp_path / "pred"),
                "--ckpt_path",
                str(last),
            ]
        )
    out = capsys.readouterr()
    said = [str(w.message) for w in caught] + [out.out + out.err]
    assert not [n for n in NOISE for s in said if n in s], said
    assert "predict: wrote 1 file(s)" in out.out
    # and it resumes (without a time limit) to the end of the next epoch
    fit(
        cache,
        tmp_path / "run",
        "--trainer.max_epochs",
        str(ckpt["epoch"] + 2),
        "--trainer.check_val_every_n_epoch",
        "1000",
        "--trainer.enable_progress_bar",
        "false",
        "--ckpt_path",
        str(last),
    )
    resumed = load(last)
    assert resumed["epoch"] == ckpt["epoch"] + 1 and resumed["global_step"] > ckpt["global_step"]


def test_best_checkpoint_holds_the_ema_weights_only(cache, tmp_path, capsys):
    last = fit(
        cache,
        tmp_path,
        "--trainer.max_epochs",
        "1",
        "--trainer.limit_train_batches",
        "3",
        "--trainer.limit_val_batches",
        "1",
        "--ema.decay",
        "0.5",
        "--trainer.enable_progress_bar",
        "false",
    )
    best = last.with_name("best.ckpt")
    b, a = load(best), load(last)
    for key in ("optimizer_states", "callbacks", "current_model_state", "averaging_state"):
        assert key not in b and key in a, key
    assert b["hyper_parameters"] == a["hyper_parameters"] and b["eeg2fmri_format"] == a["eeg2fmri_format"]
    assert "eeg2fmri_data" in b

    # the weights are the EMA average (as in last.ckpt's state_dict), not the current weights
    def same(x, y):  # bitwise, NaN equal to NaN (the Gaussian fill's autocovariance at lags tiny data lacks)
        return torch.equal(x.nan_to_num(), y.nan_to_num()) and torch.equal(x.isnan(), y.isnan())

    assert all(same(b["state_dict"][k], a["state_dict"][k]) for k in a["state_dict"])
    assert any(not same(a["state_dict"][k], a["current_model_state"][k]) for k in a["state_dict"])
    assert best.stat().st_size < 0.5 * last.stat().st_size
    main(
        [
            "predict",
            *data(cache),
            "--trainer.logger",
            "false",
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.limit_predict_batches",
            "1",
            "--ckpt_path",
            str(best),
        ]
    )  # restores as test does
    assert list((best.parent / "predictions").glob("*.dtseries.nii"))
    line = cli_error(
        capsys, ["fit", *data(cache), "--trainer.default_root_dir", str(tmp_path), "--ckpt_path", str(best)]
    )
    assert "best.ckpt: holds the model's weights only" in line and "last.ckpt" in line


def test_composed_configs_write_to_distinct_folders(cache, tmp_path, monkeypatch, capsys):
    """demo.yaml + baselines/ridge.yaml must not write into the demo's folder; a folder holding another
    model's run is refused, and left as it was."""
    monkeypatch.chdir(tmp_path)
    quick = [
        *data(cache),
        "--trainer.max_epochs",
        "1",
        "--trainer.limit_train_batches",
        "2",
        "--trainer.enable_progress_bar",
        "false",
    ]
    demo, ridge = str(ROOT / "configs" / "demo.yaml"), str(ROOT / "configs" / "baselines" / "ridge.yaml")
    main(["fit", "--config", demo, *quick, *TINY])
    main(["fit", "--config", demo, "--config", ridge, *quick])
    folders = sorted(p.parent.parent for p in (tmp_path / "runs").rglob("last.ckpt"))
    assert len(folders) == 2, folders
    classes = {f.relative_to(tmp_path / "runs").parts[0]: (f / "config.yaml").read_text() for f in folders}
    assert set(classes) == {"demo", "demo+ridge"}
    assert (
        "eeg2fmri.module.EEG2fMRIDiffusion" in classes["demo"] and "eeg2fmri.baselines.Ridge" in classes["demo+ridge"]
    )
    assert set(load(folders[0] / "checkpoints" / "last.ckpt")["state_dict"]) != set(
        load(folders[1] / "checkpoints" / "last.ckpt")["state_dict"]
    )
    # naming the demo's folder for another model on the command line: refused, nothing overwritten
    demo_dir = tmp_path / "runs" / "demo" / "latest"
    before = {p: p.read_bytes() for p in demo_dir.rglob("*") if p.is_file()}
    line = cli_error(
        capsys, ["fit", "--config", demo, "--config", ridge, *quick, "--trainer.logger.init_args.name", "demo"]
    )
    assert "runs/demo/latest holds a run of EEG2fMRIDiffusion" in line and "this run is Ridge" in line
    assert {p: p.read_bytes() for p in demo_dir.rglob("*") if p.is_file()} == before


def test_a_closed_form_baseline_fits_without_lightning_notices(cache, tmp_path):
    """FIR ridge steps no weights and has none for the EMA to average: Lightning prints no notice of
    either (the demo printed a missing optimizer and a replaced EMA callback for both ridge baselines)."""
    p = run(
        [
            "fit",
            "--config",
            str(ROOT / "configs" / "baselines" / "fir_ridge.yaml"),
            *data(cache),
            "--trainer.default_root_dir",
            str(tmp_path / "fir"),
            "--trainer.logger",
            "false",
        ],
        tmp_path,
    )
    log = p.stdout + p.stderr
    assert p.returncode == 0, log[-3000:]
    assert (tmp_path / "fir" / "checkpoints" / "last.ckpt").exists()
    quiet = ("configure_optimizers` returned `None`", "will override existing callbacks", *NOISE)
    assert not [n for n in quiet if n in log], log


def test_make_demo_shows_progress():
    """`make demo` must not switch the progress display off (a newcomer watched a silent terminal)."""
    text = (ROOT / "Makefile").read_text()
    recipe = text.split("\ndemo:", 1)[1].split("\n\n", 1)[0]
    assert "eeg2fmri fit" in recipe and "enable_progress_bar" not in recipe


def test_a_finished_command_leaves_no_subject_in_memory(cache, tmp_path):
    """reproduce runs many cells in one process: each command's subject data is freed when it ends."""
    import gc

    from eeg2fmri.data.datamodule import EEGfMRIDataModule, _Windows

    fit(cache, tmp_path / "a", "--trainer.max_steps", "1")
    gc.collect()
    assert not [o for o in gc.get_objects() if type(o) is EEGfMRIDataModule and o.store is not None]
    # the datasets of the run's loaders (which Lightning's trainer keeps) hold the same store
    assert not [o for o in gc.get_objects() if type(o) is _Windows and o.store]
