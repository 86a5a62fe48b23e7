"""Table 1 (+ Tables S1-S3, the temporal / identification table, and the floors of Table 1c):
every method x K x region (``make reproduce-table1``)."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

from eeg2fmri.data.cifti import atomic_write_csv, atomic_write_text
from eeg2fmri.errors import OptionError
from eeg2fmri.experiments.cells import CELL_METHODS, SLUGS, run_cell
from eeg2fmri.experiments.scales import SCALES, ensure_subject, protocol_tag
from eeg2fmri.experiments.tables import (
    REGION_KEYS,
    REGIONS,
    SPATIAL,
    SPATIAL_COLUMNS,
    add_column,
    cache_protocol,
    mean_std,
    say,
)

SAMPLING = ("paper", "diffusion", "diffusion_cond")  # methods whose test also scores one DDIM sample (a second row)
METRICS = (  # the metrics of table1.csv, per region
    "mse",
    "r",
    "cos",
    "temporal_r_median",
    "identification_top1",
    "identification_top5",
    "identification_mean_rank",
)
CSV_FIELDS = [
    "K",
    "method",
    "source",
    "eeg_seconds",
    "region",
    "metric",
    "mean",
    "std_over_subjects",
    "n_subjects",
    "per_subject",
]


def table1(
    scale: str = "ci",
    subjects: list[int] = [1],  # noqa: B006 (never mutated; jsonargparse shows the list in --help)
    raw: str = "data/raw",
    prepared: str = "data/prepared",
    results: str = "results",
    methods: list[str] | None = None,
    ks: list[int] | None = None,
    force: bool = False,
    protocol: str = "project",
) -> Path:
    """Table 1 (+ S1-S3 and the temporal / identification / ceiling table): every method x K x region,
    then the floors of Table 1c (run mean, nearest training frame, EEG shuffled within run)."""
    sc = SCALES[scale]
    raw_p, prep_p, out = (
        Path(raw),
        Path(prepared) / protocol_tag(scale, protocol),
        Path(results) / protocol_tag(scale, protocol),
    )
    slugs = methods or list(sc.methods or (s for s, _ in CELL_METHODS.values() if s != "diffusion_cond"))
    unknown = [s for s in slugs if s not in SLUGS]
    if unknown:
        raise OptionError(f"unknown method(s) {unknown}; expected some of {sorted(SLUGS)}")
    ks_ = tuple(ks or sc.ks)
    cells = [(s, k, m) for s in subjects for k in ks_ for m in slugs]
    res: dict[tuple[int, int, str], dict] = {}
    caches: dict[int, Path] = {}
    for i, (s, k, m) in enumerate(cells, 1):
        caches[s] = cache = ensure_subject(s, sc, raw_p / scale, prep_p, protocol)
        say(f"[{i}/{len(cells)}] subject {s}, K={k}, {SLUGS[m]}")
        res[(s, k, m)] = run_cell(s, k, m, sc, cache, out / "cells" / f"sub{s}" / f"K{k}" / m, force=force)
    write_table1(res, out, subjects, ks_, slugs)
    floors = table1_floors(caches, res, out, subjects, ks_, slugs, force=force)
    write_floors(floors, out, subjects, ks_, cache_protocol(caches[subjects[0]]))
    say(f"Table 1 written to {out / 'table1.md'} and {out / 'table1.csv'} (floors: {out / 'table1_floors.csv'})")
    return out / "table1.md"


def _rows_of(slugs) -> list[tuple[str, str, str]]:
    """(table name, method slug, result source) of every row: the one-sample row follows each
    sampling method's posterior-mean row, the noise ceiling comes last."""
    out = []
    for m in slugs:
        out.append((SLUGS[m] + (" — posterior mean" if m in SAMPLING else ""), m, "model"))
        if m in SAMPLING:
            out.append((SLUGS[m] + " — one sample", m, "model_sample"))
    return out + [("Noise ceiling", slugs[0], "ceiling")]


def table1_rows(res: dict, subjects, ks, slugs) -> list[dict]:
    """Long-format rows: one per (K, method row, region, metric), mean and std over subjects."""
    rows = []
    for k in ks:
        for name, slug, source in _rows_of(slugs):
            cells = [res[(s, k, slug)] for s in subjects]
            eeg_s = None if source == "ceiling" else cells[0].get("eeg_seconds")
            for region in REGIONS:
                for key in METRICS:
                    vals = [c["metrics"].get(source, {}).get(f"{region}/{key}") for c in cells]
                    mean, std = mean_std(vals)
                    rows.append(
                        {
                            "K": k,
                            "method": name,
                            "source": source,
                            "eeg_seconds": eeg_s,
                            "region": region,
                            "metric": key,
                            "mean": mean,
                            "std_over_subjects": std,
                            "n_subjects": len(subjects),
                            "per_subject": vals,
                        }
                    )
    return rows


