"""A cell: one (subject, K, method) trained and tested through the Trainer's commands.

Every result of the tables is a cell trained with ``eeg2fmri fit`` then tested with ``eeg2fmri test``
on the same prepared windows; a cell's folder keeps its checkpoint, ``test_metrics.json`` and
``test_predictions.npz``, and a finished cell is reused: the arguments it was run with are stored
beside it (``cell_args.json``), with a hash of each config file it read (``cell_configs.json``), and
changed arguments or an edited config rerun it.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from eeg2fmri.data.cifti import atomic_write_text
from eeg2fmri.experiments.scales import Scale
from eeg2fmri.experiments.tables import say

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

# every method a cell trains: table name -> (slug, config composed after configs/sub<N>.yaml, or None
# for that config alone). "paper/sub<N>.yaml" replaces the subject config: the paper's model as published.
CELL_METHODS: dict[str, tuple[str, str | None]] = {
    "Mean frame": ("mean", "baselines/mean.yaml"),
    "Ridge": ("ridge", "baselines/ridge.yaml"),
    "FIR ridge": ("fir_ridge", "baselines/fir_ridge.yaml"),
    "CNN-TC": ("cnn_tc", "baselines/cnn_tc.yaml"),
    "CNN-TAG": ("cnn_tag", "baselines/cnn_tag.yaml"),
    "E2fNet": ("e2fnet", "baselines/e2fnet.yaml"),
    "E2fGAN": ("e2fgan", "baselines/e2fgan.yaml"),
    "Paper's model (as published)": ("paper", "paper/sub{subject}.yaml"),
    "Ours": ("diffusion", None),
    "Ours, EEG-conditioned DiT": ("diffusion_cond", "ablation/cond_dit.yaml"),
}
SLUGS = {slug: name for name, (slug, _) in CELL_METHODS.items()}


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


def _cell_args(
    subject: int, k: int, slug: str, scale: Scale, cache: Path, out: Path, extra: list[str] = ()
) -> list[str]:
    """The arguments of a cell's ``fit`` (its ``test`` adds the checkpoint and where results go)."""
    config = CELL_METHODS[SLUGS[slug]][1]
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
    # the paper's model and the conditioned DiT take the scale's sizes of the default model unless given their own
    shared = slug in ("paper", "diffusion_cond")
    overrides = scale.model.get(slug, scale.model.get("diffusion", {})) if shared else scale.model.get(slug, {})
    return args + _model_args(overrides) + list(extra)


def _config_hashes(args: list[str]) -> dict[str, str]:
    """The SHA-256 of each file a cell's arguments name with ``--config``: a config edited since the
    cell was trained (a default changed there) changes what the same arguments train."""
    files = [args[i + 1] for i, a in enumerate(args[:-1]) if a == "--config"]
    return {f: hashlib.sha256(Path(f).read_bytes()).hexdigest() for f in files}


def run_cell(
    subject: int, k: int, slug: str, scale: Scale, cache: Path, out: Path, extra: list[str] = (), force: bool = False
) -> dict:
    """Train and test one (subject, K, method) cell through the CLI; reuse it when already done.
    Training prints its progress (a line every 20 s in a log, Lightning's bar in a terminal): a
    Table 1 cell at SCALE=small trains for about 25 minutes."""
    from eeg2fmri.trainer import run_trainer

    args = _cell_args(subject, k, slug, scale, cache, out, extra)
    done, stamp, configs = out / "test_metrics.json", out / "cell_args.json", out / "cell_configs.json"
    hashes = _config_hashes(args)  # the configs as this run reads them
    # a cell stamped before the config hashes were kept is judged by its arguments alone
    edited = configs.exists() and json.loads(configs.read_text()) != hashes
    if edited:
        say(f"  {out}: a config it was trained with has changed since; training it again")
    if (
        not force
        and not edited
        and done.exists()
        and stamp.exists()
        and _cell_key(json.loads(stamp.read_text())) == _cell_key(args)
    ):
        return json.loads(done.read_text())
    t0 = time.perf_counter()
    run_trainer(["fit", *args])
    ckpt = out / "checkpoints" / "last.ckpt"
    run_trainer(
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
    atomic_write_text(configs, json.dumps(hashes))
    atomic_write_text(stamp, json.dumps(args))
    say(f"  done in {time.perf_counter() - t0:.0f} s")
    return json.loads(done.read_text())
