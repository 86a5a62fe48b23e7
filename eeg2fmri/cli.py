"""The ``eeg2fmri`` command: LightningCLI's fit / validate / test / predict, plus the data and
user-facing jobs (simulate, prepare, import-cinebrain, fill, evaluate, bench, reproduce), each a
small function.

    eeg2fmri simulate --out_dir data/raw --scale ci
    eeg2fmri import-cinebrain --release_dir /data/CineBrain --subjects [1] --out_dir data/raw
    eeg2fmri prepare --subject_dir data/raw/sub_0001
    eeg2fmri fit --config configs/sub1.yaml
    eeg2fmri test --config configs/sub1.yaml --ckpt_path runs/sub1/checkpoints/last.ckpt
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

import torch
from jsonargparse import ActionConfigFile, ArgumentParser, lazy_instance
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from eeg2fmri.callbacks import EMA, AtomicCheckpointIO, CiftiWriter, Compile, Evaluator, FiniteLossGuard
from eeg2fmri.data.datamodule import EEGfMRIDataModule
from eeg2fmri.figures import SurfaceFigures
from eeg2fmri.floors import ShuffleEEG
from eeg2fmri.module import EEGfMRIModule, check_checkpoint_file

DATA_FACTS = ("n_vertices", "n_chans", "n_times")


class EEG2fMRICLI(LightningCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(Evaluator, "evaluator")
        parser.add_lightning_class_args(EMA, "ema")
        parser.add_lightning_class_args(Compile, "compile")
        parser.add_lightning_class_args(FiniteLossGuard, "loss_guard")
        parser.add_lightning_class_args(CiftiWriter, "writer")
        parser.add_lightning_class_args(SurfaceFigures, "surface")
        parser.add_lightning_class_args(ShuffleEEG, "shuffle_eeg")
        # data facts stated once, in the data; the model receives them
        parser.link_arguments("data.n_frames", "model.init_args.n_frames")
        for fact in DATA_FACTS:
            parser.link_arguments("data", f"model.init_args.{fact}", compute_fn=_fact(fact), apply_on="instantiate")
        parser.set_defaults({"model": {"class_path": "eeg2fmri.module.EEG2fMRIDiffusion"}})


def _fact(name: str) -> Callable:
    return lambda dm: getattr(dm, name)


def trainer_defaults() -> dict:
    cuda = torch.cuda.is_available()
    return {
        "precision": "bf16-mixed" if cuda else "32-true",
        "max_epochs": 200,
        "log_every_n_steps": 50,
        "default_root_dir": "runs",
        "plugins": [lazy_instance(AtomicCheckpointIO)],
        "callbacks": [
            # best.ckpt by validation loss; last.ckpt rewritten after every epoch (resume point:
            # ModelCheckpoint's own save_last only follows saves of the monitored checkpoint)
            ModelCheckpoint(monitor="val/loss", mode="min", save_top_k=1, filename="best"),
            ModelCheckpoint(filename="last", save_top_k=1, enable_version_counter=False),
        ],
    }


def lightning_main(args: list[str] | None) -> LightningCLI:
    return EEG2fMRICLI(
        EEGfMRIModule,
        EEGfMRIDataModule,
        subclass_mode_model=True,
        trainer_defaults=trainer_defaults(),
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        args=args,
        parser_kwargs={"prog": "eeg2fmri", "default_env": False},
    )


# ---------------------------------------------------------------------------------------------
# Subcommands beyond the Trainer's
# ---------------------------------------------------------------------------------------------


def _run_function(name: str, fn: Callable, argv: list[str]):
    """Parse ``argv`` against ``fn``'s signature and docstring (its --help), then call it."""
    doc = (fn.__doc__ or "").strip().split("\n\n")[0]
    parser = ArgumentParser(prog=f"eeg2fmri {name}", description=doc, default_env=False)
    parser.add_argument("--config", action=ActionConfigFile, help="a YAML file with any of the options below")
    parser.add_function_arguments(fn, as_group=False)
    kwargs = parser.parse_args(argv).as_dict()
    kwargs.pop("config", None)
    return fn(**kwargs)


def cmd_simulate(argv: list[str]) -> None:
    from eeg2fmri.data.simulate import simulate

    written = _run_function("simulate", simulate, argv)
    print(f"simulate: wrote {len(written)} subject folder(s): {', '.join(map(str, written))}")


