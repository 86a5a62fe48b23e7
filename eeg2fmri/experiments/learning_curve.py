"""The learning curve: temporal r against training minutes, and the EEG's own ceiling.

The noise ceiling (the noise-free BOLD against the recorded frames) is not what an EEG model can
reach: the EEG carries only part of the neural activity that drives the BOLD. Training the same
estimators on growing parts of the training split (the first whole clips holding 1/12, 1/4, 1/2 and
all of its frames, ``--data.train_fraction``) and extrapolating r(n) = r∞ · n / (n + n½) to
n → ∞ estimates the EEG-explainable ceiling r∞, so a method's shortfall splits into what the
estimator loses at this length (r against r∞) and what the EEG does not carry (r∞ against the
noise ceiling).

Methods: the FIR ridge, and the default model's posterior mean. The default model's posterior mean
is D(μ), the regression stage decoded (EEG2fMRIDiffusion.mean_is_mu): it is fixed at fit set-up (the
PCA and ridge starts) and no DiT step changes it, so its cells here train one step and skip the
sample row; Table 1's cell of the full split is the trained model.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from eeg2fmri.data.cifti import atomic_write_text
from eeg2fmri.data.datamodule import first_training_clips
from eeg2fmri.experiments.cells import SLUGS, run_cell
from eeg2fmri.experiments.scales import SCALES, ensure_subject
from eeg2fmri.experiments.tables import REGIONS, save_png, say, write_csv

FRACTIONS = (1 / 12, 1 / 4, 1 / 2, 1.0)
# method slug -> extra CLI arguments of its cells (the posterior mean D(μ) needs no DiT training)
CURVE_METHODS = {
    "fir_ridge": [],
    "diffusion": ["--trainer.max_steps", "1", "--evaluator.sample_row", "false"],
}
METRIC = "temporal_r_median"


def learning_curve(
    scale: str = "long",
    subject: int = 1,
    raw: str = "data/raw",
    prepared: str = "data/prepared",
    results: str = "results",
    k: int = 10,
    force: bool = False,
) -> Path:
    """Train the curve's cells, fit the saturation of each method and region, write
    ``learning_curve.{csv,md,png}`` under ``results/<scale>/``."""
    sc = SCALES[scale]
    out = Path(results) / scale
    cache = ensure_subject(subject, sc, Path(raw) / scale, Path(prepared) / scale)
    minutes = training_minutes(cache, FRACTIONS)
    rows, ceiling = [], {}
    cells = [(m, f) for m in CURVE_METHODS for f in FRACTIONS]
    for i, (slug, frac) in enumerate(cells, 1):
        say(f"[{i}/{len(cells)}] {SLUGS[slug]}, {frac:.3g} of the training split ({minutes[frac]:.0f} min)")
        folder = out / "learning_curve" / slug / f"frac{frac:.4f}"
        extra = ["--data.train_fraction", f"{frac:.6g}", *CURVE_METHODS[slug]]
        if frac == 1.0:  # the whole split: Table 1's own cell (trained, for the model), reused when done
            folder, extra = out / "cells" / f"sub{subject}" / f"K{k}" / slug, []
        res = run_cell(subject, k, slug, sc, cache, folder, extra=extra, force=force)["metrics"]
        rows.append(
            {
                "method": SLUGS[slug],
                "fraction": round(frac, 4),
                "train_minutes": round(minutes[frac], 1),
                **{region: res["model"][f"{region}/{METRIC}"] for region in REGIONS},
            }
        )
        ceiling = {region: res["ceiling"][f"{region}/{METRIC}"] for region in REGIONS}
    fits = {
        (row["method"], region): saturation_fit(
            np.array([r["train_minutes"] for r in rows if r["method"] == row["method"]]),
            np.array([r[region] for r in rows if r["method"] == row["method"]]),
        )
        for row in rows
        for region in REGIONS
    }
    write_csv(out / "learning_curve.csv", rows)
    _write_md(rows, fits, ceiling, out / "learning_curve.md")
    _plot(rows, fits, ceiling, out / "learning_curve.png")
    say(f"learning curve written to {out / 'learning_curve.md'} (.csv, .png)")
    return out / "learning_curve.md"


def training_minutes(cache: Path, fractions) -> dict[float, float]:
    """Minutes of training frames each fraction keeps (whole clips, as the data module keeps them)."""
    with h5py.File(cache, "r") as h5:
        split, clip, tr = h5["split"][:].astype(np.int64), h5["frame_clip"][:], float(h5.attrs.get("tr", 0.8))
    return {f: float((first_training_clips(split, clip, f) == 0).sum()) * tr / 60 for f in fractions}


def saturation_fit(n: np.ndarray, r: np.ndarray) -> tuple[float, float]:
    """Least-squares (r∞, n½) of r(n) = r∞ n / (n + n½) over a grid of n½ (r∞ in closed form for each):
    the curve's asymptote and the training length that reaches half of it."""
    best = (np.inf, 0.0, 0.0)
    for half in np.geomspace(n.min() / 100, n.max() * 100, 2000):
        g = n / (n + half)  # (points,)
        r_inf = float(g @ r / (g @ g))
        err = float(((r - r_inf * g) ** 2).sum())
        if err < best[0]:
            best = (err, r_inf, float(half))
    return best[1], best[2]


