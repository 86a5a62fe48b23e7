"""Table 2 and Figure 3: InterRecon between the first and last frame of each test window, against
interpolation and the EEG-only predictions, and the gap sweep (``make reproduce-table2``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from eeg2fmri.data.cifti import atomic_write_text
from eeg2fmri.experiments.cells import run_cell
from eeg2fmri.experiments.scales import SCALES, Scale, ensure_subject, sampler_steps
from eeg2fmri.experiments.tables import (
    REGIONS,
    SPATIAL,
    SPATIAL_COLUMNS,
    mean_std,
    save_png,
    say,
    stamp_protocol,
    write_csv,
)


def table2(
    scale: str = "ci",
    subjects: list[int] = [1],  # noqa: B006 (never mutated; jsonargparse shows the list in --help)
    raw: str = "data/raw",
    prepared: str = "data/prepared",
    results: str = "results",
    k: int = 10,
    force: bool = False,
) -> Path:
    """Table 2 (InterRecon between the first and last frame of each test window: linear and cubic
    interpolation, the Gaussian conditional mean of the model's latents without and with the EEG's
    μ, the model without and with the null-space step: one sample, a mean of samples, the chain from
    x_T = 0; same checkpoint) and the gap sweep of
    Figure 3 (frames 1..g missing, g = 1..K-2)."""
    sc = SCALES[scale]
    out = Path(results) / scale
    methods = _methods(sc.interrecon_samples)
    table: dict[str, list[dict]] = {m: [] for m in methods}  # method -> its metrics, per subject
    sweep: dict[str, dict[int, list[float]]] = {m: {} for m in methods}  # method -> gap -> whole r, per subject
    for s in subjects:
        cache = ensure_subject(s, sc, Path(raw) / scale, Path(prepared) / scale)
        for name, (metrics, by_gap) in _score_subject(s, k, sc, cache, out, methods, force).items():
            table[name].append(metrics)
            for g, r in by_gap.items():
                sweep[name].setdefault(g, []).append(r)
    _write_table2(table, methods, out, len(subjects), k)
    sweep_rows = [{"gap": g, **{name: mean_std(sweep[name][g])[0] for name in methods}} for g in range(1, k - 1)]
    write_csv(out / "fig3_gap_sweep.csv", sweep_rows)
    _plot_sweep(sweep_rows, methods, out / "fig3_gap_sweep.png")
    stamp_protocol(out / "table2.md", out / "table2.csv", cache)
    say(f"Table 2 written to {out / 'table2.md'}; Figure 3 to {out / 'fig3_gap_sweep.png'}")
    return out / "table2.md"


def _methods(n_mean: int) -> tuple[str, ...]:
    """The rows of Table 2 (and lines of Figure 3); ``n_mean`` InterRecon samples are averaged for the
    next to last; the last is the one deterministic chain from x_T = 0 (``fill --method interrecon``'s
    estimate of the conditional mean)."""
    return (
        "Linear",
        "Cubic spline",
        "Gaussian conditional",
        "Gaussian conditional + EEG μ",
        "FIR ridge (EEG only)",
        "Ours, EEG only (posterior mean)",
        "Without null space",
        "With null space (one sample)",
        f"With null space (mean of {n_mean} samples)",
        "With null space (chain from x_T = 0)",
    )


def _score_subject(s: int, k: int, sc: Scale, cache: Path, out: Path, methods, force: bool) -> dict[str, tuple]:
    """Method -> (its metrics on the filled frames of subject ``s``'s test windows, its whole-brain r
    per gap of the sweep), with the subject's K-frame diffusion and FIR ridge cells (trained if not done)."""
    import torch

    from eeg2fmri.baselines import FIRRidge
    from eeg2fmri.callbacks import anchor_mask
    from eeg2fmri.data.datamodule import EEGfMRIDataModule
    from eeg2fmri.data.regions import region_columns
    from eeg2fmri.metrics import RegionMetrics
    from eeg2fmri.module import EEG2fMRIDiffusion

    cell = out / "cells" / f"sub{s}" / f"K{k}" / "diffusion"
    fir_cell = out / "cells" / f"sub{s}" / f"K{k}" / "fir_ridge"
    say(f"subject {s}: the K={k} diffusion model and FIR ridge")
    run_cell(s, k, "diffusion", sc, cache, cell, force=force)
    run_cell(s, k, "fir_ridge", sc, cache, fir_cell, force=force)
    model = EEG2fMRIDiffusion.load_from_checkpoint(cell / "checkpoints" / "last.ckpt", map_location="cpu").eval()
    fir = FIRRidge.load_from_checkpoint(fir_cell / "checkpoints" / "last.ckpt", map_location="cpu").eval()
    if tuple(fir.eeg_context) != tuple(model.eeg_context):
        raise ValueError(f"{fir_cell} and {cell} were trained with different EEG context; rerun with --force")
    dm = EEGfMRIDataModule(str(cache), n_frames=k, batch_size=16, eeg_context=model.eeg_context)
    dm.setup("test")
    if not model.has_gaussian:  # a cell fitted before the statistics existed: the same estimate, from its cache
        say(f"subject {s}: {cell} predates the Gaussian fill's statistics; estimating them on its training split")
        model.fit_gaussian(dm)
    cols = {r: torch.as_tensor(region_columns(r, dm.indices)) for r in REGIONS}
    fill = _filler(model, fir, sc.interrecon_samples, sampler_steps(sc))
    gaps = list(range(1, k - 1))
    say(f"subject {s}: InterRecon on {len(dm.windows['test'])} test windows, gaps {gaps[0]}..{gaps[-1]}")
    scores = {}
    for j, name in enumerate(methods, 1):
        say(f"subject {s}: [{j}/{len(methods)}] {name}")
        main_metrics = RegionMetrics(cols, dm.n_vertices, identification=False)
        gap_metrics = {g: RegionMetrics({"whole": None}, dm.n_vertices, identification=False) for g in gaps}
        eeg_only = "EEG only" in name  # the anchors do not enter: one prediction per batch serves every gap
        with torch.no_grad():
            for batch in dm.test_dataloader():
                x = batch["fmri"]  # (B, K, V)
                mask = anchor_mask(x.shape[0], k)  # (B, K), True on the first and last frame
                pred = fill(name, batch, mask)  # (B, K, V)
                main_metrics.update(pred, x, frame_mask=~mask)
                for g in gaps:
                    m = torch.ones(x.shape[0], k, dtype=torch.bool)  # (B, K): frames 1..g missing
                    m[:, 1 : g + 1] = False
                    gap_metrics[g].update(pred if eeg_only else fill(name, batch, m), x, frame_mask=~m)
        scores[name] = (main_metrics.compute(), {g: gap_metrics[g].compute()["whole/r"] for g in gaps})
    return scores


