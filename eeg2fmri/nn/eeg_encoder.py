"""EEG encoder f_phi: one token per frame window (paper §3).

Each frame's EEG window (n_chans x n_times, e.g. 64 x 800: one TR at 1000 Hz) goes through L
strided temporal convolution blocks (channels as input features), global average pooling over
time and a two-layer MLP, giving K EEG tokens for a K-frame window. Frames are encoded
independently (K folded into the batch); relations across frames are the DiT's job.
Shapes: B windows, K frames, C = n_chans, T = n_times, F = conv channels, E = embed_dim.
"""

from __future__ import annotations

from torch import Tensor, nn


class ConvBlock(nn.Sequential):
    """Conv1d (stride 2, halves the time axis) -> BatchNorm1d -> GELU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int):
        super().__init__(
            nn.Conv1d(in_channels, out_channels, kernel_size, stride=2, padding=kernel_size // 2, bias=False),
            nn.BatchNorm1d(out_channels),
            nn.GELU(),
        )


class EEGEncoder(nn.Module):
    """(B, K, n_chans, n_times) EEG windows -> (B, K, embed_dim) tokens.

    Args:
        n_chans: EEG channels.
        n_times: samples per frame window (checked at forward; the pooling itself accepts any
            length, so extra context only needs a matching ``n_times``).
        embed_dim: E, dims of one EEG token (the DiT's ``cond_dim``).
        n_blocks: L, strided convolution blocks (time is divided by 2^L before pooling).
        channels: F, feature maps of every block.
        kernel_size: temporal kernel of every block (odd, "same"-style padding).
    """

    def __init__(
        self,
        n_chans: int = 64,
        n_times: int = 800,
        embed_dim: int = 512,
        n_blocks: int = 4,
        channels: int = 128,
        kernel_size: int = 7,
    ):
        super().__init__()
        self.n_chans, self.n_times, self.embed_dim = n_chans, n_times, embed_dim
        self.blocks = nn.Sequential(
            *[ConvBlock(n_chans if i == 0 else channels, channels, kernel_size) for i in range(n_blocks)]
        )
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.mlp = nn.Sequential(nn.Linear(channels, embed_dim), nn.GELU(), nn.Linear(embed_dim, embed_dim))

    def forward(self, eeg: Tensor) -> Tensor:
        B, K, C, T = eeg.shape
        if (C, T) != (self.n_chans, self.n_times):
            raise ValueError(
                f"EEG windows have {C} channels x {T} samples; this encoder was built for "
                f"{self.n_chans} x {self.n_times} (n_chans x n_times)"
            )
        h = self.blocks(eeg.reshape(B * K, C, T))  # (B*K, F, T / 2^L)
        h = self.pool(h).squeeze(-1)  # (B*K, F)
        return self.mlp(h).reshape(B, K, self.embed_dim)  # (B, K, E)
