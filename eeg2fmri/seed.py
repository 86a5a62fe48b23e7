"""The run's seed, as Lightning's ``seed_everything`` records it in ``PL_GLOBAL_SEED``.

Code that draws from its own generators (a training step's noise, the order of the windows) reads
the seed here rather than being handed it, so a resumed run draws exactly what an uninterrupted one
would. Imports nothing from eeg2fmri: the data layer uses it too.
"""

from __future__ import annotations

import os


def global_seed(default: int | None = None) -> int | None:
    """The seed set by ``seed_everything`` for this run, or ``default`` when none was set."""
    s = os.environ.get("PL_GLOBAL_SEED")
    return int(s) if s is not None else default
