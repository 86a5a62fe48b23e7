"""The Trainer's commands (fit / validate / test / predict) through LightningCLI: the project's
callbacks and links, a run folder per composition of configs, and the checks that keep a run out
of another run's folder.

``eeg2fmri.cli`` runs them for the command line, the experiments for each of their cells; both
through :func:`run_trainer`.
"""

from __future__ import annotations

import gc
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar, Timer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback

from eeg2fmri.callbacks import CiftiWriter, Compile, Evaluator, FiniteLossGuard
from eeg2fmri.checkpoint import check_checkpoint_file
from eeg2fmri.data.datamodule import EEGfMRIDataModule
from eeg2fmri.ema import EMA
from eeg2fmri.errors import EEG2fMRIError
from eeg2fmri.figures import SurfaceFigures
from eeg2fmri.floors import ShuffleEEG
from eeg2fmri.module import EEGfMRIModule, LayoutMismatchError
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

    def parse_arguments(self, parser, args) -> None:
        """Lightning's, keeping the model options as the user gave them (``requested_model``): with a
        ``--ckpt_path``, LightningCLI then replaces them by the checkpoint's hyperparameters, so a
        resume could not tell that the command asked for another model."""
        super().parse_arguments(parser, args)
        sub = self.config.get("subcommand")
        model = self.config[sub].get("model") if sub else None
        init = model.get("init_args") if model is not None else None
        self.requested_model = {} if init is None else init.as_dict()

    def instantiate_classes(self) -> None:
        """Lightning's, but a refused option of the model (an :class:`EEG2fMRIError` from its
        ``__init__``) reaches the user as itself: jsonargparse tries each type of the ``model``
        union and wraps what they raised in one ValueError that lists them all."""
        try:
            super().instantiate_classes()
        except ValueError as e:
            cause: BaseException | None = e
            while cause is not None and not isinstance(cause, EEG2fMRIError):
                cause = cause.__cause__
            if cause is None:
                raise
            raise cause from None

    def before_fit(self) -> None:
        """Refuse a run folder that holds a run of another model or data, before anything is written,
        and a checkpoint of another grayordinate layout."""
        problem = other_run(_run_dir(self.trainer), self.config.fit)
        if problem:
            raise RunFolderError(problem)
        self._check_layout()
        changed = changed_hyperparameters(self.config.fit.get("ckpt_path"), self.requested_model)
        if changed:
            raise RunFolderError(
                f"{self.config.fit.ckpt_path}: a resume continues the checkpoint's model, but this command changes "
                f"its {changed}. Drop those options to resume, or start a new run without --ckpt_path"
            )

    def before_validate(self) -> None:
        self._check_layout()

    def before_test(self) -> None:
        self._check_layout()

    def before_predict(self) -> None:
        self._check_layout()

    def _check_layout(self) -> None:
        """Refuse a ``--ckpt_path`` trained on other grayordinates than the data holds, before the
        data is loaded (:func:`layout_mismatch`)."""
        ckpt = self.config[self.subcommand].get("ckpt_path")
        problem = layout_mismatch(ckpt, getattr(self.datamodule, "indices", None), self.datamodule)
        if problem:
            raise LayoutMismatchError(problem)

    def instantiate_trainer(self, **kwargs):
        """The trainer, plus :class:`LineProgressBar` when stderr is not a terminal (a log file: Lightning's
        bar would be carriage returns) and a Timer without a limit where a checkpoint of a
        ``--trainer.max_time`` run is read without a max_time (test, predict, a resume without a limit):
        the checkpoint holds the Timer's state, and Lightning warns when no Timer reads it. Outside
        ``fit``, the checkpoint callbacks keep the folder of the checkpoint they read
        (:func:`_keep_saved_dirpaths`)."""
        trainer = self.config_init[self.subcommand].trainer
        callbacks = trainer.get("callbacks") or []
        callbacks = list(callbacks) if isinstance(callbacks, list) else [callbacks]
        saved = _saved_callback_states(self.config[self.subcommand].get("ckpt_path"))
        extra = []
        if trainer.get("enable_progress_bar") is not False and not sys.stderr.isatty():
            if not any(isinstance(c, ProgressBar) for c in callbacks):
                extra.append(LineProgressBar())
        if trainer.get("max_time") is None and not any(isinstance(c, Timer) for c in callbacks):
            if self.subcommand != "fit" or "Timer" in saved:
                extra.append(Timer(verbose=False))
        if extra:
            kwargs["callbacks"] = [*callbacks, *extra]
        built = super().instantiate_trainer(**kwargs)
        if self.subcommand != "fit":
            _keep_saved_dirpaths(built, saved)
        return built


def saved_state(ckpt_path: str | None) -> dict:
    """A ``--ckpt_path`` file's contents, memory-mapped (only what is read is touched), or {} when
    there is no file (no ``--ckpt_path``, or Lightning's ``last`` / ``best``)."""
    if not ckpt_path or not Path(ckpt_path).is_file():
        return {}
    return torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True)


