"""A resume that would silently drop changed options, and an output folder that cannot take the
test metrics, are refused through the real CLI before the work, with one line."""

import pytest

from tests.cli_errors import cli_error
from tests.test_runs import TINY, cache, data, fit  # noqa: F401 (cache: the module's prepared tiny subject, a fixture)


@pytest.fixture(scope="module")
def last_ckpt(cache, tmp_path_factory):  # noqa: F811
    return fit(cache, tmp_path_factory.mktemp("resume") / "run", "--trainer.max_epochs", "1")


def test_a_resume_with_changed_hyperparameters_is_refused(cache, last_ckpt, capsys):  # noqa: F811
    before = last_ckpt.read_bytes()
    args = ["fit", *data(cache), *TINY, "--model.hidden_size", "32", "--ckpt_path", str(last_ckpt)]
    line = cli_error(
        capsys, [*args, "--trainer.logger", "false", "--trainer.default_root_dir", str(last_ckpt.parents[1])]
    )
    assert str(last_ckpt) in line and "--model.init_args.hidden_size 16 -> 32" in line, line
    assert last_ckpt.read_bytes() == before


def test_the_same_options_resume(cache, last_ckpt, capsys):  # noqa: F811
    from eeg2fmri.cli import main

    root = last_ckpt.parents[1]
    main(
        ["fit", *data(cache), *TINY, "--ckpt_path", str(last_ckpt), "--trainer.max_epochs", "2"]
        + ["--trainer.logger", "false", "--trainer.default_root_dir", str(root)]
    )
    assert last_ckpt.is_file()


def test_an_unwritable_results_folder_is_refused_before_the_test(cache, last_ckpt, tmp_path, capsys):  # noqa: F811
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    line = cli_error(
        capsys,
        ["test", *data(cache), "--ckpt_path", str(last_ckpt), "--evaluator.results_dir", str(blocker / "res")]
        + ["--trainer.logger", "false", "--trainer.default_root_dir", str(tmp_path)],
    )
    assert str(blocker / "res") in line and "--evaluator.results_dir" in line, line
    assert "test metrics written" not in capsys.readouterr().out
    assert blocker.read_text() == "not a folder"


def test_outputs_that_cannot_be_written_are_refused_before_the_work(raw_subject, tmp_path, capsys):
    import numpy as np

    from eeg2fmri.data.cifti import write_dtseries
    from tests.conftest import TINY_INDICES

    a_file = tmp_path / "a_file"
    a_file.write_text("keep me")
    line = cli_error(capsys, ["prepare", "--subject_dir", str(raw_subject), "--out_dir", str(a_file)])
    assert f"--out_dir {a_file}: a file; expected the folder" in line, line
    line = cli_error(capsys, ["prepare", "--subject_dir", str(raw_subject), "--out_dir", str(a_file / "sub")])
    assert str(a_file / "sub") in line and "--out_dir with a writable folder" in line, line
    x = np.zeros((5, len(TINY_INDICES)), np.float32)
    pred = write_dtseries(tmp_path / "p.dtseries.nii", x, 0.8, indices=TINY_INDICES)
    line = cli_error(capsys, ["evaluate", "--pred", str(pred), "--truth", str(pred), "--out", str(a_file / "s.json")])
    assert str(a_file) in line and "--out with a writable folder" in line, line
    assert a_file.read_text() == "keep me"
