"""The ``eeg2fmri`` command: LightningCLI's fit / validate / test / predict, plus the data and
user-facing jobs (simulate, prepare, import-cinebrain, fill, evaluate, bench, reproduce), each a
small function.

    eeg2fmri simulate --out_dir data/raw --scale ci
    eeg2fmri import-cinebrain --release_dir /data/CineBrain --subjects [1] --out_dir data/raw
    eeg2fmri prepare --subject_dir data/raw/sub_0001
    eeg2fmri fit --config configs/sub1.yaml
    eeg2fmri test --config configs/sub1.yaml --ckpt_path runs/sub1/lightning_logs/version_0/checkpoints/last.ckpt

Expected errors (bad files, options, checkpoints: every :class:`~eeg2fmri.errors.EEG2fMRIError`,
and a missing / existing / unwritable path) are printed as one line with exit code 2;
``--debug`` (anywhere on the command line) or ``EEG2FMRI_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import yaml
from jsonargparse import ActionConfigFile, ArgumentParser
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar, Timer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback

from eeg2fmri.callbacks import CiftiWriter, Compile, Evaluator, FiniteLossGuard
from eeg2fmri.data.datamodule import EEGfMRIDataModule
from eeg2fmri.ema import EMA
from eeg2fmri.errors import EEG2fMRIError
from eeg2fmri.figures import SurfaceFigures
from eeg2fmri.floors import ShuffleEEG
from eeg2fmri.module import EEGfMRIModule, check_checkpoint_file
from eeg2fmri.progress import LineProgressBar

DATA_FACTS = ("n_vertices", "n_chans", "n_times")


class RunFolderError(EEG2fMRIError):
    """``fit`` pointed at a folder that holds a run of another model or data, or asked to resume
    from a checkpoint that holds weights only."""


class EEG2fMRICLI(LightningCLI):
    """LightningCLI with the project's callbacks and links, a run folder per composition of
    configs (:func:`composed_run_name`), and a plain-line progress bar when stderr is not a terminal."""

    def __init__(self, *args, **kwargs):
        argv = kwargs.get("args")
        self.argv: list[str] = list(sys.argv[1:] if argv is None else argv)
        super().__init__(*args, **kwargs)

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
        parser.link_arguments("data.eeg_context", "model.init_args.eeg_context")
        for fact in DATA_FACTS:
            parser.link_arguments("data", f"model.init_args.{fact}", compute_fn=_fact(fact), apply_on="instantiate")
        parser.set_defaults({"model": {"class_path": "eeg2fmri.module.EEG2fMRIDiffusion"}})

    def before_instantiate_classes(self) -> None:
        """Give a composition of configs its own run folder (see :func:`composed_run_name`); ``test``
        prints the Evaluator's region table, not also Lightning's list of every logged number
        (``--verbose true`` brings it back)."""
        cfg = self.config[self.subcommand]
        if self.subcommand == "test" and not any(a.split("=", 1)[0] == "--verbose" for a in self.argv):
            cfg.verbose = False
        files = [Path(str(p)) for p in (cfg.get("config") or self.config.get("config") or [])]
        name = composed_run_name(files, str(cfg.model.class_path), self.argv)
        if name is None:
            return
        logger = cfg.trainer.logger
        init = logger.get("init_args") if hasattr(logger, "get") else None
        if init is not None and "name" in init and "save_dir" in init:  # TensorBoardLogger, CSVLogger
            init.name = name  # keeps its save_dir and version: <save_dir>/<name>/<version>
            cfg.trainer.default_root_dir = str(Path(init.save_dir) / name)
        else:
            cfg.trainer.default_root_dir = str(Path(trainer_defaults()["default_root_dir"]) / name)

    def before_fit(self) -> None:
        """Refuse a run folder that holds a run of another model or data, before anything is written."""
        problem = other_run(_run_dir(self.trainer), self.config.fit)
        if problem:
            raise RunFolderError(problem)

    def instantiate_trainer(self, **kwargs):
        """The trainer, plus :class:`LineProgressBar` when stderr is not a terminal (a log file: Lightning's
        bar would be carriage returns) and a Timer without a limit where a checkpoint of a
        ``--trainer.max_time`` run is read without a max_time (test, predict, a resume without a limit):
        the checkpoint holds the Timer's state, and Lightning warns when no Timer reads it."""
        trainer = self.config_init[self.subcommand].trainer
        callbacks = trainer.get("callbacks") or []
        callbacks = list(callbacks) if isinstance(callbacks, list) else [callbacks]
        extra = []
        if trainer.get("enable_progress_bar") is not False and not sys.stderr.isatty():
            if not any(isinstance(c, ProgressBar) for c in callbacks):
                extra.append(LineProgressBar())
        if trainer.get("max_time") is None and not any(isinstance(c, Timer) for c in callbacks):
            if self.subcommand != "fit" or _has_timer_state(self.config[self.subcommand].get("ckpt_path")):
                extra.append(Timer(verbose=False))
        if extra:
            kwargs["callbacks"] = [*callbacks, *extra]
        return super().instantiate_trainer(**kwargs)


