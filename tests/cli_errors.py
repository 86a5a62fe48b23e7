"""How a test runs the CLI into an expected error: the exit code and the one line the user sees."""

import pytest

from eeg2fmri.cli import main


def cli_error(capsys, args: list[str]) -> str:
    """Run ``eeg2fmri args`` expecting an expected-error exit: code 2, the error as one line, the
    last on stderr (after whatever progress was printed before it), no traceback. Returns that line."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 2, e.value.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("eeg2fmri: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], lines[-5:]
    assert "Traceback" not in err
    return errors[0]
