"""The paper's tables and figures, regenerated: ``make reproduce-table1`` / ``-table2`` / ``-ablation``,
and the censored-frame filling study ``make reproduce-fill`` (:func:`fill_study`).

Every result is a *cell* (subject, K, method) trained and tested through the real CLI
(``eeg2fmri fit`` then ``eeg2fmri test``) on the same prepared windows; a cell's folder keeps its
checkpoint, ``test_metrics.json`` and ``test_predictions.npz``, and a finished cell is reused (the
arguments it was run with are stored beside it: changed arguments rerun it). Tables are written as
markdown and CSV under ``results/<scale>/``.

Scales (``SCALE=``): ``ci`` (simulated CI-sized subjects on every 20th grayordinate, CPU-sized
models, a few epochs: minutes on 2 cores), ``small`` (the simulator's small scale, every 4th
grayordinate, longer training), ``paper`` (the paper's data size and the configs' own settings:
91,282 grayordinates, 200 epochs; a GPU job). Without real data, subjects are simulated; point
``--raw`` at a folder of CineBrain subjects to use real ones.
"""

from __future__ import annotations

import io
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from eeg2fmri.data.cifti import atomic_save, atomic_write_csv, atomic_write_text

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
REGIONS = ("whole", "V1", "V1+A1")

# table name -> (slug, config composed after configs/sub<N>.yaml, or None for that config alone).
# "paper/sub<N>.yaml" replaces the subject config: the paper's model as published.
METHODS: dict[str, tuple[str, str | None]] = {
    "Mean frame": ("mean", "baselines/mean.yaml"),
    "Ridge": ("ridge", "baselines/ridge.yaml"),
    "FIR ridge": ("fir_ridge", "baselines/fir_ridge.yaml"),
    "CNN-TC": ("cnn_tc", "baselines/cnn_tc.yaml"),
    "CNN-TAG": ("cnn_tag", "baselines/cnn_tag.yaml"),
    "E2fNet": ("e2fnet", "baselines/e2fnet.yaml"),
    "E2fGAN": ("e2fgan", "baselines/e2fgan.yaml"),
    "Paper's model (as published)": ("paper", "paper/sub{subject}.yaml"),
    "Ours": ("diffusion", None),
}
SLUGS = {slug: name for name, (slug, _) in METHODS.items()}
SAMPLING = ("paper", "diffusion")  # methods whose test also scores one DDIM sample (a second row)


@dataclass
class Scale:
    simulate: str  # the simulator's scale
    grayordinates: str  # the simulator's grayordinates
    ks: tuple[int, ...]  # window lengths of Table 1
    epochs: dict[str, int] = field(default_factory=dict)  # per method slug (missing: the config's)
    model: dict[str, dict] = field(
        default_factory=dict
    )  # per method slug: --model.* overrides (paper: else diffusion's)
    extra: list[str] = field(default_factory=list)  # other CLI arguments for every cell
    # InterRecon samples averaged for Table 2's posterior-mean row (the average of N null-space samples
    # nears the posterior mean given EEG and anchors as N grows; its cost is N samplings per fill)
    interrecon_samples: int = 4
    fill_samples: int = 1  # InterRecon samples per window in the fill study (`eeg2fmri fill --num_samples`)


_CPU_DIFFUSION = dict(latent_dim=128, eeg_embed_dim=64, eeg_channels=32, hidden_size=128, depth=2, num_heads=4, lr=1e-3)
_CPU_NETS = {
    "cnn_tc": dict(channels=16, latent_dim=64, decoder_channels=16),
    "cnn_tag": dict(channels=8, latent_dim=64),
    "e2fnet": dict(unet_channels=32, base_channels=8),
    "e2fgan": dict(unet_channels=32, base_channels=8),
    "ridge": dict(alpha=1e4),
}
SCALES: dict[str, Scale] = {
    "ci": Scale(
        simulate="ci",
        grayordinates="every:20",
        ks=(3, 10, 30),
        epochs={
            "diffusion": 15,
            "paper": 15,
            "cnn_tc": 3,
            "cnn_tag": 3,
            "e2fnet": 3,
            "e2fgan": 3,
            "mean": 1,
            "ridge": 1,
            "fir_ridge": 1,
        },
        model={"diffusion": _CPU_DIFFUSION, **_CPU_NETS},
        extra=[
            "--data.batch_size",
            "16",
            "--ema.decay",
            "0.99",
            "--evaluator.num_inference_steps",
            "20",
            "--evaluator.every_n_epochs",
            "1000",
            "--trainer.num_sanity_val_steps",
            "0",
        ],
    ),
    "small": Scale(
        simulate="small",
        grayordinates="every:4",
        ks=(3, 10, 30),
        epochs={
            "diffusion": 40,
            "paper": 40,
            "cnn_tc": 10,
            "cnn_tag": 10,
            "e2fnet": 10,
            "e2fgan": 10,
            "mean": 1,
            "ridge": 1,
            "fir_ridge": 1,
        },
        # latent d = 48: of the PCA start's dims on this subject's 1,298 training frames, dims 53 on keep
        # 0.05-0.23 of their training variance on the validation frames (the fit's held-out-variance
        # warning; notes/model.md, "The latent dims that generalise"). The paper's model keeps 256.
        model={
            "diffusion": {**_CPU_DIFFUSION, "latent_dim": 48, "hidden_size": 256},
            "paper": {**_CPU_DIFFUSION, "latent_dim": 256, "hidden_size": 256},
            **_CPU_NETS,
        },
        extra=[
            "--data.batch_size",
            "32",
            "--ema.decay",
            "0.999",
            "--evaluator.num_inference_steps",
            "50",
            "--evaluator.every_n_epochs",
            "20",
            "--trainer.num_sanity_val_steps",
            "0",
        ],
        interrecon_samples=64,  # whole r on the filled frames: 0.084 / 0.196 / 0.241 / 0.259 at N = 1 / 16 / 64 / 256
        fill_samples=4,  # InterRecon whole r at 5 / 10 / 20 % censored: 0.373 / 0.316 / 0.283 at N = 1, 0.373 / 0.351 / 0.308 at 4
    ),
    "paper": Scale(simulate="paper", grayordinates="all", ks=(3, 10, 30), interrecon_samples=16),
}