def cmd_prepare(argv: list[str]) -> None:
    from eeg2fmri.data.prepare import prepare_subjects

    written = _run_function("prepare", prepare_subjects, argv)
    print(f"prepare: {len(written)} cache(s) ready: {', '.join(map(str, written))}")


def cmd_import_cinebrain(argv: list[str]) -> None:
    from eeg2fmri.data.release import import_cinebrain

    written = _run_function("import-cinebrain", import_cinebrain, argv)
    print(f"import-cinebrain: {len(written)} subject folder(s) ready: {', '.join(map(str, written))}\n"
          f"next: eeg2fmri prepare --subject_dir {written[0] if written else '<raw>/sub_0001'}")  # fmt: skip


def cmd_bench(argv: list[str]) -> None:
    from eeg2fmri.bench import bench, format_table

    results = _run_function("bench", bench, argv)
    print(format_table(results))
    if results.get("errors"):
        sys.exit(f"eeg2fmri bench: {', '.join(results['errors'])} failed (see the log above and {results['out']})")


def cmd_reproduce(argv: list[str]) -> None:
    from eeg2fmri.reproduce import reproduce

    if argv and not argv[0].startswith("-"):  # `eeg2fmri reproduce fill ...` (the Makefile's form)
        argv = ["--target", *argv]
    print(f"reproduce: {_run_function('reproduce', reproduce, argv)}")


def cmd_fill(argv: list[str]) -> None:
    from eeg2fmri.fill import fill

    args: list[str] = []
    for i, a in enumerate(argv):  # a bare `--overwrite` / `--censor_keep_is_one` means true
        bare = a in ("--overwrite", "--censor_keep_is_one") and (i + 1 == len(argv) or argv[i + 1].startswith("--"))
        args += [a, "true"] if bare else [a]
    _run_function("fill", fill, args)


def cmd_evaluate(argv: list[str]) -> None:
    from eeg2fmri.evaluate import evaluate

    _run_function("evaluate", evaluate, argv)


EXTRA: dict[str, tuple[Callable[[list[str]], None], str]] = {
    "simulate": (cmd_simulate, "write simulated subjects in the CineBrain layout (EEG + CIFTI + behaviour)"),
    "prepare": (cmd_prepare, "raw subject folder -> HDF5 cache (filter, align with the 4 s shift, split, normalise)"),
    "import-cinebrain": (cmd_import_cinebrain, "the CineBrain release as published (per-frame EEG windows) -> raw subject folders"),
    "reproduce": (cmd_reproduce, "the paper's tables and figures: table1, table2 (+ Figure 3), ablation (Table S4), fill"),
    "fill": (cmd_fill, "fill censored / lost frames of a CIFTI run from its EEG (InterRecon; or linear, cubic)"),
    "evaluate": (cmd_evaluate, "score any predicted CIFTI run against a reference with every metric, per region"),
    "bench": (cmd_bench, "time the training step and DDIM sampler against a bare-PyTorch reference (--scale ci|paper)"),
}

TRAINER_COMMANDS = {
    "fit": "train a model (e.g. --config configs/sub1.yaml)",
    "validate": "evaluate on the validation clips",
    "test": "evaluate on the test clips, write test_metrics.json/.csv next to the checkpoint",
    "predict": "write one .dtseries.nii per test run",
}


def _overview() -> str:
    lines = ["usage: eeg2fmri <command> [options]   (eeg2fmri <command> --help for its options)", "", "commands:"]
    for name, text in TRAINER_COMMANDS.items():
        lines.append(f"  {name:<16} {text}")
    for name, (_, text) in EXTRA.items():
        lines.append(f"  {name:<16} {text}")
    return "\n".join(lines)


def main(args: list[str] | None = None) -> None:
    """Entry point of ``eeg2fmri`` and ``python -m eeg2fmri``; tests call it with a list."""
    explicit = args is not None
    args = list(sys.argv[1:] if args is None else args)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not args or args[0] in ("-h", "--help"):
        print(_overview())
        return
    if args[0] in EXTRA:
        EXTRA[args[0]][0](args[1:])
        return
    ckpt = _ckpt_arg(args)
    if ckpt not in (None, "last", "best", "hpc"):
        check_checkpoint_file(ckpt)
    lightning_main(args if explicit else None)


def _ckpt_arg(args: list[str]) -> str | None:
    for i, a in enumerate(args):
        if a == "--ckpt_path" and i + 1 < len(args):
            return args[i + 1]
        if a.startswith("--ckpt_path="):
            return a.split("=", 1)[1]
    return None
