"""CNN-TC: the convolutional EEG -> fMRI transcoder of Liu & Sajda (2019), one frame at a time.

"A Convolutional Neural Network for Transcoding Simultaneously Acquired EEG-fMRI Data" (IEEE NER
2019); a public re-implementation is DCalhas/eeg_to_fmri, ``src/benchmarks/liu.py``. Structure:
EEG (channels x time) -> 1-D temporal convolutions (channels as input features) -> a latent ->
transposed 3-D convolutions up to a volume.

Adapted here: the transposed convolutions emit a coarse ``grid``³ single-channel volume (8³ = 512
values by default) instead of the scanner's voxel grid, and a linear head maps that volume to the
V grayordinates of the region (our frames live on the fsLR-32k surface + subcortical voxels, which
no convolution grid covers; the head plays the part of the grid -> grayordinate resampling and is
where the V-sized parameters sit). Input: one TR window (n_chans x n_times, e.g. 64 x 800).

Shapes: N frames (B * K folded), C channels, W samples, F conv channels, V grayordinates.
"""

from __future__ import annotations

from torch import Tensor, nn


class TemporalBlock(nn.Sequential):
    """Conv1d over time (stride 2) -> BatchNorm1d -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int):
        super().__init__(
            nn.Conv1d(in_channels, out_channels, kernel_size, stride=2, padding=kernel_size // 2, bias=False),
            nn.BatchNorm1d(out_channels),
            nn.ReLU(inplace=True),
        )


class UpBlock3d(nn.Sequential):
    """ConvTranspose3d (x2 upsampling) -> BatchNorm3d -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(
            nn.ConvTranspose3d(in_channels, out_channels, kernel_size=4, stride=2, padding=1, bias=False),
            nn.BatchNorm3d(out_channels),
            nn.ReLU(inplace=True),
        )


class CNNTCNet(nn.Module):
    """(N, n_chans, n_times) EEG windows -> (N, n_vertices) frames.

    Args:
        n_vertices: V, grayordinates per frame.
        n_chans: EEG channels.
        n_times: samples per window.
        channels: feature maps of the temporal convolutions.
        n_blocks: stride-2 temporal blocks (time is divided by 2^n_blocks).
        kernel_size: temporal kernel (odd).
        latent_dim: the latent between encoder and decoder.
        decoder_channels: feature maps of the 2³ seed volume; halved by every transposed conv.
        grid: side of the decoded volume (a power of two >= 4); grid³ feeds the linear head.
    """

    def __init__(
        self,
        n_vertices: int,
        n_chans: int = 64,
        n_times: int = 800,
        channels: int = 64,
        n_blocks: int = 5,
        kernel_size: int = 7,
        latent_dim: int = 256,
        decoder_channels: int = 64,
        grid: int = 8,
    ):
        super().__init__()
        n_up = grid.bit_length() - 2  # 2 -> grid in n_up doublings
        if grid < 4 or grid & (grid - 1) or decoder_channels >> n_up < 1:
            raise ValueError(f"grid={grid} must be a power of two >= 4, with decoder_channels >= 2^(log2(grid) - 2)")
        self.n_chans, self.n_times, self.decoder_channels = n_chans, n_times, decoder_channels
        # ---- encoder: temporal convolutions -> latent
        self.encoder = nn.Sequential(
            *[TemporalBlock(n_chans if i == 0 else channels, channels, kernel_size) for i in range(n_blocks)]
        )
        t = n_times
        for _ in range(n_blocks):
            t = (t + 2 * (kernel_size // 2) - kernel_size) // 2 + 1
        self.to_latent = nn.Sequential(nn.Flatten(), nn.Linear(channels * t, latent_dim), nn.ReLU(inplace=True))
        # ---- decoder: latent -> 2³ seed -> transposed convolutions -> grid³ volume
        self.from_latent = nn.Linear(latent_dim, decoder_channels * 8)
        ups, ch = [], decoder_channels
        for _ in range(n_up):
            ups.append(UpBlock3d(ch, ch // 2))
            ch //= 2
        self.decoder = nn.Sequential(*ups, nn.Conv3d(ch, 1, kernel_size=3, padding=1))
        # ---- head: volume -> grayordinates
        self.head = nn.Linear(grid**3, n_vertices)

    def forward(self, eeg: Tensor) -> Tensor:
        N = eeg.shape[0]
        h = self.encoder(eeg)  # (N, F, W / 2^L)
        z = self.to_latent(h)  # (N, latent_dim)
        v = self.from_latent(z).reshape(N, self.decoder_channels, 2, 2, 2)  # (N, D, 2, 2, 2)
        v = self.decoder(v)  # (N, 1, grid, grid, grid)
        return self.head(v.flatten(1))  # (N, V)
