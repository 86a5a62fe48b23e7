"""The regression stage: the mean latent of each frame from the EEG around it (an FIR hemodynamic model).

BOLD follows neural activity through a hemodynamic response of ~10-15 s, and EEG band power tracks
that activity (Goldman et al. 2002; Laufs et al. 2003): the classic EEG-informed model of a voxel
is band power convolved with a response function. :class:`FIRHead` learns that convolution as a
finite impulse response over the frames' EEG features, P frames back and F ahead of each frame,
mapping to the d frame latents. The diffusion model then only has to generate what the EEG does
not determine (Mardani et al. 2023, CorrDiff: regression stage + diffusion of the residual).

Shapes: B windows, N = P + K + F EEG frames of a window (context included), K predicted frames,
Fe features per EEG frame, d latent dims.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class FIRHead(nn.Module):
    """(B, P + K + F, Fe) features + (B, P + K + F) presence mask -> (B, K, d) latents.

    A Conv1d over frames with kernel P + F + 1 and no padding: frame k's latent is a linear
    function of the features of frames k - P .. k + F. A missing frame (outside the clip) enters
    as zero features plus a one on a "missing" indicator channel, so its absence has its own
    learned weight per lag instead of pretending to be an average window.

    Args:
        n_features: Fe, features per EEG frame.
        latent_dim: d.
        before: P, frames of EEG before each frame.
        after: F, frames of EEG after each frame.
    """

    def __init__(self, n_features: int, latent_dim: int, before: int, after: int):
        super().__init__()
        self.before, self.after = before, after
        self.fir = nn.Conv1d(n_features + 1, latent_dim, kernel_size=before + after + 1)
        nn.init.zeros_(self.fir.weight)  # starts at the mean latent (0): no EEG effect yet
        nn.init.zeros_(self.fir.bias)

    def _inputs(self, features: Tensor, mask: Tensor) -> Tensor:
        return torch.cat([features * mask[..., None], (~mask)[..., None].to(features.dtype)], dim=-1)  # (B, N, Fe + 1)

    def forward(self, features: Tensor, mask: Tensor) -> Tensor:
        return self.fir(self._inputs(features, mask).transpose(1, 2)).transpose(1, 2)  # (B, K, d)

    def design(self, features: Tensor, mask: Tensor) -> Tensor:
        """The linear design the FIR applies: (B, K, L (Fe + 1)), L = P + F + 1 lags; for every
        frame its lags' features and missing flags, lag-major. ``forward = design @ W + b``."""
        x = self._inputs(features, mask)  # (B, N, Fe + 1)
        L = self.before + self.after + 1
        return x.unfold(1, L, 1).transpose(-1, -2).flatten(-2)  # (B, K, L (Fe + 1))

    @torch.no_grad()
    def set_linear(self, weight: Tensor, bias: Tensor) -> None:
        """Set the FIR to ``design @ weight + bias``: weight (L (Fe + 1), d), bias (d,)."""
        L, d = self.before + self.after + 1, self.fir.out_channels
        self.fir.weight.copy_(weight.reshape(L, -1, d).permute(2, 1, 0))  # (d, Fe + 1, L)
        self.fir.bias.copy_(bias)
