"""The ``eeg2fmri`` command: LightningCLI's fit / validate / test / predict (:mod:`eeg2fmri.trainer`),
plus the data and user-facing jobs (simulate, prepare, import-cinebrain, fill, evaluate, bench,
reproduce), each a small function.

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

import errno
import logging
import os
import sys
import warnings
from collections.abc import Callable

from jsonargparse import ActionConfigFile, ArgumentParser

from eeg2fmri.errors import EEG2fMRIError, OptionError
from eeg2fmri.trainer import run_trainer

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
    from eeg2fmri.experiments.bench import bench, format_table

    results = _run_function("bench", bench, argv)
    print(format_table(results))
    if results.get("errors"):
        sys.exit(f"eeg2fmri bench: {', '.join(results['errors'])} failed (see the log above and {results['out']})")


def cmd_reproduce(argv: list[str]) -> None:
    from eeg2fmri.experiments.reproduce import reproduce

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

    from eeg2fmri.results import format_table

    loaded = []
    for f in results:
        try:
            loaded.append(json.loads(Path(f).read_text()))
        except (OSError, ValueError) as e:
            raise OptionError(f"{f}: not a readable test_metrics.json written by `eeg2fmri test` ({e})") from None
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
    "fill": (
        cmd_fill,
        "fill censored / lost frames of a CIFTI run from its EEG (InterRecon; or gaussian, linear, cubic)",
    ),
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
    except OSError as e:
        if debug or e.errno not in OUTPUT_ERRNOS:
            raise
        # the file system refused a write (full, read-only, over quota): the writers are atomic, so
        # the file in progress was dropped and earlier outputs are intact
        where = f"{e.filename}: " if e.filename else ""
        print(f"eeg2fmri: error: {where}{e.strerror}; free space or choose another output folder", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        if debug:
            raise
        # every writer goes through a temporary that is removed on the way out (or by the next run)
        print("eeg2fmri: interrupted; the file being written was dropped, earlier outputs are intact", file=sys.stderr)
        raise SystemExit(130) from None


OUTPUT_ERRNOS = (errno.ENOSPC, errno.EROFS, errno.EDQUOT)


def one_line(e: BaseException) -> str:
    """An exception's message on one line."""
    return " ".join(line.strip() for line in str(e).splitlines() if line.strip()) or type(e).__name__


class _DropLitLoggerTip(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        # the cloud-logger advertisement
        return "litlogger" not in record.getMessage()


def _quiet_known_noise() -> None:
    """Drop messages of our dependencies that say nothing about the user's run and that no public
    setting of theirs avoids; nothing else is filtered.

    - Lightning's advertisement for its cloud logger: every Trainer logs it at INFO
      (``_LoggerConnector.configure_logger``) unless one of its loggers is a ``LitLogger``; raising the
      level of Lightning's logger would drop its other notices too (devices, stops, restores).
    - The FutureWarning that torch 2.13 raises when Lightning 2.6 builds a ``LeafSpec`` (its private
      ``_tree_flatten`` does, for every dataloader of every loop;
      https://github.com/Lightning-AI/pytorch-lightning/issues/21326).

    (:func:`eeg2fmri.trainer.run_trainer` drops one more, on a resume.)"""
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
    run_trainer(args, explicit)
