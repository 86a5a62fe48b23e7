"""The base of eeg2fmri's expected errors: problems with the user's files, options or checkpoints.

Each subclass (CiftiError, RawDataError, CacheError, CheckpointVersionError, LayoutMismatchError,
FillError, ...) carries a message that names the file, the field and what was expected. The
``eeg2fmri`` command prints that message as one line and exits with code 2; ``--debug`` or
``EEG2FMRI_DEBUG=1`` shows the traceback instead. A ValueError, so callers that catch ValueError
keep working.
"""


class EEG2fMRIError(ValueError):
    """An expected error about the user's input; its message alone tells what to change."""
