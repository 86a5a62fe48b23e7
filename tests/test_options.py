"""Options out of range are refused through the real CLI before any work: exit code 2, one line
that names the option, its value and what is allowed, no traceback, nothing written."""

from pathlib import Path

import numpy as np
import pytest

from eeg2fmri.data.cifti import write_dtseries
from tests.cli_errors import cli_error
from tests.conftest import TINY_INDICES
from tests.test_runs import TINY, cache  # noqa: F401 (cache: the module's prepared tiny subject, a fixture)

TRAINER_CASES = [
    (["--data.n_frames", "0"], "--data.n_frames=0: expected an integer >= 1"),
    (["--data.batch_size", "0"], "--data.batch_size=0: expected an integer >= 1"),
    (["--data.train_stride", "-2"], "--data.train_stride=-2: expected an integer >= 1"),
    (["--model.latent_dim", "0"], "--model.init_args.latent_dim=0: expected an integer >= 1"),
    (["--model.num_heads", "3"], "--model.init_args.hidden_size=16: expected a multiple of num_heads=3"),
    (["--model.cond_drop_prob", "1.5"], "--model.init_args.cond_drop_prob=1.5: expected a probability in [0, 1]"),
    (["--model.lr", "0"], "--model.init_args.lr=0.0: expected a learning rate > 0"),
    (["--evaluator.num_inference_steps", "0"], "--evaluator.num_inference_steps=0: expected an integer >= 1"),
    (["--evaluator.eta", "-1"], "--evaluator.eta=-1.0: expected DDIM's eta >= 0"),
]


@pytest.mark.parametrize(("bad", "expected"), TRAINER_CASES, ids=[c[0][0] for c in TRAINER_CASES])
def test_trainer_options_out_of_range(cache, tmp_path, capsys, bad, expected):  # noqa: F811
    root = tmp_path / "run"
    args = ["fit", "--data.data_path", str(cache), "--data.n_frames", "3", *TINY, *bad]
    line = cli_error(capsys, [*args, "--trainer.logger", "false", "--trainer.default_root_dir", str(root)])
    assert expected in line, line
    assert not root.exists()


def test_fill_options_out_of_range(tmp_path, capsys):
    """Checked before any file is read: the paths need not exist."""
    base = ["fill", "--fmri", "run.dtseries.nii", "--censor", "c.tsv", "--out", str(tmp_path / "f.dtseries.nii")]
    assert "--num_inference_steps=0: expected an integer >= 1" in cli_error(
        capsys, [*base, "--num_inference_steps", "0"]
    )
    assert "--batch_size=0: expected an integer >= 1" in cli_error(capsys, [*base, "--batch_size", "0"])
    assert "--eta=-0.5: expected DDIM's eta >= 0" in cli_error(capsys, [*base, "--eta", "-0.5"])
    assert not list(tmp_path.iterdir())


def test_job_options_out_of_range(tmp_path, capsys):
    line = cli_error(capsys, ["simulate", "--out_dir", str(tmp_path / "raw"), "--subjects", "[-1]"])
    assert "subjects=[-1]: expected distinct subject numbers >= 1" in line
    assert not (tmp_path / "raw").exists()
    missing = tmp_path / "nope" / "test_metrics.json"
    line = cli_error(capsys, ["table", "--results", f"[{missing}]"])
    assert str(missing) in line and "not a readable test_metrics.json" in line
    x = np.zeros((5, len(TINY_INDICES)), np.float32)
    pred = write_dtseries(tmp_path / "p.dtseries.nii", x, 0.8, indices=TINY_INDICES)
    truth = write_dtseries(tmp_path / "t.dtseries.nii", x + 1, 0.8, indices=TINY_INDICES)
    before = {p: Path(p).read_bytes() for p in (pred, truth)}
    line = cli_error(capsys, ["evaluate", "--pred", str(pred), "--truth", str(truth), "--frames", "[2, 9]"])
    assert "frames [2, 9]: expected 0-based frame indices in 0..4" in line, line
    assert {p: Path(p).read_bytes() for p in (pred, truth)} == before


def test_a_cache_with_nan_frames_is_refused(cache, tmp_path, capsys):  # noqa: F811
    import shutil

    import h5py

    bad = tmp_path / "bad.h5"
    shutil.copy(cache, bad)
    with h5py.File(bad, "r+") as h5:
        x = h5["fmri"][7]
        x[3] = np.nan
        h5["fmri"][7] = x
        col3 = int(h5["indices"][3])
    before = bad.read_bytes()
    line = cli_error(
        capsys,
        ["fit", "--data.data_path", str(bad), "--data.n_frames", "3", *TINY]
        + ["--trainer.logger", "false", "--trainer.default_root_dir", str(tmp_path / "run")],
    )
    assert str(bad) in line and "'fmri' holds NaN/Inf in 1 frame(s), first at frame 7" in line, line
    assert f"grayordinate {col3} (column 3)" in line, line
    assert bad.read_bytes() == before and not (tmp_path / "run").exists()


def test_a_cifti_run_as_the_cache_is_named(tmp_path, capsys):
    run = write_dtseries(
        tmp_path / "run-1.dtseries.nii", np.zeros((4, len(TINY_INDICES)), np.float32), 0.8, indices=TINY_INDICES
    )
    line = cli_error(capsys, ["fit", "--data.data_path", str(run), "--trainer.default_root_dir", str(tmp_path / "r")])
    assert "a NIfTI / CIFTI image, not a prepared cache" in line and "eeg2fmri prepare" in line, line
    assert "delete" not in line


def test_a_cache_of_another_format_version_is_refused(cache, tmp_path, capsys):  # noqa: F811
    import shutil

    import h5py

    old = tmp_path / "old.h5"
    shutil.copy(cache, old)
    with h5py.File(old, "r+") as h5:
        h5.attrs["version"] = 99
    line = cli_error(capsys, ["fit", "--data.data_path", str(old), "--trainer.default_root_dir", str(tmp_path / "r")])
    assert str(old) in line and "cache format version 99" in line and "eeg2fmri prepare" in line, line