def _sampler_steps(sc: Scale) -> int:
    """DDIM steps of the scale's evaluator (its ``--evaluator.num_inference_steps``, else 50), which
    Table 2 and the fill study sample with too."""
    flag = "--evaluator.num_inference_steps"
    return int(sc.extra[sc.extra.index(flag) + 1]) if flag in sc.extra else 50


def _say(msg: str) -> None:
    print(f"[reproduce {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------------------------------------
# Data and cells
# ---------------------------------------------------------------------------------------------


def ensure_subject(subject: int, scale: Scale, raw: Path, prepared: Path, protocol: str = "project") -> Path:
    """The prepared cache of a subject: real data under ``raw`` if present, else simulated.

    ``protocol="paper"`` (the CineBrain authors' choices) goes through the release form: the
    release at ``raw/release/sub-000N`` (simulated in that form when absent) is imported into
    ``raw/imported/sub_000N`` with ``import_cinebrain`` and prepared with normalize=all, split=tail."""
    from eeg2fmri.data.cinebrain import subject_dirname
    from eeg2fmri.data.prepare import prepare
    from eeg2fmri.data.simulate import simulate

    if protocol == "paper":
        return _ensure_release_subject(subject, scale, raw, prepared)
    folder = raw / subject_dirname(subject)
    if not folder.exists():
        _say(f"simulating subject {subject} ({scale.simulate}, grayordinates {scale.grayordinates}) into {raw}")
        simulate(
            out_dir=str(raw),
            subjects=[subject],
            scale=scale.simulate,
            grayordinates=scale.grayordinates,
            progress=False,
        )
    return prepare(folder, prepared, progress=False)


def _model_args(overrides: dict) -> list[str]:
    return [a for k, v in overrides.items() for a in (f"--model.init_args.{k}", str(v))]


def _cell_key(args: list[str]) -> list[str]:
    """A cell's arguments less those that only change what is printed (the progress bar), so a cell
    trained before reproduce printed its progress is still reused."""
    out, i = [], 0
    while i < len(args):
        if args[i] == "--trainer.enable_progress_bar":
            i += 2
            continue
        out.append(args[i])
        i += 1
    return out


def run_cell(
    subject: int, k: int, slug: str, scale: Scale, cache: Path, out: Path, extra: list[str] = (), force: bool = False
) -> dict:
    """Train and test one (subject, K, method) cell through the CLI; reuse it when already done.
    Training prints its progress (a line every 20 s in a log, Lightning's bar in a terminal): a
    Table 1 cell at SCALE=small trains for about 25 minutes."""
    from eeg2fmri.cli import main

    config = METHODS[SLUGS[slug]][1]
    if config and config.startswith("paper/"):  # a whole config of its own
        args = ["--config", str(CONFIGS / config.format(subject=subject))]
    else:
        args = ["--config", str(CONFIGS / f"sub{subject}.yaml")] + (
            ["--config", str(CONFIGS / config)] if config else []
        )
    args += [
        "--data.data_path",
        str(cache),
        "--data.n_frames",
        str(k),
        "--trainer.default_root_dir",
        str(out),
        "--trainer.logger",
        "false",
        *scale.extra,
    ]
    if slug in scale.epochs:
        args += ["--trainer.max_epochs", str(scale.epochs[slug])]
    overrides = (
        scale.model.get(slug, scale.model.get("diffusion", {})) if slug == "paper" else scale.model.get(slug, {})
    )
    args += _model_args(overrides) + list(extra)
    done, stamp = out / "test_metrics.json", out / "cell_args.json"
    if not force and done.exists() and stamp.exists() and _cell_key(json.loads(stamp.read_text())) == _cell_key(args):
        return json.loads(done.read_text())
    t0 = time.perf_counter()
    main(["fit", *args])
    ckpt = out / "checkpoints" / "last.ckpt"
    main(
        [
            "test",
            *args,
            "--ckpt_path",
            str(ckpt),
            "--evaluator.results_dir",
            str(out),
            "--evaluator.save_predictions",
            "true",
        ]
    )
    atomic_write_text(stamp, json.dumps(args))
    _say(f"  done in {time.perf_counter() - t0:.0f} s")
    return json.loads(done.read_text())


# ---------------------------------------------------------------------------------------------
# Table 1
# ---------------------------------------------------------------------------------------------


def table1(
    scale: str = "ci",
    subjects: list[int] = [1],
    raw: str = "data/raw",
    prepared: str = "data/prepared",  # noqa: B006
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
    slugs = methods or [s for s, _ in METHODS.values()]
    unknown = [s for s in slugs if s not in SLUGS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; expected some of {sorted(SLUGS)}")
    ks_ = tuple(ks or sc.ks)
    cells = [(s, k, m) for s in subjects for k in ks_ for m in slugs]
    res: dict[tuple[int, int, str], dict] = {}
    caches: dict[int, Path] = {}
    for i, (s, k, m) in enumerate(cells, 1):
        caches[s] = cache = ensure_subject(s, sc, raw_p / scale, prep_p, protocol)
        _say(f"[{i}/{len(cells)}] subject {s}, K={k}, {SLUGS[m]}")
        res[(s, k, m)] = run_cell(s, k, m, sc, cache, out / "cells" / f"sub{s}" / f"K{k}" / m, force=force)
    write_table1(res, out, subjects, ks_, slugs)
    floors = table1_floors(caches, res, out, subjects, ks_, slugs, force=force)
    write_floors(floors, out, subjects, ks_, _cache_protocol(caches[subjects[0]]))
    _say(f"Table 1 written to {out / 'table1.md'} and {out / 'table1.csv'} (floors: {out / 'table1_floors.csv'})")
    return out / "table1.md"


def _mean_std(values: list[float]) -> tuple[float, float]:
    v = np.array([x for x in values if x is not None and math.isfinite(x)], float)
    if len(v) == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std())


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
    keys = (
        "mse",
        "r",
        "cos",
        "temporal_r_median",
        "identification_top1",
        "identification_top5",
        "identification_mean_rank",
    )
    for k in ks:
        for name, slug, source in _rows_of(slugs):
            cells = [res[(s, k, slug)] for s in subjects]
            eeg_s = None if source == "ceiling" else cells[0].get("eeg_seconds")
            for region in REGIONS:
                for key in keys:
                    vals = [c["metrics"].get(source, {}).get(f"{region}/{key}") for c in cells]
                    mean, std = _mean_std(vals)
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


def write_table1(res: dict, out: Path, subjects, ks, slugs) -> None:
    rows = [r for r in table1_rows(res, subjects, ks, slugs) if any(v is not None for v in r["per_subject"])]
    look = {(r["K"], r["method"], r["region"], r["metric"]): r for r in rows}
    names = [n for n, _, _ in _rows_of(slugs) if any(r["method"] == n for r in rows)]
    eeg_s = {(r["K"], r["method"]): r["eeg_seconds"] for r in rows}  # the span depends on K for the windowed models
    n = len(subjects)

    def cell(k, name, region, metric):
        row = look.get((k, name, region, metric))
        return "–" if row is None else _fmt(row, n)

    def seconds(k, name):
        return "–" if eeg_s.get((k, name)) is None else f"{eeg_s[(k, name)]:.1f}"

    md = io.StringIO()
    md.write(f"# Table 1 — mean over {n} subject(s): MSE / r / cos per region\n\n")
    md.write(
        "Spatial metrics per test frame (paper, Table 1); ± is the std over subjects when there are several.\n"
        "Rows of the sampling models: *posterior mean* (the estimate that minimises MSE: x̂₀\n"
        "at the noisiest step, or the average of N samples, as the cell's evaluator says) and *one sample* (one\n"
        "DDIM draw: about twice the posterior variance in MSE). *EEG s*: seconds of EEG one predicted frame\n"
        "may depend on (own window 0.8 s; the FIR lags; a K-frame window plus its EEG context).\n\n"
    )
    md.write("| K | method | EEG s | " + " | ".join(f"{r} MSE | {r} r | {r} cos" for r in REGIONS) + " |\n")
    md.write("|---|---|---|" + "---|" * (3 * len(REGIONS)) + "\n")
    for k in ks:
        for name in names:
            cells = [cell(k, name, region, m) for region in REGIONS for m in ("mse", "r", "cos")]
            md.write(f"| {k} | {name} | {seconds(k, name)} | " + " | ".join(cells) + " |\n")
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
                c = cell(k, name, region, "temporal_r_median")
                ceil = look.get((k, "Noise ceiling", region, "temporal_r_median"))
                mine = look.get((k, name, region, "temporal_r_median"))
                if ceil and mine and name != "Noise ceiling" and math.isfinite(mine["mean"]) and ceil["mean"] > 0:
                    c += f" ({mine['mean'] / ceil['mean']:.2f})"
                cells.append(c)
            cells += [
                cell(k, name, "whole", m)
                for m in ("identification_top1", "identification_top5", "identification_mean_rank")
            ]
            md.write(f"| {k} | {name} | {seconds(k, name)} | " + " | ".join(cells) + " |\n")
    for s in subjects:  # Tables S1-S3: per subject, mean ± std over test windows
        md.write(f"\n# Subject {s} — mean ± std over test windows (Tables S1–S3)\n\n")
        md.write("| K | method | " + " | ".join(f"{r} MSE | {r} r | {r} cos" for r in REGIONS) + " |\n")
        md.write("|---|---|" + "---|" * (3 * len(REGIONS)) + "\n")
        for k in ks:
            for name, m, source in _rows_of(slugs)[:-1]:
                met = res[(s, k, m)]["metrics"].get(source)
                if met is None:
                    continue
                cells = [
                    f"{met[f'{region}/{x}']:.3f} ± {met[f'{region}/{x}_std']:.3f}"
                    for region in REGIONS
                    for x in ("mse", "r", "cos")
                ]
                md.write(f"| {k} | {name} | " + " | ".join(cells) + " |\n")
    atomic_write_text(out / "table1.md", md.getvalue())
    kept = [{**r, "per_subject": json.dumps(r["per_subject"])} for r in rows]
    fields = [
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
    atomic_write_csv(out / "table1.csv", kept, fields)


def _fmt(row: dict, n_subjects: int) -> str:
    if not math.isfinite(row["mean"]):
        return "–"
    return f"{row['mean']:.3f}" + (f" ± {row['std_over_subjects']:.3f}" if n_subjects > 1 else "")


# ---------------------------------------------------------------------------------------------
# The protocol, and the floors of Table 1c
# ---------------------------------------------------------------------------------------------

PROTOCOLS = {
    "project": "the project's: fMRI z-scored with training statistics, random whole clips as test",
    "paper": "the CineBrain authors': the release form imported, z-score over all frames (ddof 1), the recording's last 20 % as test",
}


def protocol_tag(scale: str, protocol: str) -> str:
    """The folder of a scale's caches and results under a protocol (``ci``, ``ci-paper``)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol={protocol!r}: expected one of {', '.join(PROTOCOLS)}")
    return scale if protocol == "project" else f"{scale}-{protocol}"


def _ensure_release_subject(subject: int, scale: Scale, raw: Path, prepared: Path) -> Path:
    from eeg2fmri.data.prepare import PrepareOptions, prepare
    from eeg2fmri.data.release import import_cinebrain
    from eeg2fmri.data.simulate import release_dirname, simulate

    release = raw / "release"
    if not (release / release_dirname(subject)).exists() and not (release / f"sub_{subject:04d}").exists():
        _say(f"simulating subject {subject} in the CineBrain release form ({scale.simulate}) into {release}")
        simulate(
            out_dir=str(release),
            subjects=[subject],
            scale=scale.simulate,
            grayordinates=scale.grayordinates,
            form="release",
            progress=False,
        )
    (folder,) = import_cinebrain(str(release), [subject], str(raw / "imported"), overwrite=True)
    return prepare(folder, prepared, PrepareOptions(normalize="all", split="tail"), progress=False)


def _cache_protocol(cache: Path) -> str:
    import h5py

    with h5py.File(cache, "r") as h5:
        return str(h5.attrs.get("protocol", "normalize=train; split=clips; detrend=none"))


def shuffled_eeg_cell(cell: Path, force: bool = False) -> dict:
    """A finished cell's model tested again on EEG shuffled within each run (the permutation floor,
    ``--shuffle_eeg.enabled true``), with the cell's own arguments; reused when done."""
    from eeg2fmri.cli import main

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
    main(
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
                _say(f"subject {s}, K={k}, {SLUGS[m]}: tested on EEG shuffled within run")
                shuffled = shuffled_eeg_cell(out / "cells" / f"sub{s}" / f"K{k}" / m, force=force)
                floors[(s, k, f"{SLUGS[m]} (EEG shuffled within run)")] = shuffled["metrics"]["model"]
    return floors


def write_floors(floors: dict, out: Path, subjects, ks, protocol: str) -> None:
    """Table 1c appended to table1.md, and table1_floors.csv; the protocol line goes on top of
    table1.md and in a column of both CSVs."""
    names = list(dict.fromkeys(name for (_, _, name) in floors))
    keys = [f"{r}/{m}" for r in REGIONS for m in ("mse", "r", "cos")] + [f"{r}/temporal_r_median" for r in REGIONS]
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
    md.write(
        "| K | floor | "
        + " | ".join(f"{r} MSE | {r} r | {r} cos" for r in REGIONS)
        + " | "
        + " | ".join(f"{r} temporal r" for r in REGIONS)
        + " |\n"
    )
    md.write("|---|---|" + "---|" * len(keys) + "\n")
    for k in ks:
        for name in names:
            per = [floors.get((s, k, name)) for s in subjects]
            if any(p is None for p in per):
                continue
            vals = {key: _mean_std([p.get(key) for p in per]) for key in keys}
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
    _add_column(out / "table1.csv", "protocol", protocol)


def stamp_protocol(md: Path, csv_path: Path, cache: Path) -> None:
    """The cache's protocol line under a markdown table's title, and as a column of its CSV."""
    protocol = _cache_protocol(cache)
    head, _, rest = md.read_text().partition("\n")
    atomic_write_text(md, f"{head}\n\nProtocol: {protocol}\n{rest}")
    _add_column(csv_path, "protocol", protocol)


def _add_column(path: Path, name: str, value: str) -> None:
    import csv

    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if rows and name not in rows[0]:
        atomic_write_csv(path, [{**r, name: value} for r in rows], [*rows[0], name])


# ---------------------------------------------------------------------------------------------
# Table S4: latent dimension
# ---------------------------------------------------------------------------------------------


def ablation(
    scale: str = "ci",
    subjects: list[int] = [1],
    raw: str = "data/raw",
    prepared: str = "data/prepared",  # noqa: B006
    results: str = "results",
    latents: list[int] = [512, 1024, 2048],
    k: int = 10,
    force: bool = False,
) -> Path:  # noqa: B006
    """Table S4: the diffusion model with latent dimension 512 / 1024 / 2048 (K = 10)."""
    sc = SCALES[scale]
    out = Path(results) / scale
    lines = [
        "# Table S4 — latent dimension d (K = %d), mean over %d subject(s)\n" % (k, len(subjects)),
        "| d | " + " | ".join(f"{r} MSE | {r} r | {r} cos" for r in REGIONS) + " |",
        "|---|" + "---|" * (3 * len(REGIONS)),
    ]
    rows = []
    for d in latents:
        per = []
        for s in subjects:
            cache = ensure_subject(s, sc, Path(raw) / scale, Path(prepared) / scale)
            _say(f"subject {s}, K={k}, latent {d}")
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
        vals = {f"{r}/{m}": _mean_std([p[f"{r}/{m}"] for p in per])[0] for r in REGIONS for m in ("mse", "r", "cos")}
        rows.append({"latent_dim": d, **vals})
        lines.append(
            f"| {d} | " + " | ".join(f"{vals[f'{r}/{m}']:.3f}" for r in REGIONS for m in ("mse", "r", "cos")) + " |"
        )
    atomic_write_text(out / "table_s4.md", "\n".join(lines) + "\n")
    _write_csv(out / "table_s4.csv", rows)
    stamp_protocol(out / "table_s4.md", out / "table_s4.csv", cache)
    _say(f"Table S4 written to {out / 'table_s4.md'}")
    return out / "table_s4.md"


def _write_csv(path: Path, rows: list[dict]) -> None:
    atomic_write_csv(path, rows, list(rows[0]))


# ---------------------------------------------------------------------------------------------
# Table 2 and Figure 3: InterRecon
# ---------------------------------------------------------------------------------------------


def table2(
    scale: str = "ci",
    subjects: list[int] = [1],
    raw: str = "data/raw",
    prepared: str = "data/prepared",  # noqa: B006
    results: str = "results",
    k: int = 10,
    force: bool = False,
) -> Path:
    """Table 2 (InterRecon between the first and last frame of each test window: linear and cubic
    interpolation, the model without and with the null-space step, same checkpoint) and the gap
    sweep of Figure 3 (frames 1..g missing, g = 1..K-2)."""
    import torch

    from eeg2fmri.baselines import FIRRidge
    from eeg2fmri.callbacks import anchor_mask
    from eeg2fmri.data.datamodule import EEGfMRIDataModule
    from eeg2fmri.data.regions import region_columns
    from eeg2fmri.interpolate import cubic_fill, linear_fill
    from eeg2fmri.metrics import RegionMetrics
    from eeg2fmri.module import EEG2fMRIDiffusion

    sc = SCALES[scale]
    out = Path(results) / scale
    evaluator_steps = _sampler_steps(sc)
    n_mean = sc.interrecon_samples  # InterRecon samples averaged for the posterior-mean row
    methods = (
        "Linear",
        "Cubic spline",
        "FIR ridge (EEG only)",
        "Ours, EEG only (posterior mean)",
        "Without null space",
        "With null space (one sample)",
        f"With null space (mean of {n_mean} samples)",
    )
    table: dict[str, list[dict]] = {m: [] for m in methods}
    sweep: dict[str, dict[int, list[float]]] = {m: {} for m in methods}
    for s in subjects:
        cache = ensure_subject(s, sc, Path(raw) / scale, Path(prepared) / scale)
        cell = out / "cells" / f"sub{s}" / f"K{k}" / "diffusion"
        fir_cell = out / "cells" / f"sub{s}" / f"K{k}" / "fir_ridge"
        _say(f"subject {s}: the K={k} diffusion model and FIR ridge")
        run_cell(s, k, "diffusion", sc, cache, cell, force=force)
        run_cell(s, k, "fir_ridge", sc, cache, fir_cell, force=force)
        model = EEG2fMRIDiffusion.load_from_checkpoint(cell / "checkpoints" / "last.ckpt", map_location="cpu").eval()
        fir = FIRRidge.load_from_checkpoint(fir_cell / "checkpoints" / "last.ckpt", map_location="cpu").eval()
        if tuple(fir.eeg_context) != tuple(model.eeg_context):
            raise ValueError(f"{fir_cell} and {cell} were trained with different EEG context; rerun with --force")
        dm = EEGfMRIDataModule(str(cache), n_frames=k, batch_size=16, eeg_context=model.eeg_context)
        dm.setup("test")
        cols = {r: torch.as_tensor(region_columns(r, dm.indices)) for r in REGIONS}

        def fill(name, batch, mask):
            x, eeg, eeg_mask = batch["fmri"], batch["eeg"], batch["eeg_mask"]
            if name == "Linear":
                return linear_fill(x, mask)
            if name == "Cubic spline":
                return cubic_fill(x, mask)
            if name.startswith("FIR ridge"):
                return fir.predict_frames(batch)
            if name.startswith("Ours, EEG only"):
                return model.predict_frames(batch, estimator="mean", num_samples=1)
            n = n_mean if "mean of" in name else 1
            return model.sample_mean(
                eeg,
                n,
                num_inference_steps=evaluator_steps,
                observed=x,
                observed_mask=mask,
                null_space=name != "Without null space",
                eeg_mask=eeg_mask,
            )

        gaps = list(range(1, k - 1))
        _say(f"subject {s}: InterRecon on {len(dm.windows['test'])} test windows, gaps {gaps[0]}..{gaps[-1]}")
        for j, name in enumerate(methods, 1):
            _say(f"subject {s}: [{j}/{len(methods)}] {name}")
            main_metrics = RegionMetrics(cols, dm.n_vertices, identification=False)
            gap_metrics = {g: RegionMetrics({"whole": None}, dm.n_vertices, identification=False) for g in gaps}
            eeg_only = "EEG only" in name  # the anchors do not enter: one prediction per batch serves every gap
            with torch.no_grad():
                for batch in dm.test_dataloader():
                    x = batch["fmri"]
                    mask = anchor_mask(x.shape[0], k)
                    pred = fill(name, batch, mask)
                    main_metrics.update(pred, x, frame_mask=~mask)
                    for g in gaps:
                        m = torch.ones(x.shape[0], k, dtype=torch.bool)
                        m[:, 1 : g + 1] = False
                        gap_metrics[g].update(pred if eeg_only else fill(name, batch, m), x, frame_mask=~m)
            table[name].append(main_metrics.compute())
            for g in gaps:
                sweep[name].setdefault(g, []).append(gap_metrics[g].compute()["whole/r"])
    rows = []
    lines = [
        f"# Table 2 — InterRecon (K = {k}, first and last frame observed), mean over {len(subjects)} subject(s)\n",
        "Metrics on the filled (middle) frames only. *EEG only*: predictions from the EEG without the anchors\n"
        "(FIR ridge; the model's posterior mean). InterRecon rows: one DDIM sample with the anchors imposed by the\n"
        "null-space step, and the average of several such samples (the posterior mean given EEG and anchors).\n",
        "| method | " + " | ".join(f"{r} MSE | {r} r | {r} cos" for r in REGIONS) + " | whole temporal r |",
        "|---|" + "---|" * (3 * len(REGIONS) + 1),
    ]
    for name in methods:
        keys = [f"{r}/{m}" for r in REGIONS for m in ("mse", "r", "cos")] + ["whole/temporal_r_median"]
        vals = {key: _mean_std([t[key] for t in table[name]])[0] for key in keys}
        rows.append({"method": name, **vals})
        lines.append(f"| {name} | " + " | ".join(f"{vals[key]:.3f}" for key in keys) + " |")
    atomic_write_text(out / "table2.md", "\n".join(lines) + "\n")
    _write_csv(out / "table2.csv", rows)
    sweep_rows = [{"gap": g, **{name: _mean_std(sweep[name][g])[0] for name in methods}} for g in range(1, k - 1)]
    _write_csv(out / "fig3_gap_sweep.csv", sweep_rows)
    _plot_sweep(sweep_rows, methods, out / "fig3_gap_sweep.png")
    stamp_protocol(out / "table2.md", out / "table2.csv", cache)
    _say(f"Table 2 written to {out / 'table2.md'}; Figure 3 to {out / 'fig3_gap_sweep.png'}")
    return out / "table2.md"


def _plot_sweep(rows: list[dict], methods, path: Path) -> None:
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
    atomic_save(path, lambda tmp: fig.savefig(tmp, format="png"))


# ---------------------------------------------------------------------------------------------
# Censored-frame filling (motion scrubbing): InterRecon vs linear vs cubic spline
# ---------------------------------------------------------------------------------------------

FILL_METHODS = {"interrecon": "InterRecon", "linear": "Linear", "cubic": "Cubic spline"}  # through `eeg2fmri fill`
STUDY_METHODS = {**FILL_METHODS, "fir_ridge": "FIR ridge (EEG only)"}  # + the EEG-only reference


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
    segments: list[np.ndarray], n_frames: int, rate: float, rng: np.random.Generator, max_burst: int = 5
) -> np.ndarray:
    """Censor ``rate`` of the frames of ``segments`` (arrays of consecutive frame indices, e.g. the
    test clips of a run) in bursts of 1..``max_burst`` frames, as head motion does: (n_frames,) bool.
    Bursts lie inside one segment and are separated by at least one uncensored frame (so each stays
    1..max_burst frames long); the last burst is shortened to hit round(rate x frames) exactly."""
    pool = sum(len(s) for s in segments)
    target = max(1, round(rate * pool))
    mask = np.zeros(n_frames, bool)
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

    from eeg2fmri.data.prepare import SPLITS

    with h5py.File(cache, "r") as h5:
        frame_run, frame_volume = h5["frame_run"][:], h5["frame_volume"][:]
        frame_clip, clip_split = h5["frame_clip"][:], h5["clip_split"][:]
    test = clip_split[frame_clip] == SPLITS["test"]
    out: dict[int, list[np.ndarray]] = {}
    for clip in np.unique(frame_clip[test]):
        rows = np.flatnonzero(frame_clip == clip)
        vols = frame_volume[rows]
        for part in np.split(vols, np.flatnonzero(np.diff(vols) != 1) + 1):  # consecutive volumes
            out.setdefault(int(frame_run[rows[0]]), []).append(part.astype(np.int64))
    return dict(sorted(out.items()))


def fill_study(
    scale: str = "ci",
    subjects: list[int] = [1],
    raw: str = "data/raw",
    prepared: str = "data/prepared",  # noqa: B006
    results: str = "results",
    rates: list[float] = [0.05, 0.1, 0.2],
    force: bool = False,  # noqa: B006
    k: int = 10,
) -> Path:
    """Censored-frame filling on simulated (or real) subjects: in every run holding test clips,
    censor ``rates`` of the test-clip frames in bursts of 1-5 frames (seeded), fill them with
    ``eeg2fmri fill`` (InterRecon with the K = 10 diffusion cell, linear, cubic spline; files under
    ``results/<scale>/fill/``), predict them from the EEG alone with the K = 10 FIR ridge cell (the
    EEG-only reference), and score the censored frames only, against the recorded BOLD and,
    where the simulator kept it, the noise-free BOLD -> ``fill.md``, ``fill.csv``, ``fill.png``."""
    import h5py
    import torch

    from eeg2fmri.baselines import FIRRidge
    from eeg2fmri.data.censor import write_censor
    from eeg2fmri.data.cifti import read_dtseries
    from eeg2fmri.data.cinebrain import discover_runs, subject_dirname
    from eeg2fmri.evaluate import score
    from eeg2fmri.fill import fill_run

    sc = SCALES[scale]
    out = Path(results) / scale
    steps = _sampler_steps(sc)
    res: dict[tuple, dict] = {}  # (subject, rate, method, reference) -> metrics
    n_scored: dict[tuple, int] = {}  # (subject, rate) -> censored frames scored
    for s in subjects:
        cache = ensure_subject(s, sc, Path(raw) / scale, Path(prepared) / scale)
        cell = out / "cells" / f"sub{s}" / f"K{k}" / "diffusion"
        _say(f"subject {s}: the K={k} diffusion model")
        run_cell(s, k, "diffusion", sc, cache, cell, force=force)
        ckpt = cell / "checkpoints" / "last.ckpt"
        fir_cell = out / "cells" / f"sub{s}" / f"K{k}" / "fir_ridge"
        run_cell(s, k, "fir_ridge", sc, cache, fir_cell, force=force)
        fir = FIRRidge.load_from_checkpoint(fir_cell / "checkpoints" / "last.ckpt", map_location="cpu").eval()
        fir_prep = torch.load(fir_cell / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)[
            "eeg2fmri_data"
        ]
        with h5py.File(cache, "r") as h5:
            indices, mean, std = (
                h5["indices"][:],
                h5["fmri_mean"][:].astype(np.float64),
                h5["fmri_std"][:].astype(np.float64),
            )
        runs = {r.run: r for r in discover_runs(Path(raw) / scale / subject_dirname(s))}
        segments = _test_segments(cache)
        for rate in rates:
            folder = out / "fill" / f"sub{s}" / f"censor{round(rate * 100):02d}"
            rows: dict[str, list[np.ndarray]] = {m: [] for m in [*STUDY_METHODS, "real", "noise-free"]}
            for r, segs in segments.items():
                run = runs[r]
                n_vol = _n_frames(run.fmri)
                rng = np.random.default_rng([s, r, round(rate * 1000)])
                censored = censor_bursts(segs, n_vol, rate, rng)
                censor = write_censor(folder / f"run-{r}_censor.tsv", censored)
                _say(
                    f"subject {s}, run {r}: {int(censored.sum())} of {sum(map(len, segs))} test frames censored ({rate:.0%})"
                )
                cols = None
                for method in FILL_METHODS:
                    path = folder / f"run-{r}_{method}.dtseries.nii"
                    n = sc.fill_samples if method == "interrecon" else 1
                    if force or not _fill_done(path, censored, ckpt if method == "interrecon" else None, n):
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
                            num_samples=n,
                        )
                    filled = read_dtseries(path)
                    cols = np.searchsorted(filled.indices, indices)  # the cache's columns in the file
                    rows[method].append(filled.data[censored][:, cols])
                fir_z = _fir_predictions(fir, fir_prep, run.eeg, n_vol, np.flatnonzero(censored))  # (n, V) z-units
                rows["fir_ridge"].append(fir_z * std + mean)  # to BOLD units, like the files
                rows["real"].append(read_dtseries(run.fmri).data[censored][:, cols])
                if run.truth is not None:
                    rows["noise-free"].append(read_dtseries(run.truth).data[censored][:, cols])
            z = {m: (np.concatenate(v) - mean) / std for m, v in rows.items() if v}  # training z-units, (N, V)
            n_scored[(s, rate)] = len(z["real"])
            for method in STUDY_METHODS:
                for ref in ("real", "noise-free"):
                    if ref in z:
                        res[(s, rate, method, ref)] = score(z[method], z[ref], indices, REGIONS, identification=False)
            if "noise-free" in z:  # the ceiling: the noise-free BOLD itself scored against the recording
                res[(s, rate, "ceiling", "real")] = score(
                    z["noise-free"], z["real"], indices, REGIONS, identification=False
                )
    rows_out = _fill_rows(res, subjects, rates, n_scored)
    _write_fill_table(rows_out, out, subjects, k)
    _write_csv(out / "fill.csv", rows_out)
    _plot_fill(rows_out, out / "fill.png")
    stamp_protocol(out / "fill.md", out / "fill.csv", cache)
    _say(f"fill study written to {out / 'fill.md'}, {out / 'fill.csv'} and {out / 'fill.png'}")
    return out / "fill.md"


def _n_frames(path: Path) -> int:
    from eeg2fmri.data.cifti import load_header

    return int(load_header(path)[0].shape[0])


def _fill_done(path: Path, censored: np.ndarray, ckpt: Path | None, num_samples: int = 1) -> bool:
    """A fill written earlier for the same censored frames (and, for InterRecon, a checkpoint no
    newer than it and the same number of samples per window) is reused."""
    import nibabel as nib

    if not path.exists() or (ckpt is not None and ckpt.stat().st_mtime > path.stat().st_mtime):
        return False
    try:
        note = json.loads(nib.load(path).header.matrix.metadata["eeg2fmri_fill"])
    except Exception:
        return False
    return (
        note.get("censored_frames") == np.flatnonzero(censored).tolist() and note.get("num_samples", 1) == num_samples
    )


_FILL_KEYS = [f"{r}/{m}" for r in REGIONS for m in ("mse", "r", "cos")] + [f"{r}/temporal_r_median" for r in REGIONS]


def _fill_rows(res: dict, subjects, rates, n_scored) -> list[dict]:
    rows = []
    for rate in rates:
        for method, name in [*STUDY_METHODS.items(), ("ceiling", "Noise ceiling")]:
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
                for key in _FILL_KEYS:
                    mean_, std_ = _mean_std([p[key] for p in per])
                    row[key], row[f"{key}_std_over_subjects"] = mean_, std_
                rows.append(row)
    return rows


def _write_fill_table(rows: list[dict], out: Path, subjects, k: int) -> None:
    lines = [
        f"# Censored-frame filling — InterRecon (K = {k}) vs linear vs cubic spline, mean over {len(subjects)} subject(s)\n",
        "Frames censored inside the test clips in bursts of 1–5 frames (seeded); InterRecon, linear and cubic spline\n"
        "fill them through `eeg2fmri fill`, FIR ridge predicts them from the EEG alone (no neighbouring frames);\n"
        "metrics on the censored frames only, in the training z-units. *real*: against the recorded\n"
        "BOLD; *noise-free*: against the simulator's noise-free BOLD. The noise ceiling is the noise-free BOLD scored\n"
        "against the recording: what a perfect estimate of the signal reaches against the real data.\n",
        "| censored | method | reference | frames | "
        + " | ".join(f"{r} MSE | {r} r | {r} cos" for r in REGIONS)
        + " | whole temporal r |",
        "|---|---|---|---|" + "---|" * (3 * len(REGIONS) + 1),
    ]
    for row in rows:
        cells = [f"{row[f'{r}/{m}']:.3f}" for r in REGIONS for m in ("mse", "r", "cos")] + [
            f"{row['whole/temporal_r_median']:.3f}"
        ]
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
        for j, name in enumerate([*STUDY_METHODS.values(), "Noise ceiling"]):
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
    fig.suptitle("Filling censored frames: InterRecon vs interpolation")
    fig.tight_layout()
    atomic_save(path, lambda tmp: fig.savefig(tmp, format="png"))


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------


def reproduce(
    target: Literal["table1", "table2", "ablation", "fill"],
    scale: Literal["ci", "small", "paper"] = "ci",
    subjects: list[int] = [1],  # noqa: B006
    raw: str = "data/raw",
    prepared: str = "data/prepared",
    results: str = "results",
    methods: list[str] | None = None,
    ks: list[int] | None = None,
    force: bool = False,
    protocol: Literal["project", "paper"] = "project",
) -> Path:
    """Regenerate a table of the paper (cells already finished are reused).

    Args:
        target: table1 (every method x K x region, with S1-S3 and the temporal/identification table),
            table2 (InterRecon and the gap sweep of Figure 3), ablation (latent size, Table S4) or fill
            (censored-frame filling: InterRecon vs linear vs cubic spline at 5 / 10 / 20 % censored).
        scale: ci (minutes on a CPU), small (about two hours on 2 CPU cores), paper (the paper's data and
            settings; a GPU job).
        subjects: subject numbers (real data under RAW/<scale>/sub_000N is used when present, else simulated).
        raw: folder of raw subject folders (a <scale> subfolder is used).
        prepared: folder of prepared caches (a <scale> subfolder is used).
        results: output folder (a <scale> subfolder is used).
        methods: table1 only: method slugs (mean, ridge, cnn_tc, cnn_tag, e2fnet, e2fgan, diffusion).
        ks: table1 only: window lengths K in frames (default 3, 10, 30).
        force: recompute finished cells.
        protocol: project (z-score with training statistics, random whole clips as test) or paper (the
            CineBrain authors': the release form imported with import-cinebrain, z-score over all frames,
            the recording's last 20 % as test); table1 only. Caches and results of paper go to
            <scale>-paper folders.
    """
    common = dict(scale=scale, subjects=subjects, raw=raw, prepared=prepared, results=results, force=force)
    if protocol != "project" and target != "table1":
        raise ValueError(f"protocol={protocol!r} is implemented for table1; {target} runs on the project's protocol")
    if target == "table1":
        return table1(methods=methods, ks=ks, protocol=protocol, **common)
    if target == "table2":
        return table2(**common)
    if target == "fill":
        return fill_study(**common)
    return ablation(**common)