class _Table1Cells:
    """The rows of Table 1 by (K, method row, region, metric), printed as markdown cells."""

    def __init__(self, rows: list[dict], n_subjects: int):
        self.rows = {(r["K"], r["method"], r["region"], r["metric"]): r for r in rows}
        # seconds of EEG per prediction: the span depends on K for the windowed models
        self.eeg_s = {(r["K"], r["method"]): r["eeg_seconds"] for r in rows}
        self.n_subjects = n_subjects

    def cell(self, k, name, region, metric) -> str:
        row = self.rows.get((k, name, region, metric))
        return "–" if row is None else _fmt(row, self.n_subjects)

    def seconds(self, k, name) -> str:
        return "–" if self.eeg_s.get((k, name)) is None else f"{self.eeg_s[(k, name)]:.1f}"


def write_table1(res: dict, out: Path, subjects, ks, slugs) -> None:
    """table1.md (Table 1, Table 1b, and Tables S1-S3 of each subject) and table1.csv (one row per
    K, method row, region and metric)."""
    rows = [r for r in table1_rows(res, subjects, ks, slugs) if any(v is not None for v in r["per_subject"])]
    names = [n for n, _, _ in _rows_of(slugs) if any(r["method"] == n for r in rows)]
    table = _Table1Cells(rows, len(subjects))
    md = io.StringIO()
    _write_spatial(md, table, ks, names)
    _write_temporal(md, table, ks, names)
    for s in subjects:
        _write_subject(md, res, s, ks, slugs)
    atomic_write_text(out / "table1.md", md.getvalue())
    kept = [{**r, "per_subject": json.dumps(r["per_subject"])} for r in rows]
    atomic_write_csv(out / "table1.csv", kept, CSV_FIELDS)


def _write_spatial(md: io.StringIO, table: _Table1Cells, ks, names: list[str]) -> None:
    """Table 1: MSE / r / cos per region, mean over subjects."""
    md.write(f"# Table 1 — mean over {table.n_subjects} subject(s): MSE / r / cos per region\n\n")
    md.write(
        "Spatial metrics per test frame (paper, Table 1); ± is the std over subjects when there are several.\n"
        "Rows of the sampling models: *posterior mean* (the estimate that minimises MSE: x̂₀\n"
        "at the noisiest step, or the average of N samples, as the cell's evaluator says) and *one sample* (one\n"
        "DDIM draw: about twice the posterior variance in MSE). *EEG s*: seconds of EEG one predicted frame\n"
        "may depend on (own window 0.8 s; the FIR lags; a K-frame window plus its EEG context).\n\n"
    )
    md.write("| K | method | EEG s | " + SPATIAL_COLUMNS + " |\n")
    md.write("|---|---|---|" + "---|" * (3 * len(REGIONS)) + "\n")
    for k in ks:
        for name in names:
            cells = [table.cell(k, name, region, m) for region in REGIONS for m in SPATIAL]
            md.write(f"| {k} | {name} | {table.seconds(k, name)} | " + " | ".join(cells) + " |\n")


def _write_temporal(md: io.StringIO, table: _Table1Cells, ks, names: list[str]) -> None:
    """Table 1b: temporal r per region (with its fraction of the noise ceiling's) and identification."""
    md.write("\n# Table 1b — temporal and functional metrics\n\n")
    md.write(
        "Temporal r: per grayordinate over the test frames, median over the region; in brackets the fraction of\n"
        "the noise ceiling's. Identification: rank of the true test window among all test windows by correlation\n"
        "with the prediction (whole brain).\n\n"
    )
    md.write(
        "| K | method | EEG s | " + " | ".join(f"{r} temporal r" for r in REGIONS) + " | top-1 | top-5 | mean rank |\n"
    )
    md.write("|---|---|---|" + "---|" * (len(REGIONS) + 3) + "\n")
    for k in ks:
        for name in names:
            cells = []
            for region in REGIONS:
                c = table.cell(k, name, region, "temporal_r_median")
                ceil = table.rows.get((k, "Noise ceiling", region, "temporal_r_median"))
                mine = table.rows.get((k, name, region, "temporal_r_median"))
                if ceil and mine and name != "Noise ceiling" and math.isfinite(mine["mean"]) and ceil["mean"] > 0:
                    c += f" ({mine['mean'] / ceil['mean']:.2f})"
                cells.append(c)
            cells += [
                table.cell(k, name, "whole", m)
                for m in ("identification_top1", "identification_top5", "identification_mean_rank")
            ]
            md.write(f"| {k} | {name} | {table.seconds(k, name)} | " + " | ".join(cells) + " |\n")


def _write_subject(md: io.StringIO, res: dict, s: int, ks, slugs) -> None:
    """Tables S1-S3: one subject's scores, mean ± std over test windows."""
    md.write(f"\n# Subject {s} — mean ± std over test windows (Tables S1–S3)\n\n")
    md.write("| K | method | " + SPATIAL_COLUMNS + " |\n")
    md.write("|---|---|" + "---|" * (3 * len(REGIONS)) + "\n")
    for k in ks:
        for name, m, source in _rows_of(slugs)[:-1]:
            met = res[(s, k, m)]["metrics"].get(source)
            if met is None:
                continue
            cells = [
                f"{met[f'{region}/{x}']:.3f} ± {met[f'{region}/{x}_std']:.3f}" for region in REGIONS for x in SPATIAL
            ]
            md.write(f"| {k} | {name} | " + " | ".join(cells) + " |\n")


