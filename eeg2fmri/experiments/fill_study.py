"""Censored-frame filling (motion scrubbing): InterRecon vs the Gaussian conditional fill vs linear vs
cubic spline, with the EEG-only FIR ridge as reference (``make reproduce-fill``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eeg2fmri.data.cifti import atomic_write_text
from eeg2fmri.experiments.cells import run_cell
from eeg2fmri.experiments.scales import SCALES, Scale, ensure_subject, sampler_steps
from eeg2fmri.experiments.tables import (
    REGION_KEYS,
    REGIONS,
    SPATIAL,
    SPATIAL_COLUMNS,
    mean_std,
    save_png,
    say,
    stamp_protocol,
    write_csv,
)
from eeg2fmri.fill import METHODS as FILL_METHODS  # the methods of `eeg2fmri fill`

# the study's row name of each method: the fill methods, and the EEG-only reference
ROW_NAMES = {
    "interrecon": "InterRecon",
    "linear": "Linear",
    "cubic": "Cubic spline",
    "gaussian": "Gaussian conditional + EEG μ",  # `fill --method gaussian` with the run's EEG
    "fir_ridge": "FIR ridge (EEG only)",
}


def fill_study(
    scale: str = "ci",
    subjects: list[int] = [1],  # noqa: B006 (never mutated; jsonargparse shows the list in --help)
    raw: str = "data/raw",
    prepared: str = "data/prepared",
    results: str = "results",
    rates: list[float] = [0.05, 0.1, 0.2],  # noqa: B006 (never mutated; jsonargparse shows the list in --help)
    force: bool = False,
    k: int = 10,
) -> Path:
    """Censored-frame filling on simulated (or real) subjects: in every run holding test clips,
    censor ``rates`` of the test-clip frames in bursts of 1-5 frames (seeded), fill them with
    ``eeg2fmri fill`` (InterRecon and the Gaussian conditional fill with the K = 10 diffusion cell,
    the latter around μ from the EEG, linear, cubic spline; files under
    ``results/<scale>/fill/``), predict them from the EEG alone with the K = 10 FIR ridge cell (the
    EEG-only reference), and score the censored frames only, against the recorded BOLD and,
    where the simulator kept it, the noise-free BOLD -> ``fill.md``, ``fill.csv``, ``fill.png``."""
    from eeg2fmri.evaluate import score

    sc = SCALES[scale]
    out = Path(results) / scale
    res: dict[tuple, dict] = {}  # (subject, rate, method, reference) -> metrics
    n_scored: dict[tuple, int] = {}  # (subject, rate) -> censored frames scored
    for s in subjects:
        cache = ensure_subject(s, sc, Path(raw) / scale, Path(prepared) / scale)
        subject = _load_subject(s, k, sc, cache, Path(raw) / scale, out, force)
        for rate in rates:
            folder = out / "fill" / f"sub{s}" / f"censor{round(rate * 100):02d}"
            z = _censored_frames(subject, rate, folder, sc, force)
            n_scored[(s, rate)] = len(z["real"])
            for method in ROW_NAMES:
                for ref in ("real", "noise-free"):
                    if ref in z:
                        res[(s, rate, method, ref)] = score(
                            z[method], z[ref], subject.indices, REGIONS, identification=False
                        )
            if "noise-free" in z:  # the ceiling: the noise-free BOLD itself scored against the recording
                res[(s, rate, "ceiling", "real")] = score(
                    z["noise-free"], z["real"], subject.indices, REGIONS, identification=False
                )
    rows_out = _fill_rows(res, subjects, rates, n_scored)
    _write_fill_table(rows_out, out, subjects, k)
    write_csv(out / "fill.csv", rows_out)
    _plot_fill(rows_out, out / "fill.png")
    stamp_protocol(out / "fill.md", out / "fill.csv", cache)
    say(f"fill study written to {out / 'fill.md'}, {out / 'fill.csv'} and {out / 'fill.png'}")
    return out / "fill.md"


@dataclass
class _Subject:
    """One subject of the study: its models, its cache's grayordinates and statistics, its test clips."""

    number: int
    ckpt: Path  # the K-frame diffusion cell's last.ckpt (InterRecon)
    gaussian_ckpt: Path  # that checkpoint, or a copy of an older one given the Gaussian statistics
    fir: object  # the K-frame FIR ridge cell's model (the EEG-only reference)
    fir_prep: dict  # that cell's data preparation (its checkpoint's "eeg2fmri_data")
    indices: np.ndarray  # (V,) the cache's grayordinates
    mean: np.ndarray  # (V,) training mean, BOLD units
    std: np.ndarray  # (V,) training std, BOLD units
    runs: dict  # run number -> the raw subject folder's run (fmri, eeg, truth)
    segments: dict[int, list[np.ndarray]]  # run number -> the test clips' volumes (see _test_segments)


