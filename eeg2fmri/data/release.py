"""The CineBrain release as it is published, imported into the project's raw layout.

What a subject of the release holds (dataset page Fudan-fMRI/CineBrain, the authors' public code;
data/README.md says what is assumed where the release is silent)::

    sub-0001/dtseries/sub-0001_task-<task>_run-<r>_space-fsLR_den-91k_bold.dtseries.nii
    sub-0001/beh_data/sub_0001_<r>.csv             videoStartTime, videoStopTime; first row only
    sub-0001/EEG_preprocessed_data.tar             one .npy per fMRI frame, >= 64 x 800 (or unpacked)

The EEG is released preprocessed and already cut into one window per fMRI frame: the first 64
rows are EEG (the rest other signals, e.g. ECG), 800 samples at 1000 Hz (one TR); no channel names,
sampling-rate file or scanner triggers. The authors pair frame i of a run with window i, where
frame i is volume ``int((videoStartTime + 4) / 0.8) + 1 + i`` of the run (the 4 s hemodynamic shift
applied on the fMRI side), for ``int((videoStopTime + 4) / 0.8) - int((videoStartTime + 4) / 0.8)``
frames (:func:`authors_frames`).

:func:`import_cinebrain` writes each subject in the project's layout (``sub_0001/`` with
``dtseries/`` linked or copied, ``beh_data/`` holding the row the authors read, and ``eeg/`` holding
each run's windows as one (n_windows, n_chans, n_times) ``.npy`` whose sidecar names each window's
volume), so ``eeg2fmri prepare`` pairs every kept frame with exactly its released window.
:class:`ReleaseEEGWriter` and :func:`release_windows` write the same form (``eeg2fmri simulate
--form release``), so the import path runs end to end in CI.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import re
import shutil
import tarfile
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from eeg2fmri.data.cifti import atomic_write_text, load_header, remove_stale_temps, swap_in_dir
from eeg2fmri.data.cinebrain import CHANNELS_64, RawDataError, bids_task, fmri_name, read_ch_names, write_npy_eeg
from eeg2fmri.data.eeg import samples_per_tr

log = logging.getLogger(__name__)

EEG_NAME = "EEG_preprocessed_data"  # <name>.tar or <name>/ inside a release subject folder
_RUN_PART = re.compile(r"(?:^|[^A-Za-z0-9])run[-_](\d+)(?![0-9])", re.IGNORECASE)
_LAST_INT = re.compile(r"(\d+)(?!.*\d)")


def authors_frames(start_s: float, stop_s: float, shift_s: float = 4.0, tr: float = 0.8) -> tuple[int, int]:
    """The CineBrain authors' frames of a movie segment: (first volume, 0-based, and the number of
    frames). Frame i is volume ``int((start_s + shift_s) / tr) + 1 + i``; there are
    ``int((stop_s + shift_s) / tr) - int((start_s + shift_s) / tr)`` of them. The arithmetic is
    theirs (``dtseries2npy.py``), floating point included, so the pairing is exactly theirs; the TR
    is rounded to 1 µs first, so a header's float32 0.800000011920929 counts as their literal 0.8."""
    tr = round(float(tr), 6)
    first = int((start_s + shift_s) / tr) + 1
    return first, int((stop_s + shift_s) / tr) - int((start_s + shift_s) / tr)


# ---------------------------------------------------------------------------------------------
# The EEG windows: a tar archive or an unpacked folder, read member by member
# ---------------------------------------------------------------------------------------------


class _Windows:
    """The .npy windows of one subject, from ``<name>.tar`` (read with tarfile, never unpacked to
    disk) or an unpacked ``<name>/`` folder. ``names`` are member paths (posix, relative)."""

    def __init__(self, path: Path):
        self.path = path
        self._tar = None
        if path.is_dir():
            self.names = sorted(p.relative_to(path).as_posix() for p in path.rglob("*.npy"))
        else:
            try:
                self._tar = tarfile.open(path, "r:*")
                self._members = {m.name: m for m in self._tar.getmembers() if m.isfile() and m.name.endswith(".npy")}
            except (tarfile.TarError, OSError, EOFError) as e:
                raise RawDataError(f"{path}: cannot be read as a tar archive (truncated or corrupt? {e})") from e
            self.names = sorted(self._members)
        # AppleDouble files ("._0.npy", written by macOS tar beside every file) are not windows
        self.names = [n for n in self.names if not n.rsplit("/", 1)[-1].startswith("._")]

    def where(self, name: str) -> str:
        return f"{self.path}:{name}" if self._tar is not None else str(self.path / name)

    def load(self, name: str) -> np.ndarray:
        try:
            if self._tar is None:
                return np.load(self.path / name, allow_pickle=False)
            f = self._tar.extractfile(self._members[name])
            return np.load(io.BytesIO(f.read()), allow_pickle=False)
        except Exception as e:
            raise RawDataError(f"{self.where(name)}: cannot be read as a .npy array (truncated or corrupt? {e})") from e

    def close(self) -> None:
        if self._tar is not None:
            self._tar.close()