def _fmt(row: dict, n_subjects: int) -> str:
    if not math.isfinite(row["mean"]):
        return "–"
    return f"{row['mean']:.3f}" + (f" ± {row['std_over_subjects']:.3f}" if n_subjects > 1 else "")


# ---------------------------------------------------------------------------------------------
# The floors of Table 1c
# ---------------------------------------------------------------------------------------------


def shuffled_eeg_cell(cell: Path, force: bool = False) -> dict:
    """A finished cell's model tested again on EEG shuffled within each run (the permutation floor,
    ``--shuffle_eeg.enabled true``), with the cell's own arguments; reused when done."""
    from eeg2fmri.trainer import run_trainer

    args = json.loads((cell / "cell_args.json").read_text())
    ckpt = cell / "checkpoints" / "last.ckpt"
    out = cell / "eeg_shuffled"
    stamp = [*args, str(ckpt.stat().st_mtime_ns)]
    done = out / "test_metrics.json"
    if (
        not force
        and done.exists()
        and (out / "cell_args.json").exists()
        and json.loads((out / "cell_args.json").read_text()) == stamp
    ):
        return json.loads(done.read_text())
    run_trainer(
        ["test", *args, "--ckpt_path", str(ckpt), "--shuffle_eeg.enabled", "true", "--evaluator.results_dir", str(out)]
    )
    atomic_write_text(out / "cell_args.json", json.dumps(stamp))
    return json.loads(done.read_text())


def table1_floors(caches: dict[int, Path], res: dict, out: Path, subjects, ks, slugs, force: bool = False) -> dict:
    """(subject, K, floor name) -> metrics: the session floors of each subject's cache, and every
    EEG model's cell scored on EEG shuffled within run."""
    from eeg2fmri.floors import session_floors

    floors = {}
    for s in subjects:
        for k in ks:
            for name, metrics in session_floors(caches[s], k, REGIONS).items():
                floors[(s, k, name)] = metrics
            for m in slugs:
                if m == "mean":  # no EEG to shuffle
                    continue
                say(f"subject {s}, K={k}, {SLUGS[m]}: tested on EEG shuffled within run")
                shuffled = shuffled_eeg_cell(out / "cells" / f"sub{s}" / f"K{k}" / m, force=force)
                floors[(s, k, f"{SLUGS[m]} (EEG shuffled within run)")] = shuffled["metrics"]["model"]
    return floors


def write_floors(floors: dict, out: Path, subjects, ks, protocol: str) -> None:
    """Table 1c appended to table1.md, and table1_floors.csv; the protocol line goes on top of
    table1.md and in a column of both CSVs."""
    names = list(dict.fromkeys(name for (_, _, name) in floors))
    rows = []
    md = io.StringIO()
    md.write("\n# Table 1c — floors: what the scores above are made of under this protocol\n\n")
    md.write(
        "Run mean (train): each test frame predicted by the mean training frame of its run (the nearest run with\n"
        "training frames if it has none). Nearest train frame: by the training frame closest in recording time.\n"
        "EEG shuffled within run: the method's checkpoint tested on test EEG permuted within each run (no frame keeps\n"
        "its own). A method that scores no better than these does not use the frame's EEG. Temporal r is undefined\n"
        "(–) for a floor that is constant over the test frames of a grayordinate.\n\n"
    )
    md.write("| K | floor | " + SPATIAL_COLUMNS + " | " + " | ".join(f"{r} temporal r" for r in REGIONS) + " |\n")
    md.write("|---|---|" + "---|" * len(REGION_KEYS) + "\n")
    for k in ks:
        for name in names:
            per = [floors.get((s, k, name)) for s in subjects]
            if any(p is None for p in per):
                continue
            vals = {key: mean_std([p.get(key) for p in per]) for key in REGION_KEYS}
            cells = [
                f"{m:.3f}" + (f" ± {sd:.3f}" if len(subjects) > 1 else "") if math.isfinite(m) else "–"
                for m, sd in vals.values()
            ]
            md.write(f"| {k} | {name} | " + " | ".join(cells) + " |\n")
            for key, (m, sd) in vals.items():
                region, metric = key.split("/")
                rows.append(
                    {
                        "K": k,
                        "method": name,
                        "region": region,
                        "metric": metric,
                        "mean": m,
                        "std_over_subjects": sd,
                        "n_subjects": len(subjects),
                        "per_subject": json.dumps([p.get(key) for p in per]),
                        "protocol": protocol,
                    }
                )
    text = (out / "table1.md").read_text()
    head, _, rest = text.partition("\n")
    atomic_write_text(out / "table1.md", f"{head}\n\nProtocol: {protocol}\n{rest}{md.getvalue()}")
    if rows:
        atomic_write_csv(out / "table1_floors.csv", rows, list(rows[0]))
    add_column(out / "table1.csv", "protocol", protocol)
