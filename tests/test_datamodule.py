"""EEGfMRIDataModule: windows, batches, region subsetting, both data paths."""

import h5py
import numpy as np
import pytest
import torch

from eeg2fmri.data.datamodule import CacheError, EEGfMRIDataModule, window_starts
from eeg2fmri.data.prepare import prepare
from eeg2fmri.data.regions import region_mask
from eeg2fmri.errors import OptionError
from tests.conftest import TINY_INDICES


@pytest.fixture
def cache(raw_subject, tmp_path):
    return prepare(raw_subject, tmp_path / "prep", progress=False)


def test_window_starts_never_cross_boundaries():
    clip = np.array([0] * 7 + [1] * 5 + [2] * 3)
    index = np.concatenate([np.arange(7), np.arange(20, 25), np.arange(40, 43)])
    index[4:] += 1  # a gap in clip 0 between rows 3 and 4
    split = np.zeros(15, int)
    s = window_starts(clip, index, split, 3)
    assert s.tolist() == [0, 1, 4, 7, 8, 9, 12]
    assert window_starts(clip, index, split, 3, stride=3).tolist() == [0, 4, 7, 12]
    assert window_starts(clip, index, split, 2, stride=2, include_tail=True).tolist() == [0, 2, 4, 5, 7, 9, 10, 12, 13]
    for st in s:
        assert len(set(clip[st : st + 3])) == 1 and np.all(np.diff(index[st : st + 3]) == 1)


@pytest.mark.parametrize("k", [3, 10])
def test_batches(cache, k):
    dm = EEGfMRIDataModule(str(cache), n_frames=k, batch_size=4)
    assert (dm.n_chans, dm.n_times, dm.n_vertices, dm.n_frames) == (64, 800, len(TINY_INDICES), k)
    dm.setup("fit")
    b = next(iter(dm.train_dataloader()))
    assert b["eeg"].shape == (4, k, 64, 800) and b["fmri"].shape == (4, k, len(TINY_INDICES))
    assert b["frame_index"].shape == (4, k) and b["clip"].shape == (4,)
    with h5py.File(cache) as h5:
        fmri, split, clip = h5["fmri"][:], h5["split"][:], h5["frame_clip"][:]
    for i in range(4):
        rows = b["frame_index"][i].numpy()
        np.testing.assert_array_equal(b["fmri"][i].numpy(), fmri[rows].astype(np.float32))
        assert np.all(split[rows] == 0) and np.all(clip[rows] == b["clip"][i].item())
    # evaluation windows: non-overlapping by default, only from their split
    for name, code in (("val", 1), ("test", 2)):
        w = dm.windows[name]
        assert np.all(np.diff(w) >= k) and np.all(split[w] == code)


def test_region_subsetting(cache):
    dm = EEGfMRIDataModule(str(cache), n_frames=3, region="V1+A1")
    expect = np.flatnonzero(region_mask("V1+A1")[TINY_INDICES])
    assert dm.n_vertices == len(expect)
    np.testing.assert_array_equal(dm.indices, TINY_INDICES[expect])
    dm.setup("test")
    b = next(iter(dm.test_dataloader()))
    with h5py.File(cache) as h5:
        full = h5["fmri"][:]
    np.testing.assert_array_equal(b["fmri"][0].numpy(), full[b["frame_index"][0].numpy()][:, expect].astype(np.float32))


def test_train_frames_sample_is_seeded_and_from_the_training_split(cache):
    """The frames a model starts from (the PCA): training frames only, distinct, in cache order,
    the same for the same seed (every DDP rank), all of them when fewer than asked."""
    dm = EEGfMRIDataModule(str(cache), n_frames=3, region="V1+A1")
    dm.setup("fit")
    with h5py.File(cache) as h5:
        fmri, split = h5["fmri"][:][:, dm.columns].astype(np.float32), h5["split"][:]
    train = np.flatnonzero(split == 0)
    x = dm.train_frames_sample(10, seed=3)  # (10, V)
    rows = [int(np.flatnonzero((fmri[train] == f).all(1))[0]) for f in x.float().numpy()]  # positions in train
    assert x.shape == (10, dm.n_vertices) and rows == sorted(set(rows))
    assert torch.equal(x, dm.train_frames_sample(10, seed=3)) and not torch.equal(x, dm.train_frames_sample(10, seed=4))
    np.testing.assert_array_equal(dm.train_frames_sample(10**6).float().numpy(), fmri[train])


def test_iter_frames_gives_each_frame_with_the_parts_asked_for(cache):
    """Every frame of a split once; the frame's own EEG window is the one inside its context, and the
    context's cache rows pick its windows; the frames as stored (float16) when asked, which a
    whole-brain start keeps at half the memory."""
    dm = EEGfMRIDataModule(str(cache), n_frames=3, eeg_context=(2, 1))
    dm.setup("fit")
    full = list(dm.iter_frames("val", batch_size=7))
    frame = list(dm.iter_frames("val", batch_size=7, eeg="frame", stored_dtype=True))
    bare = list(dm.iter_frames("val", batch_size=7, eeg="none"))
    index = list(dm.iter_frames("val", batch_size=7, eeg="rows"))
    rows = torch.cat([b["frame_index"][:, 0] for b in full])
    assert not torch.cat([b["eeg_mask"] for b in index]).all()  # some context windows lie outside their clip
    np.testing.assert_array_equal(rows.numpy(), np.flatnonzero(dm.split == 1))
    for a, b, c, i in zip(full, frame, bare, index):
        assert torch.equal(i["eeg_mask"], a["eeg_mask"])
        torch.testing.assert_close(dm.store["eeg"][i["eeg_rows"]].float() * i["eeg_mask"][..., None, None], a["eeg"])
        assert b["eeg"].shape[1] == 1 and torch.equal(a["eeg"][:, 2:3], b["eeg"])  # (b, 1, C, W): context P = 2
        assert b["fmri"].dtype == torch.float16 and torch.equal(b["fmri"].float(), a["fmri"])
        assert set(c) == {"fmri", "frame_index"} and torch.equal(c["fmri"], a["fmri"])