def _write_md(rows, fits, ceiling, path: Path) -> None:
    lines = [
        f"# Learning curve: median temporal r against training minutes ({METRIC})",
        "",
        "r∞: the asymptote of r(n) = r∞ n / (n + n½) fitted to the four lengths (the EEG-explainable",
        "ceiling is the best method's r∞); in brackets the full split's r as a fraction of r∞ and of the",
        "noise ceiling.",
        "",
        "| method | minutes | " + " | ".join(REGIONS) + " |",
        "|---|---|" + "---|" * len(REGIONS),
    ]
    for row in rows:
        lines.append(
            f"| {row['method']} | {row['train_minutes']:.0f} | " + " | ".join(f"{row[g]:.3f}" for g in REGIONS) + " |"
        )
    methods = list(dict.fromkeys(r["method"] for r in rows))
    explainable = {g: max(fits[(m, g)][0] for m in methods) for g in REGIONS}
    lines += ["", "| | " + " | ".join(REGIONS) + " |", "|---|" + "---|" * len(REGIONS)]
    for method in methods:
        full = [r for r in rows if r["method"] == method][-1]
        cells = [
            f"r∞ {fits[(method, g)][0]:.3f} (n½ {fits[(method, g)][1]:.0f} min); full {full[g]:.3f} "
            f"({full[g] / explainable[g]:.0%} of EEG, {full[g] / ceiling[g]:.0%} of noise ceiling)"
            for g in REGIONS
        ]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines.append("| EEG-explainable ceiling | " + " | ".join(f"{explainable[g]:.3f}" for g in REGIONS) + " |")
    lines.append("| noise ceiling | " + " | ".join(f"{ceiling[g]:.3f}" for g in REGIONS) + " |")
    atomic_write_text(path, "\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)


def _plot(rows, fits, ceiling, path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 3.5), dpi=120)
    methods = list(dict.fromkeys(r["method"] for r in rows))
    for i, region in enumerate(REGIONS):
        ax = fig.add_subplot(1, len(REGIONS), i + 1)
        for method in methods:
            pts = [r for r in rows if r["method"] == method]
            n = np.array([p["train_minutes"] for p in pts])
            line = ax.plot(n, [p[region] for p in pts], marker="o", label=method)[0]
            r_inf, half = fits[(method, region)]
            grid = np.linspace(n.min(), n.max() * 2, 100)
            ax.plot(grid, r_inf * grid / (grid + half), ls=":", color=line.get_color())
            ax.axhline(r_inf, ls="--", lw=0.8, color=line.get_color())
        ax.axhline(ceiling[region], color="k", lw=1, label="noise ceiling")
        ax.set_title(region)
        ax.set_xlabel("training minutes")
        if i == 0:
            ax.set_ylabel("median temporal r")
            ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    save_png(fig, path)
