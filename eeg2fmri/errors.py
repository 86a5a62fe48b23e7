"""The base of eeg2fmri's expected errors: problems with the user's files, options or checkpoints.

Each subclass (CiftiError, RawDataError, CacheError, CheckpointVersionError, LayoutMismatchError,
FillError, ...) carries a message that names the file, the field and what was expected. The
``eeg2fmri`` command prints that message as one line and exits with code 2; ``--debug`` or
``EEG2FMRI_DEBUG=1`` shows the traceback instead. A ValueError, so callers that catch ValueError
keep working.
"""

import os
import tempfile
from pathlib import Path


class EEG2fMRIError(ValueError):
    """An expected error about the user's input; its message alone tells what to change."""


class OptionError(EEG2fMRIError):
    """An option outside what it allows; the message names the option, its value and the range."""


def check_option(name: str, value, ok: bool, allowed: str) -> None:
    """Refuse option ``name`` (as the user types it: ``--data.n_frames``) with ``value`` unless
    ``ok``; ``allowed`` says what is (``an integer >= 1``). Every class and job checks its options
    with this before any work, so a value out of range never reaches the math."""
    if not ok:
        raise OptionError(f"{name}={value!r}: expected {allowed}")


def check_positive(prefix: str, **options) -> None:
    """:func:`check_option` for integer options that count something (>= 1); None passes (a default)."""
    for key, value in options.items():
        check_option(f"{prefix}{key}", value, value is None or value >= 1, "an integer >= 1")


class OutputError(EEG2fMRIError):
    """An output folder that cannot take the files (read-only, not a folder, full)."""


def check_writable(folder: str | os.PathLike, what: str, option: str) -> None:
    """Refuse before the work when ``folder`` (made if missing, as the writer would) cannot take a
    file: a probe file is created and removed, which also catches a read-only mount or a path
    through a file. ``what`` and ``option`` name the output and the option that moves it."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".eeg2fmri-probe-"):
            pass
    except OSError as e:
        raise OutputError(f"{folder}: cannot write {what} there ({e.strerror or e}); pass {option}") from None