def _load_subject(s: int, k: int, sc: Scale, cache: Path, raw: Path, out: Path, force: bool) -> _Subject:
    """Subject ``s`` with its K-frame diffusion and FIR ridge cells (trained if not done)."""
    import h5py
    import torch

    from eeg2fmri.baselines import FIRRidge
    from eeg2fmri.data.cinebrain import discover_runs, subject_dirname

    cell = out / "cells" / f"sub{s}" / f"K{k}" / "diffusion"
    say(f"subject {s}: the K={k} diffusion model")
    run_cell(s, k, "diffusion", sc, cache, cell, force=force)
    fir_cell = out / "cells" / f"sub{s}" / f"K{k}" / "fir_ridge"
    run_cell(s, k, "fir_ridge", sc, cache, fir_cell, force=force)
    fir_ckpt = fir_cell / "checkpoints" / "last.ckpt"
    fir = FIRRidge.load_from_checkpoint(fir_ckpt, map_location="cpu").eval()
    fir_prep = torch.load(fir_ckpt, map_location="cpu", weights_only=False)["eeg2fmri_data"]
    with h5py.File(cache, "r") as h5:
        indices, mean, std = (
            h5["indices"][:],
            h5["fmri_mean"][:].astype(np.float64),
            h5["fmri_std"][:].astype(np.float64),
        )
    runs = {r.run: r for r in discover_runs(raw / subject_dirname(s))}
    ckpt = cell / "checkpoints" / "last.ckpt"
    gaussian_ckpt = _with_gaussian(ckpt, cache, k, out / "fill" / f"sub{s}" / "gaussian.ckpt")
    return _Subject(s, ckpt, gaussian_ckpt, fir, fir_prep, indices, mean, std, runs, _test_segments(cache))


def _with_gaussian(ckpt: Path, cache: Path, k: int, copy: Path) -> Path:
    """``ckpt``, or, for a cell fitted before the Gaussian fill's statistics existed, ``copy``: the
    checkpoint with them estimated on the cell's cache as a fit does (reused while newer than it)."""
    import torch

    from eeg2fmri.data.cifti import atomic_save
    from eeg2fmri.data.datamodule import EEGfMRIDataModule
    from eeg2fmri.module import EEG2fMRIDiffusion

    model = EEG2fMRIDiffusion.load_from_checkpoint(ckpt, map_location="cpu").eval()
    if model.has_gaussian:
        return ckpt
    if copy.exists() and copy.stat().st_mtime >= ckpt.stat().st_mtime:
        return copy
    say(f"{ckpt} predates the Gaussian fill's statistics; estimating them on its training split -> {copy}")
    dm = EEGfMRIDataModule(str(cache), n_frames=k, eeg_context=model.eeg_context)
    dm.setup("test")
    model.fit_gaussian(dm)
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    stats = {n: b for n, b in model.named_buffers() if n.startswith("gauss_")}
    for key in ("state_dict", "current_model_state"):
        if key in state:
            state[key].update(stats)
    atomic_save(copy, lambda tmp: torch.save(state, tmp))
    return copy


def _censored_frames(subject: _Subject, rate: float, folder: Path, sc: Scale, force: bool) -> dict[str, np.ndarray]:
    """Censor ``rate`` of each run's test frames (the censor files go to ``folder``), fill them with
    every method of ``eeg2fmri fill`` and predict them with FIR ridge: row name or reference ("real",
    "noise-free") -> the censored frames of all runs, (N, V) in the training z-units."""
    from eeg2fmri.data.censor import write_censor
    from eeg2fmri.data.cifti import read_dtseries
    from eeg2fmri.fill import fill_run

    steps = sampler_steps(sc)
    rows: dict[str, list[np.ndarray]] = {m: [] for m in [*ROW_NAMES, "real", "noise-free"]}
    for r, segs in subject.segments.items():
        run = subject.runs[r]
        n_volumes = _n_volumes(run.fmri)
        rng = np.random.default_rng([subject.number, r, round(rate * 1000)])
        censored = censor_bursts(segs, n_volumes, rate, rng)  # (T,) bool
        censor = write_censor(folder / f"run-{r}_censor.tsv", censored)
        say(
            f"subject {subject.number}, run {r}: {int(censored.sum())} of {sum(map(len, segs))} test frames censored ({rate:.0%})"
        )
        cols = None
        for method in FILL_METHODS:
            path = folder / f"run-{r}_{method}.dtseries.nii"
            ckpt = {"interrecon": subject.ckpt, "gaussian": subject.gaussian_ckpt}.get(method)
            if force or not _fill_done(path, censored, ckpt, interrecon=method == "interrecon"):
                fill_run(
                    ckpt,
                    run.fmri,
                    run.eeg,
                    censor,
                    path,
                    method=method,
                    num_inference_steps=steps,
                    overwrite=True,
                    progress=False,
                )
            filled = read_dtseries(path)
            cols = np.searchsorted(filled.indices, subject.indices)  # the cache's columns in the file
            rows[method].append(filled.data[censored][:, cols])
        frames = np.flatnonzero(censored)
        fir_z = _fir_predictions(subject.fir, subject.fir_prep, run.eeg, n_volumes, frames)  # (n, V) z-units
        rows["fir_ridge"].append(fir_z * subject.std + subject.mean)  # to BOLD units, like the files
        rows["real"].append(read_dtseries(run.fmri).data[censored][:, cols])
        if run.truth is not None:
            rows["noise-free"].append(read_dtseries(run.truth).data[censored][:, cols])
    return {m: (np.concatenate(v) - subject.mean) / subject.std for m, v in rows.items() if v}  # (N, V)