def layout_mismatch(ckpt_path: str | None, indices, data) -> str | None:
    """Why the checkpoint ``ckpt_path`` does not apply to data whose model columns are the standard
    grayordinates ``indices`` (V,), or None.

    A model's output columns are grayordinates (its ``grayordinates`` buffer, written at fit). Data of
    the same count but other grayordinates (another subset, another region) would be scored and
    written under the data's labels while the model predicts others, so the layout itself is
    compared, not only its size. The checkpoint is read memory-mapped: only this buffer is touched."""
    if indices is None:
        return None
    saved = (saved_state(ckpt_path).get("state_dict") or {}).get("grayordinates")
    if saved is None or saved.numel() == 0 or int(saved[0]) == -1:  # not a model with a layout, or never fitted
        return None
    saved, indices = saved.numpy(), np.asarray(indices)
    if saved.shape == indices.shape and np.array_equal(saved, indices):
        return None
    where = getattr(data, "data_path", "the data")
    if saved.shape != indices.shape:
        return (
            f"{ckpt_path}: the model was trained on {len(saved)} grayordinates but {where} holds {len(indices)} "
            "(after --data.region); use a checkpoint trained on this data's grayordinates"
        )
    j = int(np.flatnonzero(saved != indices)[0])
    return (
        f"{ckpt_path}: the model was trained on other grayordinates than {where} holds (same count {len(saved)}; "
        f"its column {j} is grayordinate {int(saved[j])}, the data's is {int(indices[j])}); its predictions "
        "would be scored and written under the wrong labels. Use a checkpoint trained on this data's grayordinates "
        "(the same --grayordinates subset and --data.region)"
    )


def changed_hyperparameters(ckpt_path: str | None, hparams: dict) -> str | None:
    """The hyperparameters (``name checkpoint -> this run``, joined) in which ``hparams`` differ from
    those saved in ``ckpt_path``, or None. Lightning resumes a run with the weights and optimizer of
    the checkpoint, so a changed architecture or objective would otherwise be dropped in silence."""
    saved = saved_state(ckpt_path).get("hyper_parameters") or {}

    def norm(v):
        return tuple(norm(x) for x in v) if isinstance(v, (list, tuple)) else v

    diff = [
        f"--model.init_args.{k} {saved[k]!r} -> {hparams[k]!r}"
        for k in sorted(saved.keys() & hparams.keys())
        if k not in DATA_FACTS and hparams[k] is not None and norm(saved[k]) != norm(hparams[k])
    ]
    return ", ".join(diff) or None


def _saved_callback_states(ckpt_path: str | None) -> dict:
    """The callbacks' states saved in a checkpoint file (none without one)."""
    return saved_state(ckpt_path).get("callbacks") or {}


def _keep_saved_dirpaths(trainer, saved: dict) -> None:
    """Point each ModelCheckpoint at the folder its saved state names. Lightning restores the
    checkpoint callbacks' state outside ``fit`` too, and drops it with a warning when the callback's
    folder differs from the fit's (a test run from another ``--trainer.default_root_dir``); outside
    ``fit`` nothing is saved, so the folder only names where that state came from."""
    for callback in trainer.callbacks:
        state = saved.get(callback.state_key) if isinstance(callback, ModelCheckpoint) else None
        if state and state.get("dirpath"):
            callback.dirpath = state["dirpath"]


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
        "plugins": [{"class_path": "eeg2fmri.checkpoint.AtomicCheckpointIO"}],
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


def run_trainer(args: list[str], explicit: bool = True) -> None:
    """Run ``eeg2fmri fit|validate|test|predict ...`` (``args[0]`` is the command).

    A ``--ckpt_path`` file is checked before Lightning meets it (a readable eeg2fmri checkpoint; ``fit``
    resumes only from one that holds the optimizer's state). ``explicit=False`` when ``args`` is the
    process's own command line: LightningCLI then reads ``sys.argv`` itself.
    """
    ckpt = _ckpt_arg(args)
    if ckpt not in (None, "last", "best", "hpc"):
        state = check_checkpoint_file(ckpt)
        if args[0] == "fit" and "optimizer_states" not in state:
            raise RunFolderError(
                f"{ckpt}: holds the model's weights only (best.ckpt is written so); resume from the run's "
                "last.ckpt, or start a new run without --ckpt_path"
            )
    with warnings.catch_warnings():
        if args[0] == "fit" and ckpt is not None:
            # A resume writes into the folder of the checkpoint it resumes, by design, and Lightning's
            # ModelCheckpoint.setup warns at the start of every fit whose checkpoint folder holds files.
            # No public setting avoids it while checkpoints are kept (only save_top_k=0 skips the check);
            # an override of setup would need ModelCheckpoint's private folder resolution.
            warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")
        cli = lightning_main(args if explicit else None)
    # A process that runs many commands (reproduce's cells) must not keep each one's subject in memory
    # (its frames and EEG: ~3 GB at SCALE=long): jsonargparse's registry of instantiators keeps the CLI,
    # and with it the data module and the datasets of its loaders, alive after the run, so the data
    # module lets go of its data here.
    if isinstance(getattr(cli, "datamodule", None), EEGfMRIDataModule):
        cli.datamodule.release()
    del cli
    gc.collect()


def _ckpt_arg(args: list[str]) -> str | None:
    for i, a in enumerate(args):
        if a == "--ckpt_path" and i + 1 < len(args):
            return args[i + 1]
        if a.startswith("--ckpt_path="):
            return a.split("=", 1)[1]
    return None
