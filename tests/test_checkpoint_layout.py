"""A checkpoint applies only to data of the grayordinates it was trained on, the layout itself and
not only its count: ``test``, ``predict`` and ``validate`` refuse it through the real CLI before the
data is loaded, and write nothing."""

from pathlib import Path

import numpy as np
import pytest

from eeg2fmri.cli import main
from eeg2fmri.data.prepare import prepare
from tests.cli_errors import cli_error
from tests.conftest import TINY_INDICES, make_raw_subject
from tests.test_runs import TINY


@pytest.fixture(scope="module")
def two_layouts(tmp_path_factory) -> tuple[Path, Path, Path]:
    """A tiny model fitted on every 200th grayordinate from 0, and a cache of every 200th from 1:
    the same count (457), other grayordinates."""
    root = tmp_path_factory.mktemp("layouts")
    shifted = TINY_INDICES + 1
    assert len(shifted) == len(TINY_INDICES) and shifted[-1] < 91_282
    trained = prepare(make_raw_subject(root / "raw0", n_volumes=60), root / "prep0", progress=False)
    other = prepare(make_raw_subject(root / "raw1", n_volumes=60, indices=shifted), root / "prep1", progress=False)
    run = root / "run"
    main(
        ["fit", "--data.data_path", str(trained), "--data.n_frames", "3", "--data.batch_size", "4", *TINY]
        + ["--trainer.max_epochs", "1", "--trainer.logger", "false", "--trainer.default_root_dir", str(run)]
    )
    return run / "checkpoints" / "last.ckpt", trained, other


@pytest.mark.parametrize("command", ["test", "predict", "validate"])
def test_a_checkpoint_of_other_grayordinates_is_refused(two_layouts, command, tmp_path, capsys):
    ckpt, _, other = two_layouts
    before = ckpt.read_bytes()
    out = tmp_path / "pred"
    line = cli_error(
        capsys,
        [command, "--data.data_path", str(other), "--data.n_frames", "3", "--ckpt_path", str(ckpt)]
        + ["--trainer.logger", "false", "--trainer.default_root_dir", str(tmp_path), "--writer.output_dir", str(out)]
        + ["--evaluator.results_dir", str(tmp_path / "res")],
    )
    assert str(ckpt) in line and str(other) in line and "other grayordinates" in line, line
    assert "column 0 is grayordinate 0, the data's is 1" in line, line
    assert not out.exists() and not (tmp_path / "res").exists()  # nothing scored, nothing written
    assert ckpt.read_bytes() == before


def test_the_same_layout_is_accepted(two_layouts, tmp_path):
    ckpt, trained, _ = two_layouts
    main(
        ["test", "--data.data_path", str(trained), "--data.n_frames", "3", "--ckpt_path", str(ckpt)]
        + ["--evaluator.num_inference_steps", "2", "--evaluator.num_samples", "1", "--trainer.logger", "false"]
        + ["--trainer.default_root_dir", str(tmp_path), "--evaluator.results_dir", str(tmp_path / "res")]
    )
    assert np.isfinite(
        __import__("json").loads((tmp_path / "res" / "test_metrics.json").read_text())["metrics"]["model"]["whole/mse"]
    )