def parse_window_names(names: list[str], pattern: str | None, where) -> list[tuple[int | None, int, str]]:
    """(run or None, frame, name) of every window name. Default: the run is the ``run-<r>`` /
    ``run_<r>`` part of the path, the frame the last integer of the file name; ``pattern`` (a
    regex with named groups ``frame`` and optionally ``run``, searched in the path) overrides."""
    out = []
    if pattern is not None:
        try:
            rx = re.compile(pattern)
        except re.error as e:
            raise RawDataError(f"eeg_pattern={pattern!r}: not a valid regular expression ({e})") from None
        if "frame" not in rx.groupindex:
            raise RawDataError(
                f"eeg_pattern={pattern!r}: needs a named group (?P<frame>...) (and optionally (?P<run>...))"
            )
        for name in names:
            m = rx.search(name)
            if m is None:
                raise RawDataError(
                    f"{where(name)}: does not match eeg_pattern={pattern!r} ({len(names)} .npy windows found)"
                )
            try:
                run = int(m.group("run")) if "run" in rx.groupindex else None
                frame = int(m.group("frame"))
            except (TypeError, ValueError):
                raise RawDataError(
                    f"{where(name)}: eeg_pattern={pattern!r} groups run/frame must capture integers"
                ) from None
            out.append((run, frame, name))
        return out
    for name in names:
        runs = {int(r) for r in _RUN_PART.findall(name)}
        if len(runs) > 1:
            raise RawDataError(
                f"{where(name)}: the path names runs {sorted(runs)}; expected one run-<r> part (or --eeg_pattern)"
            )
        stem = name.rsplit("/", 1)[-1].removesuffix(".npy")
        m = _LAST_INT.search(stem)
        if m is None:
            raise RawDataError(f"{where(name)}: no frame index (an integer) in the file name; set --eeg_pattern")
        if not runs:
            raise RawDataError(
                f"{where(name)}: no run-<r> / run_<r> part in the path. If the windows are numbered across the "
                "whole recording, say so with --eeg_pattern '(?P<frame>\\d+)\\.npy$' (runs then follow in order, each "
                "taking its number of frames); else give the run with a (?P<run>...) group"
            )
        out.append((runs.pop(), int(m.group(1)), name))
    return out


# ---------------------------------------------------------------------------------------------
# Import
# ---------------------------------------------------------------------------------------------


@dataclass
class _ReleaseRun:
    run: int
    task: str
    fmri: Path
    beh: Path
    n_volumes: int
    tr: float
    start: float
    stop: float
    first: int  # first volume of the authors' frames
    n_frames: int  # the authors' frame count


def find_release_subject(release_dir: Path, subject: int) -> Path:
    """``release_dir/sub-0001`` (as published) or ``release_dir/sub_0001`` (the authors' scripts)."""
    for name in (f"sub-{subject:04d}", f"sub_{subject:04d}"):
        if (release_dir / name).is_dir():
            return release_dir / name
    if not release_dir.is_dir():
        raise RawDataError(f"{release_dir}: release folder not found")
    there = sorted(p.name for p in release_dir.iterdir() if p.name.startswith("sub"))[:6]
    raise RawDataError(
        f"{release_dir}: no folder sub-{subject:04d} (or sub_{subject:04d}) for subject {subject}; found {there or 'none'}"
    )


