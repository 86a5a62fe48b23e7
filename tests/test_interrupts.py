"""A command stopped part-way leaves nothing half-written: Ctrl-C ends it with one line (exit 130)
and removes the file being written; the hidden temporary that a SIGKILL leaves behind is removed by
the next run (and only once it is stale: a live writer's is kept)."""

import os
import time

import pytest

from eeg2fmri.cli import main
from eeg2fmri.data import prepare as prepare_module


def hidden(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_ctrl_c_during_prepare_ends_with_one_line_and_no_partial_cache(raw_subject, tmp_path, monkeypatch, capsys):
    out = tmp_path / "prep"

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(prepare_module, "_write_cache", interrupted)
    with pytest.raises(SystemExit) as e:
        main(["prepare", "--subject_dir", str(raw_subject), "--out_dir", str(out), "--progress", "false"])
    assert e.value.code == 130
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert err[-1].startswith("eeg2fmri: interrupted") and "Traceback" not in "\n".join(err)
    assert not (out / "sub_0001.h5").exists() and hidden(out) == []


def test_a_killed_writers_temporary_is_removed_by_the_next_run(raw_subject, tmp_path):
    out = tmp_path / "prep"
    out.mkdir()
    stale, fresh = out / ".sub_0001.h5.k1ll3d00.tmp", out / ".sub_0001.h5.l1ve0000.tmp"
    for p in (stale, fresh):
        p.write_bytes(b"half a cache")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    main(["prepare", "--subject_dir", str(raw_subject), "--out_dir", str(out), "--progress", "false"])
    assert (out / "sub_0001.h5").is_file()
    assert hidden(out) == [fresh.name]  # the stale one is gone; a live writer's is left alone


def test_a_full_disk_during_the_final_write_ends_with_one_line(tmp_path, monkeypatch, capsys):
    """The OS refusing a write (ENOSPC here, read-only or over quota alike) is one line, exit 2."""
    import errno

    import numpy as np

    from eeg2fmri import evaluate as evaluate_module
    from eeg2fmri.data.cifti import write_dtseries
    from tests.cli_errors import cli_error
    from tests.conftest import TINY_INDICES

    x = np.random.default_rng(0).standard_normal((6, len(TINY_INDICES))).astype(np.float32)
    pred = write_dtseries(tmp_path / "p.dtseries.nii", x, 0.8, indices=TINY_INDICES)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "out" / "evaluate.json"))

    monkeypatch.setattr(evaluate_module, "_write", full)
    line = cli_error(capsys, ["evaluate", "--pred", str(pred), "--truth", str(pred), "--out", str(tmp_path / "out")])
    assert "evaluate.json: No space left on device" in line, line
    assert not (tmp_path / "out" / "evaluate.json").exists()
