"""The baselines of the paper's Tables 1-2 as LightningModules, trained and tested on the same windows.

Every baseline predicts each frame from that frame's EEG window alone (K is folded into the batch,
or for the FIR ridge, the windows of a few neighbouring frames): none of them models the sequence,
which is the paper's point. Their networks are plain modules in ``eeg2fmri.nn.baselines``; this
package wires losses, steps and optimizers.

- ``framewise``: :class:`CNNTC`, :class:`CNNTAG`, :class:`E2fNet`, :class:`E2fGAN`, trained by gradient steps.
- ``closed_form``: the floors every table shows, :class:`MeanFrame`, :class:`Ridge` and
  :class:`FIRRidge`, solved in closed form from one training epoch.

Configs name the classes by this package (``class_path: eeg2fmri.baselines.FIRRidge``).
Use: ``eeg2fmri fit --config configs/sub1.yaml --config configs/baselines/cnn_tc.yaml``.
"""

from eeg2fmri.baselines.closed_form import FIRRidge, MeanFrame, Ridge
from eeg2fmri.baselines.framewise import CNNTAG, CNNTC, E2fGAN, E2fNet

__all__ = ["CNNTC", "CNNTAG", "E2fNet", "E2fGAN", "MeanFrame", "Ridge", "FIRRidge"]
