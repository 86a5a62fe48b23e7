"""CNN-TAG: EEG -> fMRI synthesis with a topographical attention graph (Calhas & Henriques 2022).

"EEG to fMRI Synthesis Benefits from Attentional Graphs of Electrode Relationships"; public code
DCalhas/eeg_to_fmri (``src/layers/topographical_attention.py``, ``src/models/eeg_to_fmri.py``).
Structure kept: EEG -> STFT (channels x frequency x time) -> topographical attention (each
electrode's spectrum replaced by a softmax-weighted mix of all electrodes', the weights computed
from its own spectrum through a learned electrode x feature matrix: a learned electrode-to-electrode
graph per sample) -> two-branch residual Conv3d blocks over (electrode, frequency, time) -> a
latent -> trainable random Fourier features -> multiplied by a "style" vector projected from the
attention graph -> the frame.

Adapted here: (1) input is one TR window; the STFT's time axis holds the segments inside it
(the original stacks 10 TRs of context); (2) their decoder maps the latent to the voxel volume
(dense or inverse DCT); ours ends in a linear head to the V grayordinates; (3) the original also
aligns the EEG latent with an fMRI autoencoder's latent (cosine term) and trains with L1; here the
loss is MSE on the frame (the LightningModule's), like CNN-TC, and no fMRI encoder is trained.

Shapes: N frames, C electrodes, F frequency bins, S STFT segments, D = F * S, L latent dims.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from eeg2fmri.nn.baselines.features import Spectrogram, Standardize


class TopographicalAttention(nn.Module):
    """x (N, C, D) -> (A-weighted mix of electrodes (N, C, D), attention graph (N, C, C)).

    scores[n, i, j] = softmax_j( sum_d x[n, i, d] * A[j, d] ): how much electrode i reads from
    electrode j; out[n, i] = sum_j scores[n, i, j] * x[n, j].
    """

    def __init__(self, n_chans: int, n_features: int):
        super().__init__()
        self.A = nn.Parameter(torch.empty(n_chans, n_features))
        nn.init.xavier_uniform_(self.A)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        scores = torch.softmax(x @ self.A.t(), dim=-1)  # (N, C, C)
        return scores @ x, scores  # (N, C, D), (N, C, C)


class ResBlock3d(nn.Module):
    """Two-branch residual block of the original: left conv(k, s) -> BN -> ReLU -> conv3 -> BN ->
    ReLU; right conv(k, s) -> BN; ReLU(left + right)."""

    def __init__(self, in_channels: int, out_channels: int, stride: tuple[int, int, int]):
        super().__init__()
        self.left = nn.Sequential(
            nn.Conv3d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm3d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv3d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm3d(out_channels),
            nn.ReLU(inplace=True),
        )
        self.right = nn.Sequential(
            nn.Conv3d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm3d(out_channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.left(x) + self.right(x))


class RandomFourierFeatures(nn.Module):
    """sqrt(2 / L) * cos(W z + b), W ~ N(0, 1 / L), b ~ U(0, 2 pi), both trained (the original's
    trainable random Fourier features on the latent)."""

    def __init__(self, dim: int):
        super().__init__()
        self.proj = nn.Linear(dim, dim)
        nn.init.normal_(self.proj.weight, std=1.0 / math.sqrt(dim))
        nn.init.uniform_(self.proj.bias, 0.0, 2 * math.pi)
        self.scale = math.sqrt(2.0 / dim)

    def forward(self, z: Tensor) -> Tensor:
        return self.scale * torch.cos(self.proj(z))


class CNNTAGNet(nn.Module):
    """(N, n_chans, n_times) EEG windows -> (N, n_vertices) frames.

    Args:
        n_vertices: V, grayordinates per frame.
        n_chans: EEG electrodes.
        n_times: samples per window.
        sfreq: EEG sampling rate (Hz).
        segment_s: STFT segment (s); 0.4 s gives 2.5 Hz bins.
        hop_s: STFT hop (s).
        fmax: highest STFT frequency kept (Hz).
        channels: feature maps of the residual Conv3d blocks.
        n_blocks: residual blocks, each halving the electrode and frequency axes.
        latent_dim: L, the latent (and Fourier feature) size feeding the head.
    """

    def __init__(
        self,
        n_vertices: int,
        n_chans: int = 64,
        n_times: int = 800,
        sfreq: float = 1000.0,
        segment_s: float = 0.4,
        hop_s: float = 0.1,
        fmax: float = 75.0,
        channels: int = 32,
        n_blocks: int = 3,
        latent_dim: int = 512,
    ):
        super().__init__()
        self.spectrogram = Spectrogram(sfreq, n_times, segment_s, hop_s, fmax=fmax)
        F_, S = self.spectrogram.n_freqs, self.spectrogram.n_segments
        self.standardize = Standardize((n_chans, F_, S))
        self.attention = TopographicalAttention(n_chans, F_ * S)
        self.blocks = nn.Sequential(
            *[ResBlock3d(1 if i == 0 else channels, channels, (2, 2, 1)) for i in range(n_blocks)]
        )
        c, f = n_chans, F_
        for _ in range(n_blocks):
            c, f = (c - 1) // 2 + 1, (f - 1) // 2 + 1
        self.to_latent = nn.Linear(channels * c * f * S, latent_dim)
        self.fourier = RandomFourierFeatures(latent_dim)
        self.style = nn.Linear(n_chans * n_chans, latent_dim, bias=False)  # attention graph -> style
        self.head = nn.Linear(latent_dim, n_vertices)

    def forward(self, eeg: Tensor) -> Tensor:
        N, C = eeg.shape[:2]
        x = self.standardize(self.spectrogram(eeg))  # (N, C, F, S)
        F_, S = x.shape[2:]
        x, scores = self.attention(x.reshape(N, C, F_ * S))  # (N, C, D), (N, C, C)
        h = self.blocks(x.reshape(N, 1, C, F_, S))  # (N, ch, C', F', S)
        z = self.fourier(self.to_latent(h.flatten(1)))  # (N, L)
        z = z * self.style(scores.flatten(1))  # (N, L) conditioned on the graph
        return self.head(z)  # (N, V)