def _release_runs(folder: Path, subject: int, shift_s: float) -> list[_ReleaseRun]:
    pattern = fmri_name(subject)
    found = {}
    for p in sorted((folder / "dtseries").glob("*.dtseries.nii")):
        m = pattern.fullmatch(p.name)
        if m:
            if int(m.group(2)) in found:
                raise RawDataError(f"{folder / 'dtseries'}: two fMRI files for run {m.group(2)}; expected one per run")
            found[int(m.group(2))] = p
    if not found:
        raise RawDataError(
            f"{folder / 'dtseries'}: no fMRI run found; expected sub-{subject:04d}_task-<task>_run-<r>_space-fsLR_den-91k_bold.dtseries.nii"
        )
    runs = []
    for r in sorted(found):
        beh = next(
            (
                folder / "beh_data" / f"{pre}_{r}.csv"
                for pre in (f"sub_{subject:04d}", f"sub-{subject:04d}")
                if (folder / "beh_data" / f"{pre}_{r}.csv").exists()
            ),
            None,
        )
        if beh is None:
            raise RawDataError(
                f"run {r}: behaviour file {folder / 'beh_data' / f'sub_{subject:04d}_{r}.csv'} is missing"
            )
        start, stop = first_row(beh)
        img, _, tr, _ = load_header(found[r])
        first, n = authors_frames(start, stop, shift_s, tr)
        runs.append(
            _ReleaseRun(
                r, bids_task(found[r].name) or "shape", found[r], beh, int(img.shape[0]), tr, start, stop, first, n
            )
        )
    return runs


def first_row(path: Path) -> tuple[float, float]:
    """(videoStartTime, videoStopTime) of a behaviour CSV's first row, the run's movie segment as
    the authors read it; later rows are not read (they may hold anything)."""
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            row = next(reader, None)
            rest = sum(1 for _ in reader)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise RawDataError(f"{path}: cannot be read as CSV ({e})") from e
    if row is None or "videoStartTime" not in row or "videoStopTime" not in row:
        raise RawDataError(f"{path}: expected columns videoStartTime and videoStopTime (seconds) and at least one row")
    try:
        start, stop = float(row["videoStartTime"]), float(row["videoStopTime"])
    except (TypeError, ValueError):
        raise RawDataError(
            f"{path}, row 1: videoStartTime={row['videoStartTime']!r}, videoStopTime={row['videoStopTime']!r}; "
            "expected numbers (seconds)"
        ) from None
    if not (np.isfinite(start) and np.isfinite(stop) and 0 <= start < stop):
        raise RawDataError(f"{path}, row 1: expected 0 <= videoStartTime < videoStopTime, got {start}, {stop}")
    if rest:
        log.info(
            "%s: the first row is the run's movie segment (as the authors read it); %d later row(s) not read",
            path,
            rest,
        )
    return start, stop


def _eeg_source(folder: Path, eeg_name: str) -> Path:
    for cand in (folder / f"{eeg_name}.tar", folder / eeg_name):
        if cand.exists():
            return cand
    there = sorted(p.name for p in folder.iterdir())
    raise RawDataError(
        f"{folder}: EEG windows not found: expected {eeg_name}.tar or an unpacked {eeg_name}/ folder (found {there})"
    )