def _fir_predictions(fir, prep: dict, eeg_path: Path, n_volumes: int, frames: np.ndarray) -> np.ndarray:
    """FIR ridge predictions of ``frames`` of a run from its EEG alone, (n, V) in the training z-units."""
    import torch

    from eeg2fmri.fill import run_eeg_windows

    before, after = fir.eeg_context
    span = frames[:, None] + np.arange(-before, after + 1)  # (n, P + 1 + F) EEG frames of each frame
    inside = (span >= 0) & (span < n_volumes)
    need = np.unique(np.clip(span, 0, n_volumes - 1))
    windows = run_eeg_windows(eeg_path, prep, n_volumes, need)  # (R, C, W)
    pos = np.searchsorted(need, np.clip(span, 0, n_volumes - 1))
    batch = {
        "eeg": torch.from_numpy(windows[pos] * inside[..., None, None]),
        "eeg_mask": torch.from_numpy(inside),
        "fmri": torch.zeros(len(frames), 1, fir.n_vertices),
    }
    with torch.no_grad():
        return fir.predict_frames(batch)[:, 0].double().numpy()


def censor_bursts(
    segments: list[np.ndarray], n_volumes: int, rate: float, rng: np.random.Generator, max_burst: int = 5
) -> np.ndarray:
    """Censor ``rate`` of the frames of ``segments`` (arrays of consecutive frame indices, e.g. the
    test clips of a run) in bursts of 1..``max_burst`` frames, as head motion does: (n_volumes,) bool.
    Bursts lie inside one segment and are separated by at least one uncensored frame (so each stays
    1..max_burst frames long); the last burst is shortened to hit round(rate x frames) exactly."""
    pool = sum(len(s) for s in segments)
    target = max(1, round(rate * pool))
    mask = np.zeros(n_volumes, bool)
    lengths = np.array([len(s) for s in segments], float)
    done, tries = 0, 0
    while done < target:
        tries += 1
        if tries > 100_000:
            raise ValueError(
                f"cannot censor {target} of {pool} frames in bursts of 1-{max_burst} separated by uncensored frames"
            )
        n = min(int(rng.integers(1, max_burst + 1)), target - done)
        seg = segments[rng.choice(len(segments), p=lengths / lengths.sum())]
        if len(seg) < n:
            continue
        a = int(rng.integers(0, len(seg) - n + 1))
        lo, hi = int(seg[a]), int(seg[a]) + n  # frames lo..hi-1
        if mask[max(0, lo - 1) : hi + 1].any():
            continue
        mask[lo:hi] = True
        done += n
    return mask


def _test_segments(cache: Path) -> dict[int, list[np.ndarray]]:
    """Run number -> the test clips' volumes of that run, one array of consecutive volumes per clip."""
    import h5py

    from eeg2fmri.data.frames import split_segments
    from eeg2fmri.data.prepare import SPLITS

    with h5py.File(cache, "r") as h5:
        frame_run, frame_volume = h5["frame_run"][:], h5["frame_volume"][:]
        frame_clip, clip_split = h5["frame_clip"][:], h5["clip_split"][:]
    test = clip_split[frame_clip] == SPLITS["test"]
    out: dict[int, list[np.ndarray]] = {}
    for clip in np.unique(frame_clip[test]):
        rows = np.flatnonzero(frame_clip == clip)
        vols = frame_volume[rows]
        for part in split_segments(vols):  # consecutive volumes
            out.setdefault(int(frame_run[rows[0]]), []).append(part.astype(np.int64))
    return dict(sorted(out.items()))