def test_device_gather_path_gives_the_same_batch(cache):
    dm = EEGfMRIDataModule(str(cache), n_frames=3, batch_size=5)
    dm.setup("fit")
    starts = torch.as_tensor(dm.windows["val"][:5])
    gathered = dm.on_after_batch_transfer(starts, 0)  # what the GPU path does after transfer
    plain = next(iter(dm.val_dataloader()))
    for key in ("eeg", "fmri", "frame_index", "clip"):
        assert torch.equal(gathered[key], plain[key])


def test_k_longer_than_every_clip(cache):
    dm = EEGfMRIDataModule(str(cache), n_frames=40)
    with pytest.raises(CacheError, match=r"n_frames=40 is longer than every clip of split 'train' \(longest: \d+"):
        dm.setup("fit")


def test_missing_or_corrupt_cache(tmp_path):
    with pytest.raises(FileNotFoundError, match="eeg2fmri prepare"):
        EEGfMRIDataModule(str(tmp_path / "none.h5"))
    (tmp_path / "bad.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 50)
    with pytest.raises(CacheError, match="bad.h5: not a readable HDF5 cache"):
        EEGfMRIDataModule(str(tmp_path / "bad.h5"))
    with h5py.File(tmp_path / "other.h5", "w") as h5:
        h5["fmri"] = np.zeros((3, 3))
    with pytest.raises(CacheError, match=r"lacks dataset\(s\) \['eeg'"):
        EEGfMRIDataModule(str(tmp_path / "other.h5"))


def test_gpu_memory_guard_falls_back_to_host_memory(cache, monkeypatch, caplog):
    """Too little free GPU memory: the subject stays in host memory, with a warning, instead of an
    out-of-memory error (the decision is tested here on CPU by faking the device's free memory)."""
    import logging

    dm = EEGfMRIDataModule(str(cache), n_frames=3, gpu_memory_fraction=0.5)
    dm.setup("fit")
    need = sum(v.numel() * v.element_size() for v in dm.store.values())
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (need, 4 * need))  # need > 0.5 * free
    with caplog.at_level(logging.WARNING):
        dm._move_store(torch.device("cuda", 0))
    assert "keeping the data in host memory and streaming batches" in caplog.text
    assert all(v.device.type == "cpu" for v in dm.store.values())
    # the streaming path then gathers on the host: the same batch as the plain path
    starts = torch.as_tensor(dm.windows["val"][:2])
    assert torch.equal(dm.on_after_batch_transfer(starts, 0)["fmri"], next(iter(dm.val_dataloader()))["fmri"][:2])


@pytest.mark.parametrize("fraction", [0.01, 0.5])
def test_train_fraction_keeps_the_first_whole_training_clips(cache, fraction):
    """A learning curve's data: the first training clips in recording order, whole, holding at least
    the fraction of the training frames; validation and test untouched; the PCA sample and the
    frame iterator see only the kept clips."""
    full = EEGfMRIDataModule(str(cache), n_frames=3)
    full.setup("fit")
    part = EEGfMRIDataModule(str(cache), n_frames=3, train_fraction=fraction)
    part.setup("fit")
    train_full, train_part = full.split == 0, part.split == 0
    assert train_part.sum() >= fraction * train_full.sum() and train_part.sum() < train_full.sum()
    kept = np.unique(full.frame_clip[train_part])
    assert (train_part == (train_full & np.isin(full.frame_clip, kept))).all()  # whole clips
    order = full.frame_clip[train_full][np.sort(np.unique(full.frame_clip[train_full], return_index=True)[1])]
    assert list(order[: len(kept)]) == sorted(kept, key=list(order).index)  # the first ones
    for split in ("val", "test"):
        np.testing.assert_array_equal(part.windows[split], full.windows[split])
    assert set(part.windows["train"]) < set(full.windows["train"])
    rows = np.concatenate([b["frame_index"][:, 0].numpy() for b in part.iter_frames("train")])
    np.testing.assert_array_equal(rows, np.flatnonzero(train_part))
    assert len(part.train_frames_sample(10_000)) == train_part.sum()


def test_train_fraction_out_of_range(cache):
    with pytest.raises(OptionError, match="--data.train_fraction"):
        EEGfMRIDataModule(str(cache), train_fraction=0.0)


def test_a_subject_that_does_not_fit_in_memory_is_refused_before_reading(cache, monkeypatch):
    import eeg2fmri.data.datamodule as dmod

    dm = EEGfMRIDataModule(str(cache), n_frames=3)
    with h5py.File(cache) as h5:
        need = h5["fmri"].size * h5["fmri"].dtype.itemsize + h5["eeg"].size * h5["eeg"].dtype.itemsize
    monkeypatch.setattr(dmod, "available_memory", lambda: need - 1)
    with pytest.raises(CacheError, match=r"sub_0001\.h5: this subject needs .* GiB .*--data\.region"):
        dm.setup("fit")
    assert dm.store is None
    monkeypatch.setattr(dmod, "available_memory", lambda: need)
    dm.setup("fit")  # exactly enough: loads
    assert dm.store is not None