def _key(folder: Path, eeg: Path, options: dict) -> str:
    h = hashlib.sha256(json.dumps(options, sort_keys=True).encode())
    files = [eeg, *sorted((folder / "dtseries").glob("*.dtseries.nii")), *sorted((folder / "beh_data").glob("*.csv"))]
    if eeg.is_dir():
        files += sorted(eeg.rglob("*.npy"))
    for p in files:
        st = p.stat()
        h.update(f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


@dataclass(frozen=True)
class _ImportOptions:
    """What an import does with a subject's files (the key hashes it; import.json records it)."""

    eeg_pattern: str | None
    first_frame: int
    eeg_rows: int
    ch_names: tuple[str, ...]
    sfreq: float
    shift_s: float
    drop_unpaired: bool
    copy_fmri: bool

    def hashed(self) -> dict:
        """Every option, as the import's key hashes them."""
        return asdict(self)

    def recorded(self) -> dict:
        """The options import.json records (whether the channel names are the assumed default too)."""
        return dict(
            eeg_pattern=self.eeg_pattern,
            first_frame=self.first_frame,
            eeg_rows=self.eeg_rows,
            ch_names=list(self.ch_names),
            ch_names_assumed=self.ch_names == CHANNELS_64,
            sfreq=self.sfreq,
            shift_s=self.shift_s,
            drop_unpaired=self.drop_unpaired,
        )


def import_cinebrain(
    release_dir: str,
    subjects: list[int] = [1],  # noqa: B006 (never mutated; reads well in --help)
    out_dir: str = "data/raw",
    eeg_pattern: str | None = None,
    first_frame: int = 0,
    eeg_rows: int = 64,
    ch_names: list[str] | str | None = None,
    sfreq: float = 1000.0,
    shift_s: float = 4.0,
    eeg_name: str = EEG_NAME,
    drop_unpaired: bool = False,
    copy_fmri: bool = False,
    overwrite: bool = False,
) -> list[Path]:
    """Import subjects of the CineBrain release (as published) into the project's raw layout.

    Each subject becomes ``out_dir/sub_000N``: its fMRI runs linked (or copied), the behaviour row the
    authors read, and each run's EEG windows paired with their frames exactly as the authors pair
    them (frame i = volume int((videoStartTime + shift_s) / TR) + 1 + i, window i). Then
    ``eeg2fmri prepare --subject_dir out_dir/sub_000N`` builds the cache as for any subject.

    Args:
        release_dir: folder holding the release's subject folders (sub-0001 or sub_0001).
        subjects: subject numbers to import.
        out_dir: folder that receives the imported sub_000N folders.
        eeg_pattern: regex searched in each window's path inside the archive, with named groups
            ``frame`` and ``run`` (without ``run``: frames numbered across the whole recording, runs
            taking their frames in order). Default: the run is the run-<r> / run_<r> part of the
            path, the frame the last integer of the file name.
        first_frame: the index of a run's first window (0, or 1 if the release counts from 1).
        eeg_rows: rows of each window that are EEG (the first ones; the rest, e.g. ECG, are dropped).
        ch_names: names of those rows (a list, or a text file with one name per line). The montage
            is not published: the default, the 64 actiCAP 10-10 channels, is an assumption.
        sfreq: sampling rate of the windows, Hz (not in the release: 1000 Hz per the paper).
        shift_s: the hemodynamic shift of the authors' pairing, seconds (4).
        eeg_name: name of the EEG archive (<name>.tar) or unpacked folder (<name>/) in a subject folder.
        drop_unpaired: keep the frames that have both a volume and a window, with a warning, when a
            run's window count differs from its frame count (default: refuse the run).
        copy_fmri: copy the CIFTI files instead of linking them (symbolic links, absolute).
        overwrite: replace an imported subject made with other inputs or options.

    Returns:
        The imported subject folders.
    """
    release, out = Path(release_dir), Path(out_dir)
    names = read_ch_names(ch_names, CHANNELS_64 if eeg_rows == len(CHANNELS_64) else ())
    if eeg_rows < 1:
        raise ValueError(f"eeg_rows={eeg_rows}: expected the number of EEG rows per window (64 in CineBrain)")
    if len(names) != eeg_rows:
        raise RawDataError(
            f"{len(names)} channel name(s) for eeg_rows={eeg_rows} EEG rows; give one name per EEG row with --ch_names"
        )
    if not (sfreq > 0 and 0 <= shift_s < 60):
        raise ValueError(f"sfreq={sfreq}, shift_s={shift_s}: expected a positive rate (Hz) and a shift in [0, 60) s")
    opts = _ImportOptions(eeg_pattern, first_frame, eeg_rows, names, sfreq, shift_s, drop_unpaired, copy_fmri)
    written = []
    for s in [int(x) for x in subjects]:
        folder = find_release_subject(release, s)
        eeg = _eeg_source(folder, eeg_name)
        key = _key(folder, eeg, opts.hashed())
        target = out / f"sub_{s:04d}"
        if _up_to_date(target, key, overwrite):
            written.append(target)
            continue
        written.append(_import_subject(folder, s, eeg, target, key, opts))
    return written


def _up_to_date(target: Path, key: str, overwrite: bool) -> bool:
    """Whether ``target`` is already this import (same key in its import.json). Another import
    there is an error unless ``overwrite``."""
    if not target.exists():
        return False
    try:
        same = json.loads((target / "import.json").read_text()).get("key") == key
    except (OSError, json.JSONDecodeError, AttributeError):
        same = False
    if same:
        log.info("%s is up to date (same release files and options): kept", target)
        return True
    if not overwrite:
        raise FileExistsError(
            f"{target} already exists (from other inputs or options); pass --overwrite true to replace it"
        )
    return False


def _import_subject(folder: Path, s: int, eeg_path: Path, target: Path, key: str, opts: _ImportOptions) -> Path:
    """Import one subject into a hidden folder beside ``target``, swapped in when complete."""
    runs = _release_runs(folder, s, opts.shift_s)
    src = _Windows(eeg_path)
    try:
        if not src.names:
            raise RawDataError(f"{eeg_path}: no .npy window inside; expected one .npy per fMRI frame")
        parsed = parse_window_names(src.names, opts.eeg_pattern, src.where)
        by_run = _assign_runs(parsed, runs, opts.first_frame, src.where, eeg_path)
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(target, ".tmp")
        tmp_root = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
        try:
            sub = tmp_root / target.name
            report = [_import_run(rr, s, by_run[rr.run], src, sub, opts, eeg_path) for rr in runs]
            truth = folder / "truth"  # the simulator's noise-free BOLD (the real release has none)
            if truth.is_dir():
                for p in sorted(truth.glob("*desc-noisefree_bold.dtseries.nii")):
                    _place(p, sub / "truth" / p.name, opts.copy_fmri)
            info = dict(
                key=key,
                release=str(folder.resolve()),
                eeg=str(Path(eeg_path).resolve()),
                subject=s,
                options=opts.recorded(),
                runs=report,
            )
            atomic_write_text(sub / "import.json", json.dumps(info, indent=2) + "\n")
            swap_in_dir(sub, target, tmp_root / "replaced")
        finally:
            shutil.rmtree(tmp_root, ignore_errors=True)
    finally:
        src.close()
    log.info("imported %s -> %s (%d runs)", folder, target, len(runs))
    return target


def _assign_runs(
    parsed, runs: list[_ReleaseRun], first_frame: int, where, eeg_path
) -> dict[int, list[tuple[int, str]]]:
    """run -> [(frame index from 0, name)] sorted; duplicates, gaps and strays are errors."""
    by_run: dict[int, dict[int, str]] = {rr.run: {} for rr in runs}
    if parsed[0][0] is None:  # frames numbered across the recording: runs take them in order
        total = sum(rr.n_frames for rr in runs)
        frames = sorted(parsed, key=lambda t: t[1])
        # duplicates and gaps show as a mismatch of the sorted frame numbers with 0, 1, 2, ...
        got = np.array([f for _, f, _ in frames]) - first_frame
        n = min(len(got), total)
        if not np.array_equal(got[:n], np.arange(n)):
            bad = int(np.argmax(got[:n] != np.arange(n)))
            raise RawDataError(
                f"{where(frames[bad][2])}: frame index {int(got[bad]) + first_frame} where {bad + first_frame} was "
                f"expected (a missing or duplicated frame index; windows numbered from {first_frame} across the recording)"
            )
        if len(frames) != total:
            raise RawDataError(
                f"{eeg_path}: {len(frames)} windows numbered across the recording, but the runs' behaviour rows give "
                f"{total} frames ({', '.join(f'run {rr.run}: {rr.n_frames}' for rr in runs)}); expected one window per frame"
            )
        offset = 0
        for rr in runs:
            for i in range(rr.n_frames):
                by_run[rr.run][i] = frames[offset + i][2]
            offset += rr.n_frames
    else:
        for run, frame, name in parsed:
            if run not in by_run:
                raise RawDataError(
                    f"{where(name)}: a window of run {run}, but dtseries/ has no run {run} (runs {sorted(by_run)})"
                )
            i = frame - first_frame
            if i < 0:
                raise RawDataError(f"{where(name)}: frame index {frame} below first_frame={first_frame}")
            if i in by_run[run]:
                raise RawDataError(f"{where(name)}: frame {frame} of run {run} appears twice (also {by_run[run][i]})")
            by_run[run][i] = name
    out = {}
    for rr in runs:
        got = by_run[rr.run]
        if not got:
            raise RawDataError(
                f"{eeg_path}: no EEG window for run {rr.run} (fMRI {rr.fmri.name}); expected {rr.n_frames}"
            )
        idx = np.array(sorted(got))
        if not np.array_equal(idx, np.arange(len(idx))):
            miss = int(np.setdiff1d(np.arange(idx[-1] + 1), idx)[0])
            raise RawDataError(
                f"{eeg_path}: run {rr.run}: frame index {miss + first_frame} missing (found {len(idx)} windows numbered "
                f"{idx[0] + first_frame}..{idx[-1] + first_frame}; expected {first_frame}..{len(idx) - 1 + first_frame}"
                + (", or first_frame=1 if the release counts from 1" if miss == 0 and first_frame == 0 else "")
                + ")"
            )
        out[rr.run] = [(int(i), got[int(i)]) for i in idx]
    return out


def _import_run(
    rr: _ReleaseRun, s: int, windows, src: _Windows, sub: Path, opts: _ImportOptions, eeg_path: Path
) -> dict:
    """Write one run into the subject folder ``sub``: its fMRI placed, its behaviour row, and its
    paired windows as one .npy whose sidecar names each window's volume. Returns its report."""
    n_times = samples_per_tr(rr.tr, opts.sfreq, rr.fmri)
    keep = _paired_frames(rr, len(windows), opts, eeg_path)
    data = _read_windows(windows[:keep], src, rr, opts, n_times)  # (keep, C, W)
    _place(rr.fmri, sub / "dtseries" / rr.fmri.name, opts.copy_fmri)
    _write_beh(sub / "beh_data" / f"sub_{s:04d}_{rr.run}.csv", rr)
    volumes = rr.first + np.arange(keep)
    stem = sub / "eeg" / f"sub-{s:04d}_task-{rr.task}_run-{rr.run}_eeg"
    extra = {
        "window_volumes": volumes.tolist(),
        "shift_s": opts.shift_s,
        "source": {
            "archive": str(Path(eeg_path).resolve()),
            "first": windows[0][1],
            "last": windows[keep - 1][1],
            "rows_dropped": "rows beyond eeg_rows (other signals, e.g. ECG)",
        },
    }
    write_npy_eeg(stem, data, opts.sfreq, opts.ch_names, unit="as released", extra=extra)
    return dict(
        run=rr.run,
        task=rr.task,
        fmri=str(rr.fmri),
        videoStartTime=rr.start,
        videoStopTime=rr.stop,
        first_volume=rr.first,
        n_frames=rr.n_frames,
        n_windows=len(windows),
        n_kept=keep,
    )


def _paired_frames(rr: _ReleaseRun, n_w: int, opts: _ImportOptions, eeg_path: Path) -> int:
    """How many of the run's first frames have both a window and a volume. Any frame or window
    without its partner refuses the run, or with ``drop_unpaired`` is dropped with a warning."""
    n_pair = min(rr.n_frames, rr.n_volumes - rr.first)  # the authors' frames that exist in the run
    problems = []
    if n_w > rr.n_frames:
        problems.append(
            f"{n_w} EEG windows but the movie segment of {rr.beh.name} ({rr.start:g}-{rr.stop:g} s) gives "
            f"{rr.n_frames} frames (more windows than frames)"
        )
    elif n_w < rr.n_frames:
        problems.append(
            f"{n_w} EEG windows but the movie segment of {rr.beh.name} ({rr.start:g}-{rr.stop:g} s) gives "
            f"{rr.n_frames} frames (fewer windows than frames)"
        )
    if n_pair < rr.n_frames:
        problems.append(
            f"{rr.fmri.name} has {rr.n_volumes} volumes, but the segment's frames run to volume "
            f"{rr.first + rr.n_frames - 1} (0-based): its last {rr.n_frames - max(n_pair, 0)} frame(s) have no volume"
        )
    keep = max(0, min(n_w, n_pair))
    if problems:
        msg = f"run {rr.run}: " + "; ".join(problems)
        if not opts.drop_unpaired or keep == 0:
            raise RawDataError(
                f"{eeg_path}: {msg}. Expected one window per frame; --drop_unpaired true keeps the "
                f"{keep} paired frame(s) with a warning"
            )
        log.warning("%s: %s; keeping the %d paired frame(s) (drop_unpaired)", eeg_path, msg, keep)
    return keep


def _read_windows(windows, src: _Windows, rr: _ReleaseRun, opts: _ImportOptions, n_times: int) -> np.ndarray:
    """The EEG rows of the windows ``windows`` ([(frame, member name)]), each checked for its shape,
    dtype and finite values: (n_windows, eeg_rows, n_times) float32."""
    data = np.empty((len(windows), opts.eeg_rows, n_times), np.float32)  # (n_windows, C, W)
    for i, name in windows:
        w = src.load(name)
        if w.ndim != 2 or w.shape[0] < opts.eeg_rows or w.shape[1] != n_times:
            raise RawDataError(
                f"{src.where(name)}: window has shape {w.shape}; expected (>= {opts.eeg_rows}, {n_times}): at least "
                f"{opts.eeg_rows} rows of EEG x {n_times} samples (one TR of {rr.tr:g} s at {opts.sfreq:g} Hz)"
            )
        if not (np.issubdtype(w.dtype, np.floating) or np.issubdtype(w.dtype, np.integer)):
            raise RawDataError(f"{src.where(name)}: dtype {w.dtype}; expected a float or integer array")
        x = w[: opts.eeg_rows]
        if not np.isfinite(x).all():
            row, col = (int(v) for v in np.argwhere(~np.isfinite(x))[0])
            raise RawDataError(
                f"{src.where(name)}: NaN/Inf at row {row} ({opts.ch_names[row]}), sample {col}; expected finite EEG"
            )
        data[i] = x
    return data


def _write_beh(path: Path, rr: _ReleaseRun) -> None:
    """The one row the authors read, with a clip name unique within the subject."""
    atomic_write_text(path, f"videoStartTime,videoStopTime,clip\n{rr.start!r},{rr.stop!r},run{rr.run:02d}\n")


def _place(src: Path, dst: Path, copy: bool) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if copy:
        shutil.copy2(src, dst)
    else:
        os.symlink(Path(src).resolve(), dst)


# ---------------------------------------------------------------------------------------------
# Writing the release form (the simulator's --form release)
# ---------------------------------------------------------------------------------------------


class ReleaseEEGWriter:
    """Collects a subject's per-frame windows into ``<folder>/EEG_preprocessed_data.tar`` as the
    release packs them: one ``EEG_preprocessed_data/run_<r>/<i>.npy`` per frame (the member names
    are this writer's choice: the release does not document its own)."""

    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"{EEG_NAME}.tar"
        self._tar = tarfile.open(self.path, "w")

    def add_run(self, run: int, windows: np.ndarray) -> None:
        """windows: (n_frames, n_rows, n_times) float32, window i pairing with the run's frame i."""
        for i, w in enumerate(windows):
            buf = io.BytesIO()
            np.save(buf, np.asarray(w, np.float32))
            info = tarfile.TarInfo(f"{EEG_NAME}/run_{run}/{i}.npy")
            info.size = buf.tell()
            info.mtime = 0  # the same inputs give byte-identical archives
            buf.seek(0)
            self._tar.addfile(info, buf)

    def close(self) -> None:
        self._tar.close()


def release_windows(
    eeg: np.ndarray,
    volume_onsets: np.ndarray,
    start_s: float,
    stop_s: float,
    tr: float,
    sfreq: float,
    shift_s: float = 4.0,
) -> tuple[np.ndarray, int]:
    """Cut a continuous recording (n_rows, n_samples) as the release is cut: the authors' frames of
    the segment [start_s, stop_s), window i = the TR of EEG ``shift_s`` before frame i's volume.
    Returns (windows (n_frames, n_rows, n_times), first volume)."""
    first, n = authors_frames(start_s, stop_s, shift_s, tr)
    n_times, shift = int(round(tr * sfreq)), int(round(shift_s * sfreq))
    starts = volume_onsets[first : first + n] - shift  # (n,)
    if len(starts) < n or starts.min() < 0 or starts.max() + n_times > eeg.shape[1]:
        raise ValueError(f"the recording does not cover the {n} frames of the segment {start_s:g}-{stop_s:g} s")
    idx = starts[:, None] + np.arange(n_times)  # (n, W)
    return np.ascontiguousarray(eeg[:, idx].transpose(1, 0, 2)), first


def synthetic_ecg(rng: np.random.Generator, n_samples: int, sfreq: float) -> np.ndarray:
    """A crude ECG trace in microvolts (R peaks ~1 mV at 60-80 beats/min with some variability), the
    kind of extra row the release carries after the 64 EEG rows."""
    t = np.arange(n_samples) / sfreq
    rate = rng.uniform(1.0, 1.33)
    beats = np.cumsum(rng.normal(1 / rate, 0.03, int(t[-1] * rate) + 3)) - 0.5
    ecg = np.zeros(n_samples)
    for b in beats:
        ecg += 1000 * np.exp(-0.5 * ((t - b) / 0.012) ** 2) - 150 * np.exp(-0.5 * ((t - b - 0.25) / 0.05) ** 2)
    return (ecg + rng.normal(0, 5, n_samples)).astype(np.float32)