def _filler(model, fir, n_mean: int, steps: int) -> Callable:
    """``fill(method, batch, mask)``: the window's frames as Table 2's ``method`` gives them, where
    ``mask`` (B, K) is True on the observed frames."""
    from eeg2fmri.interpolate import cubic_fill, linear_fill

    def fill(name, batch, mask):
        x, eeg, eeg_mask = batch["fmri"], batch["eeg"], batch["eeg_mask"]
        if name == "Linear":
            return linear_fill(x, mask)
        if name == "Cubic spline":
            return cubic_fill(x, mask)
        if name.startswith("Gaussian conditional"):
            if "EEG μ" not in name:
                return model.gaussian_fill(x, mask)  # the training latents' mean, no EEG
            if model.regression_head is None:
                raise ValueError(f"the diffusion cell has no regression stage: no μ for Table 2's {name!r} row")
            return model.gaussian_fill(x, mask, eeg, eeg_mask)
        if name.startswith("FIR ridge"):
            return fir.predict_frames(batch)
        if name.startswith("Ours, EEG only"):
            return model.predict_frames(batch, estimator="mean", num_samples=1)
        n = n_mean if "mean of" in name else 1
        return model.sample_mean(
            eeg,
            n,
            zero_noise="x_T = 0" in name,
            num_inference_steps=steps,
            observed=x,
            observed_mask=mask,
            null_space=name != "Without null space",
            eeg_mask=eeg_mask,
        )

    return fill


def _write_table2(table: dict[str, list[dict]], methods, out: Path, n_subjects: int, k: int) -> None:
    """table2.md and table2.csv: each method's metrics on the filled frames, mean over subjects."""
    rows = []
    lines = [
        f"# Table 2 — InterRecon (K = {k}, first and last frame observed), mean over {n_subjects} subject(s)\n",
        "Metrics on the filled (middle) frames only. *Gaussian conditional*: each latent dim's conditional mean\n"
        "given the anchors under a stationary Gaussian model of the model's latents (autocovariance from the\n"
        "training split), around the training mean or, *+ EEG μ*, around the regression stage's μ of each frame.\n"
        "*EEG only*: predictions from the EEG without the anchors\n"
        "(FIR ridge; the model's posterior mean). InterRecon rows: one DDIM sample with the anchors imposed by the\n"
        "null-space step, the average of several such samples (toward the posterior mean given EEG and anchors),\n"
        "and the one deterministic chain from the noise's mean x_T = 0 (the estimate of that mean that\n"
        "`eeg2fmri fill --method interrecon` writes).\n",
        "| method | " + SPATIAL_COLUMNS + " | whole temporal r |",
        "|---|" + "---|" * (3 * len(REGIONS) + 1),
    ]
    keys = [f"{r}/{m}" for r in REGIONS for m in SPATIAL] + ["whole/temporal_r_median"]
    for name in methods:
        vals = {key: mean_std([t[key] for t in table[name]])[0] for key in keys}
        rows.append({"method": name, **vals})
        lines.append(f"| {name} | " + " | ".join(f"{vals[key]:.3f}" for key in keys) + " |")
    atomic_write_text(out / "table2.md", "\n".join(lines) + "\n")
    write_csv(out / "table2.csv", rows)


def _plot_sweep(rows: list[dict], methods, path: Path) -> None:
    """Figure 3: spatial r on the filled frames against the number of missing frames."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 3.5), dpi=120)
    ax = fig.add_subplot()
    gaps = [r["gap"] for r in rows]
    for name in methods:
        ax.plot(gaps, [r[name] for r in rows], marker="o", label=name)
    ax.set_xlabel("missing frames between anchors (TR = 0.8 s)")
    ax.set_ylabel("spatial r on filled frames (whole brain)")
    ax.set_title("InterRecon vs. interpolation (Figure 3)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_png(fig, path)