def _n_volumes(path: Path) -> int:
    """Volumes of a CIFTI run (its length T), read from the header."""
    from eeg2fmri.data.cifti import load_header

    return int(load_header(path)[0].shape[0])


def _fill_done(path: Path, censored: np.ndarray, ckpt: Path | None, interrecon: bool = False) -> bool:
    """A fill written earlier for the same censored frames (and, for the model's fills, a checkpoint
    no newer than it and, for InterRecon, ``fill``'s default estimate: one chain from x_T = 0) is reused."""
    import nibabel as nib

    if not path.exists() or (ckpt is not None and ckpt.stat().st_mtime > path.stat().st_mtime):
        return False
    try:
        note = json.loads(nib.load(path).header.matrix.metadata["eeg2fmri_fill"])
    except Exception:
        return False
    same = note.get("censored_frames") == np.flatnonzero(censored).tolist()
    return same and (not interrecon or (note.get("start"), note.get("num_samples")) == ("zero", 1))


def _fill_rows(res: dict, subjects, rates, n_scored) -> list[dict]:
    """fill.csv's rows: per rate, method and reference, the mean and std over subjects of each metric.
    (``n_frames`` there counts the censored frames scored, summed over subjects.)"""
    rows = []
    for rate in rates:
        for method, name in [*ROW_NAMES.items(), ("ceiling", "Noise ceiling")]:
            for ref in ("real", "noise-free"):
                per = [res.get((s, rate, method, ref)) for s in subjects]
                if any(p is None for p in per):
                    continue
                row = {
                    "censor_rate": rate,
                    "method": name,
                    "reference": ref,
                    "n_frames": int(sum(n_scored[(s, rate)] for s in subjects)),
                }
                for key in REGION_KEYS:
                    mean_, std_ = mean_std([p[key] for p in per])
                    row[key], row[f"{key}_std_over_subjects"] = mean_, std_
                rows.append(row)
    return rows


def _write_fill_table(rows: list[dict], out: Path, subjects, k: int) -> None:
    lines = [
        f"# Censored-frame filling — InterRecon (K = {k}) vs Gaussian conditional vs linear vs cubic spline, mean over "
        f"{len(subjects)} subject(s)\n",
        "Frames censored inside the test clips in bursts of 1–5 frames (seeded); InterRecon, the Gaussian conditional\n"
        "fill (`--method gaussian` with the run's EEG: each latent dim's conditional mean given the uncensored frames\n"
        "around μ(EEG)), linear and cubic spline\n"
        "fill them through `eeg2fmri fill`, FIR ridge predicts them from the EEG alone (no neighbouring frames);\n"
        "metrics on the censored frames only, in the training z-units. *real*: against the recorded\n"
        "BOLD; *noise-free*: against the simulator's noise-free BOLD. The noise ceiling is the noise-free BOLD scored\n"
        "against the recording: what a perfect estimate of the signal reaches against the real data.\n",
        "| censored | method | reference | frames | " + SPATIAL_COLUMNS + " | whole temporal r |",
        "|---|---|---|---|" + "---|" * (3 * len(REGIONS) + 1),
    ]
    for row in rows:
        cells = [f"{row[f'{r}/{m}']:.3f}" for r in REGIONS for m in SPATIAL] + [f"{row['whole/temporal_r_median']:.3f}"]
        lines.append(
            f"| {row['censor_rate']:.0%} | {row['method']} | {row['reference']} | {row['n_frames']} | "
            + " | ".join(cells)
            + " |"
        )
    atomic_write_text(out / "fill.md", "\n".join(lines) + "\n")


def _plot_fill(rows: list[dict], path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.6), dpi=120)
    for i, (key, label) in enumerate(
        (("whole/r", "spatial r (whole brain)"), ("whole/mse", "MSE (whole brain, z-units)"))
    ):
        ax = fig.add_subplot(1, 2, i + 1)
        for j, name in enumerate([*ROW_NAMES.values(), "Noise ceiling"]):
            for ref, style in (("real", "-"), ("noise-free", "--")):
                sel = [r for r in rows if r["method"] == name and r["reference"] == ref]
                if not sel:
                    continue
                color = "0.5" if name == "Noise ceiling" else f"C{j}"
                ax.plot(
                    [100 * r["censor_rate"] for r in sel],
                    [r[key] for r in sel],
                    style,
                    marker="o",
                    color=color,
                    label=f"{name} vs {ref}",
                )
        ax.set_xticks(sorted({100 * r["censor_rate"] for r in rows}))
        ax.set_xlabel("frames censored (% of test frames, bursts of 1-5 TRs)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    fig.axes[0].legend(fontsize=7)
    fig.suptitle("Filling censored frames: InterRecon vs the Gaussian conditional fill vs interpolation")
    fig.tight_layout()
    save_png(fig, path)
