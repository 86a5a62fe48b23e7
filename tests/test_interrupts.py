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
