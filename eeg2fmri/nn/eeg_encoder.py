"""EEG encoders f_phi: one token per frame window (paper §3), from strided convolutions (the paper's
:class:`EEGEncoder`) or from log band power (:class:`BandPowerEncoder`, the project's default).

Each frame's EEG window (n_chans x n_times, e.g. 64 x 800: one TR at 1000 Hz) goes through L
strided temporal convolution blocks (channels as input features), global average pooling over
time and a two-layer MLP, giving K EEG tokens for a K-frame window. Frames are encoded
independently (K folded into the batch); relations across frames are the DiT's job.
Shapes: B windows, K frames, C = n_chans, T = n_times, F = conv channels, E = embed_dim.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from eeg2fmri.nn.baselines.features import BandPower


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


class BandPowerEncoder(nn.Module):
    """(B, N, n_chans, n_times) EEG windows -> log band power features (B, N, n_chans * n_bands)
    and tokens (B, N, embed_dim).

    The spectral front end: log power in the canonical bands of every channel (Welch, as the
    ridge baselines compute it), z-scored per feature with the training frames' mean and std
    (``feature_mean`` / ``feature_std``, set by :meth:`init_from_data`; 0 and 1 until then), then a
    two-layer MLP to the token. Why not the strided convolutions of :class:`EEGEncoder`: the
    hemodynamic coupling lives in slow changes of band power (alpha, 8-12 Hz, has a 100 ms period),
    and four stride-2 convolutions of kernel 7 see 91 samples (91 ms at 1000 Hz), too short to
    tell alpha from its neighbours; band power is what the field's EEG-informed models regress.
    Windows marked missing (``mask`` False) get zero features (the training mean).

    Args:
        n_chans: EEG channels.
        n_times: samples per frame window.
        embed_dim: E, dims of one token.
        sfreq: sampling rate (Hz).
        segment_s: Welch segment length (s); 50 % overlap.
    """

    def __init__(
        self, n_chans: int = 64, n_times: int = 800, embed_dim: int = 512, sfreq: float = 1000.0, segment_s: float = 0.4
    ):
        super().__init__()
        self.n_chans, self.n_times, self.embed_dim = n_chans, n_times, embed_dim
        self.band_power = BandPower(sfreq, n_times, segment_s)
        self.n_features = n_chans * self.band_power.n_bands
        self.register_buffer("feature_mean", torch.zeros(self.n_features))
        self.register_buffer("feature_std", torch.ones(self.n_features))
        self.mlp = nn.Sequential(nn.Linear(self.n_features, embed_dim), nn.GELU(), nn.Linear(embed_dim, embed_dim))

    def log_power(self, eeg: Tensor) -> Tensor:
        """(B, N, C, W) EEG -> (B, N, C * n_bands) log band power, float32 (channel-major)."""
        B, N, C, T = eeg.shape
        if (C, T) != (self.n_chans, self.n_times):
            raise ValueError(
                f"EEG windows have {C} channels x {T} samples; this encoder was built for "
                f"{self.n_chans} x {self.n_times} (n_chans x n_times)"
            )
        return self.band_power(eeg).reshape(B, N, self.n_features)  # (B, N, F)

    def features(self, eeg: Tensor, mask: Tensor | None = None) -> Tensor:
        """(B, N, C, W) EEG -> (B, N, C * n_bands) standardised log band power, float32; zero
        (the training mean) where ``mask`` (B, N) is False."""
        f = (self.log_power(eeg) - self.feature_mean) / self.feature_std  # (B, N, F)
        return f if mask is None else f * mask[..., None]

    @torch.no_grad()
    def init_from_data(self, log_power: Tensor) -> None:
        """Standardise with the mean and std of (N, F) log band powers of training windows."""
        std = log_power.double().std(0, unbiased=False)
        self.feature_mean.copy_(log_power.double().mean(0).float())
        self.feature_std.copy_(torch.where(std > 1e-12, std, torch.ones_like(std)).float())

    def forward(self, eeg: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.tokens(self.features(eeg, mask))  # (B, N, E)

    def tokens(self, features: Tensor) -> Tensor:
        return self.mlp(features)  # (B, N, E)