def _has_timer_state(ckpt_path: str | None) -> bool:
    if not ckpt_path or not Path(ckpt_path).is_file():
        return False
    state = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True)
    return "Timer" in (state.get("callbacks") or {})


def composed_run_name(config_files: list[Path], model_class: str, argv: list[str]) -> str | None:
    """The run folder's name when it must follow from several sources, else None.

    A config names its run folder (``trainer.default_root_dir``, or its logger's ``save_dir`` /
    ``name``). When configs compose, the last one to set each key wins, so a composition could write
    into one of its parts' folders (``demo.yaml`` + ``baselines/ridge.yaml`` into the demo's). So a
    composition of configs, or a config with another ``--model`` from the command line, gets a folder
    named after all of them: ``runs/demo+ridge``, ``runs/sub1+latent_512``, ``runs/demo+Ridge``. A
    folder named on the command line (``--trainer.default_root_dir``, ``--trainer.logger...``) is used
    as given.
    """
    keys = [a.split("=", 1)[0] for a in argv]
    if any(k.startswith(("--trainer.default_root_dir", "--trainer.logger")) for k in keys):
        return None
    parts = [p.stem for p in config_files]
    if "--model" in keys:  # another model class than the configs name
        parts.append(model_class.rsplit(".", 1)[-1])
    return "+".join(parts) if len(parts) > 1 or "--model" in keys else None


class RunConfig(SaveConfigCallback):
    """Lightning's config writer (``config.yaml`` in the run folder), for ``fit`` only: ``test`` and
    ``predict`` leave the training's record as it is."""

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage == "fit":
            super().setup(trainer, pl_module, stage)


def other_run(folder: Path, config) -> str | None:
    """Why ``fit`` with ``config`` must not write into ``folder``, or None.

    ``fit`` with a fixed logger version (``version: latest``) or ``--trainer.logger false`` rewrites
    its folder: a re-run or a resume of the same run when the model class and data file agree with
    the folder's ``config.yaml``, another run's results silently overwritten when they do not.
    """
    saved = folder / "config.yaml"
    try:
        old = yaml.safe_load(saved.read_text()) or {}
    except (OSError, yaml.YAMLError):  # no run there yet (or not one of ours)
        return None
    theirs = ((old.get("model") or {}).get("class_path"), (old.get("data") or {}).get("data_path"))
    mine = (str(config.model.class_path), str(config.data.data_path))
    if theirs == mine or None in theirs:
        return None
    return (
        f"{folder} holds a run of {theirs[0].rsplit('.', 1)[-1]} on {theirs[1]}; this run is "
        f"{mine[0].rsplit('.', 1)[-1]} on {mine[1]}. Give it its own folder (--trainer.default_root_dir, "
        "or --trainer.logger.init_args.version), or delete the old run first"
    )


def _run_dir(trainer) -> Path:
    """Where the trainer writes (Trainer.log_dir without its broadcast, so it can be read before fit)."""
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    if not trainer.loggers:
        return Path(trainer.default_root_dir)
    logger = trainer.loggers[0]
    if isinstance(logger, (TensorBoardLogger, CSVLogger)):
        return Path(logger.log_dir)
    return Path(getattr(logger, "save_dir", None) or trainer.default_root_dir)


def _fact(name: str) -> Callable:
    return lambda dm: getattr(dm, name)


def trainer_defaults() -> dict:
    cuda = torch.cuda.is_available()
    return {
        "precision": "bf16-mixed" if cuda else "32-true",
        "max_epochs": 200,
        "log_every_n_steps": 50,
        "default_root_dir": "runs",
        # a class path, not an instance, so the saved config.yaml can name it
        "plugins": [{"class_path": "eeg2fmri.callbacks.AtomicCheckpointIO"}],
        "callbacks": [
            # best.ckpt by validation loss, weights only (AtomicCheckpointIO keeps resume state in
            # last.ckpt alone); last.ckpt, the resume point, rewritten at the end of every training
            # epoch, whatever check_val_every_n_epoch is, and when --trainer.max_time stops a run
            # mid-epoch (ModelCheckpoint's own save_last only follows saves of the monitored one,
            # which happen at validation)
            ModelCheckpoint(monitor="val/loss", mode="min", save_top_k=1, filename="best"),
            ModelCheckpoint(filename="last", save_top_k=1, enable_version_counter=False, save_on_train_epoch_end=True),
        ],
    }


