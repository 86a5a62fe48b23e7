"""The bad-input suite: corrupt inputs generated programmatically, each answered with a clear error
naming the file and what was expected (or a documented repair), never a traceback from deep inside
torch or h5py. (Other cases live beside the code they test: test_prepare.py, test_cifti.py,
test_datamodule.py, test_fill.py.)"""

import h5py
import numpy as np
import pytest
import torch

from eeg2fmri.checkpoint import CheckpointVersionError
from eeg2fmri.cli import main
from eeg2fmri.data.cifti import CiftiError, write_dtseries
from eeg2fmri.data.cinebrain import RawDataError, eeg_stem, fmri_path
from eeg2fmri.data.datamodule import CacheError, EEGfMRIDataModule
from eeg2fmri.data.prepare import prepare
from eeg2fmri.module import EEG2fMRIDiffusion
from tests.cli_errors import cli_error
from tests.conftest import TINY_INDICES, make_raw_subject


def _npy(subject, run):
    stem = eeg_stem(subject.parent, 1, run)
    return stem.with_name(stem.name + ".npy")


def test_truncated_hdf5_cache(raw_subject, tmp_path):
    cache = prepare(raw_subject, tmp_path / "prep", progress=False)
    raw = cache.read_bytes()
    cut = tmp_path / "cut.h5"
    cut.write_bytes(raw[: len(raw) // 3])
    with pytest.raises(CacheError, match=r"cut.h5: not a readable HDF5 cache \(truncated or corrupt"):
        EEGfMRIDataModule(str(cut))
    # a truncated cache in prepare's output folder is rebuilt, not trusted
    cache.write_bytes(raw[: len(raw) // 3])
    rebuilt = prepare(raw_subject, tmp_path / "prep", progress=False)
    with h5py.File(rebuilt) as h5:
        assert h5["fmri"].shape[1] == len(TINY_INDICES)


def test_wrong_eeg_dtype(raw_subject, tmp_path):
    npy = _npy(raw_subject, 1)
    np.save(npy, np.load(npy).astype(np.complex64))
    with pytest.raises(RawDataError, match=r"run-1_eeg.npy: dtype complex64; expected a float or integer array"):
        prepare(raw_subject, tmp_path / "prep", progress=False)


def test_inf_in_eeg(raw_subject, tmp_path):
    npy = _npy(raw_subject, 2)
    x = np.load(npy)
    x[60, 1234] = np.inf
    np.save(npy, x)
    with pytest.raises(RawDataError, match=r"channel \w+ has 1 NaN/Inf samples \(first at sample 1234"):
        prepare(raw_subject, tmp_path / "prep", progress=False)


def test_mismatched_tr_between_runs(raw_subject, tmp_path):
    write_dtseries(
        fmri_path(raw_subject.parent, 1, 2), np.ones((100, len(TINY_INDICES)), np.float32), 0.72, indices=TINY_INDICES
    )
    with pytest.raises(CiftiError, match=r"run-2.*TR 0.72 s; expected 0.8 s"):
        prepare(raw_subject, tmp_path / "prep", progress=False)


def test_zero_length_runs(raw_subject, tmp_path):
    npy = _npy(raw_subject, 1)
    np.save(npy, np.zeros((64, 0), np.float32))
    with pytest.raises(RawDataError, match="run-1_eeg.npy"):
        prepare(raw_subject, tmp_path / "prep", progress=False)
    make_raw_subject(raw_subject.parent.parent / "raw")
    write_dtseries(
        fmri_path(raw_subject.parent, 1, 1), np.ones((0, len(TINY_INDICES)), np.float32), 0.8, indices=TINY_INDICES
    )
    with pytest.raises((RawDataError, CiftiError), match=r"run-1.*0 frames"):
        prepare(raw_subject, tmp_path / "prep", progress=False)


def test_config_with_a_wrong_type(raw_subject, tmp_path, capsys):
    cache = prepare(raw_subject, tmp_path / "prep", progress=False)
    with pytest.raises(SystemExit) as e:
        main(["fit", "--data.data_path", str(cache), "--data.n_frames", "ten"])
    assert e.value.code != 0
    err = capsys.readouterr().err
    assert "n_frames" in err and "ten" in err and "Traceback" not in err


def test_checkpoint_from_another_version(raw_subject, tmp_path, capsys):
    ckpt = tmp_path / "old.ckpt"
    m = EEG2fMRIDiffusion(
        n_vertices=10,
        n_chans=4,
        n_times=16,
        n_frames=3,
        latent_dim=4,
        eeg_embed_dim=4,
        eeg_channels=4,
        eeg_blocks=1,
        hidden_size=8,
        depth=1,
        num_heads=2,
        eeg_features="conv",
    )
    torch.save(
        {
            "state_dict": m.state_dict(),
            "hyper_parameters": dict(m.hparams),
            "eeg2fmri_format": 0,
            "eeg2fmri_version": "0.0.1",
            "pytorch-lightning_version": "2.6.0",
        },
        ckpt,
    )
    with pytest.raises(
        CheckpointVersionError,
        match=r"checkpoint format 0 \(written by eeg2fmri 0.0.1\); this eeg2fmri .* reads format 2",
    ):
        EEG2fMRIDiffusion.load_from_checkpoint(ckpt, map_location="cpu")
    # a file that is not a checkpoint at all, and a truncated one, through the CLI
    cache = prepare(raw_subject, tmp_path / "prep", progress=False)
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint")
    assert "junk.ckpt: not a readable eeg2fmri checkpoint" in cli_error(
        capsys, ["test", "--data.data_path", str(cache), "--ckpt_path", str(junk)]
    )
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(ckpt.read_bytes()[:2000])
    assert "cut.ckpt: not a readable eeg2fmri checkpoint" in cli_error(
        capsys, ["test", "--data.data_path", str(cache), "--ckpt_path", str(cut)]
    )
    # with --debug, the error itself (and its traceback) reaches the terminal
    with pytest.raises(CheckpointVersionError, match=r"cut.ckpt: not a readable eeg2fmri checkpoint"):
        main(["test", "--debug", "--data.data_path", str(cache), "--ckpt_path", str(cut)])


def test_nan_run_in_fmri_frames(raw_subject, tmp_path):
    x = 1000 + np.random.default_rng(0).standard_normal((90, len(TINY_INDICES))).astype(np.float32)
    x[50:53] = np.nan  # a NaN run across every grayordinate (e.g. a dropped volume)
    write_dtseries(fmri_path(raw_subject.parent, 1, 2), x, 0.8, indices=TINY_INDICES)
    with pytest.raises(CiftiError, match=r"run-2.*NaN/Inf at volume 50"):
        prepare(raw_subject, tmp_path / "prep", progress=False)


def test_a_cli_error_is_one_line_with_exit_code_2(tmp_path, capsys, monkeypatch):
    """Through the real interpreter: one line on stderr, exit code 2, no traceback; EEG2FMRI_DEBUG=1
    (or --debug, see test_checkpoint_from_another_version) gives the traceback."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    junk = tmp_path / "junk.dtseries.nii"
    junk.write_bytes(b"not a nifti file at all" * 20)
    args = ["evaluate", "--pred", str(junk), "--truth", str(junk)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    env.pop("EEG2FMRI_DEBUG", None)
    p = subprocess.run([sys.executable, "-m", "eeg2fmri", *args], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"eeg2fmri: error: {junk}: cannot be read as CIFTI-2"), lines
    assert "Traceback" not in p.stderr and p.stdout == ""
    monkeypatch.setenv("EEG2FMRI_DEBUG", "1")
    with pytest.raises(CiftiError, match="cannot be read as CIFTI-2"):
        main(args)


def test_messages_use_plain_numbers(tmp_path):
    """numpy scalars inside tuples print as np.int64(0): messages convert them first."""
    import nibabel as nib
    from nibabel.cifti2 import cifti2_axes

    from eeg2fmri.data.cifti import read_dtseries, standard_brain_models

    std = standard_brain_models()
    bm = cifti2_axes.BrainModelAxis(
        name=["CIFTI_STRUCTURE_ACCUMBENS_LEFT"],
        voxel=np.zeros((1, 3), int),
        affine=std.affine,
        volume_shape=std.volume_shape,
    )
    series = cifti2_axes.SeriesAxis(0, 0.8, 2)
    nib.Cifti2Image(np.zeros((2, 1), np.float32), nib.Cifti2Header.from_axes((series, bm))).to_filename(
        tmp_path / "v.dtseries.nii"
    )
    with pytest.raises(
        CiftiError, match=r"\(CIFTI_STRUCTURE_ACCUMBENS_LEFT, voxel \(0, 0, 0\)\) is not in the standard"
    ) as e:
        read_dtseries(tmp_path / "v.dtseries.nii")
    assert "np." not in str(e.value)
