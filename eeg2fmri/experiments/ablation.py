"""Table S4: the diffusion model's latent dimension (``make reproduce-ablation``)."""

from __future__ import annotations

from pathlib import Path

from eeg2fmri.data.cifti import atomic_write_text
from eeg2fmri.experiments.cells import run_cell
from eeg2fmri.experiments.scales import SCALES, ensure_subject
from eeg2fmri.experiments.tables import REGIONS, SPATIAL, SPATIAL_COLUMNS, mean_std, say, stamp_protocol, write_csv


def ablation(
    scale: str = "ci",
    subjects: list[int] = [1],  # noqa: B006 (never mutated; jsonargparse shows the list in --help)
    raw: str = "data/raw",
    prepared: str = "data/prepared",
    results: str = "results",
    latents: list[int] = [512, 1024, 2048],  # noqa: B006 (never mutated; jsonargparse shows the list in --help)
    k: int = 10,
    force: bool = False,
) -> Path:
    """Table S4: the diffusion model with latent dimension 512 / 1024 / 2048 (K = 10)."""
    sc = SCALES[scale]
    out = Path(results) / scale
    lines = [
        f"# Table S4 — latent dimension d (K = {k}), mean over {len(subjects)} subject(s)\n",
        "| d | " + SPATIAL_COLUMNS + " |",
        "|---|" + "---|" * (3 * len(REGIONS)),
    ]
    rows = []
    for d in latents:
        per = []
        for s in subjects:
            cache = ensure_subject(s, sc, Path(raw) / scale, Path(prepared) / scale)
            say(f"subject {s}, K={k}, latent {d}")
            res = run_cell(
                s,
                k,
                "diffusion",
                sc,
                cache,
                out / "cells" / f"sub{s}" / f"K{k}" / f"diffusion_latent{d}",
                extra=["--model.init_args.latent_dim", str(d)],
                force=force,
            )
            per.append(res["metrics"]["model"])
        vals = {f"{r}/{m}": mean_std([p[f"{r}/{m}"] for p in per])[0] for r in REGIONS for m in SPATIAL}
        rows.append({"latent_dim": d, **vals})
        lines.append(f"| {d} | " + " | ".join(f"{vals[f'{r}/{m}']:.3f}" for r in REGIONS for m in SPATIAL) + " |")
    atomic_write_text(out / "table_s4.md", "\n".join(lines) + "\n")
    write_csv(out / "table_s4.csv", rows)
    stamp_protocol(out / "table_s4.md", out / "table_s4.csv", cache)
    say(f"Table S4 written to {out / 'table_s4.md'}")
    return out / "table_s4.md"