def lightning_main(args: list[str] | None) -> LightningCLI:
    return EEG2fMRICLI(
        EEGfMRIModule,
        EEGfMRIDataModule,
        subclass_mode_model=True,
        trainer_defaults=trainer_defaults(),
        seed_everything_default=0,
        save_config_callback=RunConfig,
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
    print(
        f"import-cinebrain: {len(written)} subject folder(s) ready: {', '.join(map(str, written))}\n"
        f"next: eeg2fmri prepare --subject_dir {written[0] if written else '<raw>/sub_0001'}"
    )


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


def table(results: list[str]) -> str:
    """Print one table of the scores of several ``eeg2fmri test`` runs (their test_metrics.json).

    Args:
        results: test_metrics.json files, in the order of the table's rows.
    """
    import json
    from pathlib import Path

    from eeg2fmri.callbacks import format_table

    loaded = []
    for f in results:
        try:
            loaded.append(json.loads(Path(f).read_text()))
        except (OSError, ValueError) as e:
            raise ValueError(f"{f}: not a readable test_metrics.json written by `eeg2fmri test` ({e})") from None
    return format_table(*loaded)


def cmd_table(argv: list[str]) -> None:
    print(_run_function("table", table, argv))


EXTRA: dict[str, tuple[Callable[[list[str]], None], str]] = {
    "simulate": (cmd_simulate, "write simulated subjects in the CineBrain layout (EEG + CIFTI + behaviour)"),
    "prepare": (cmd_prepare, "raw subject folder -> HDF5 cache (filter, align with the 4 s shift, split, normalise)"),
    "import-cinebrain": (
        cmd_import_cinebrain,
        "the CineBrain release as published (per-frame EEG windows) -> raw subject folders",
    ),
    "reproduce": (
        cmd_reproduce,
        "the paper's tables and figures: table1, table2 (+ Figure 3), ablation (Table S4), fill",
    ),
    "fill": (cmd_fill, "fill censored / lost frames of a CIFTI run from its EEG (InterRecon; or linear, cubic)"),
    "evaluate": (cmd_evaluate, "score any predicted CIFTI run against a reference with every metric, per region"),
    "bench": (cmd_bench, "time the training step and DDIM sampler against a bare-PyTorch reference (--scale ci|paper)"),
    "table": (cmd_table, "print one table of the scores of several `eeg2fmri test` runs (their test_metrics.json)"),
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


# expected errors: the user's files, options and checkpoints (one line, exit code 2)
USER_ERRORS = (
    EEG2fMRIError,
    FileNotFoundError,
    FileExistsError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
)


def main(args: list[str] | None = None) -> None:
    """Entry point of ``eeg2fmri`` and ``python -m eeg2fmri``; tests call it with a list."""
    explicit = args is not None
    args = list(sys.argv[1:] if args is None else args)
    debug = "--debug" in args or os.environ.get("EEG2FMRI_DEBUG", "").lower() not in ("", "0", "false", "no")
    if "--debug" in args:
        args = [a for a in args if a != "--debug"]
        if not explicit:  # LightningCLI reads sys.argv itself
            sys.argv = [sys.argv[0], *args]
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    _quiet_known_noise()
    try:
        _dispatch(args, explicit)
    except USER_ERRORS as e:
        if debug:
            raise
        print(f"eeg2fmri: error: {one_line(e)} (--debug shows the traceback)", file=sys.stderr)
        raise SystemExit(2) from None


def one_line(e: BaseException) -> str:
    """An exception's message on one line."""
    return " ".join(line.strip() for line in str(e).splitlines() if line.strip()) or type(e).__name__


class _DropLitLoggerTip(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        # the cloud-logger advertisement
        return "litlogger" not in record.getMessage()


def _quiet_known_noise() -> None:
    """Drop messages of our dependencies that say nothing about the user's run: Lightning's
    advertisement for its cloud logger (printed by every Trainer) and the FutureWarning that torch
    raises at Lightning 2.6's own use of a deprecated pytree class. (``_dispatch`` drops two more
    for the one command they do not concern.) Nothing else is filtered."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropLitLoggerTip) for f in logger.filters):
            logger.addFilter(_DropLitLoggerTip())
    warnings.filterwarnings(
        "ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning
    )


def _dispatch(args: list[str], explicit: bool) -> None:
    if not args or args[0] in ("-h", "--help"):
        print(_overview())
        return
    if args[0] in EXTRA:
        EXTRA[args[0]][0](args[1:])
        return
    ckpt = _ckpt_arg(args)
    if ckpt not in (None, "last", "best", "hpc"):
        state = check_checkpoint_file(ckpt)
        if args[0] == "fit" and "optimizer_states" not in state:
            raise RunFolderError(
                f"{ckpt}: holds the model's weights only (best.ckpt is written so); resume from the run's "
                "last.ckpt, or start a new run without --ckpt_path"
            )
    with warnings.catch_warnings():
        if args[0] != "fit":
            # Lightning restores the checkpoint callbacks' state outside fit too, and warns when the
            # run folder is named differently from the fit's; nothing is saved outside fit
            warnings.filterwarnings("ignore", message="The dirpath has changed from")
        elif ckpt is not None:  # a resume writes into the folder of the checkpoint it resumes, by design
            warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")
        lightning_main(args if explicit else None)


def _ckpt_arg(args: list[str]) -> str | None:
    for i, a in enumerate(args):
        if a == "--ckpt_path" and i + 1 < len(args):
            return args[i + 1]
        if a.startswith("--ckpt_path="):
            return a.split("=", 1)[1]
    return None
