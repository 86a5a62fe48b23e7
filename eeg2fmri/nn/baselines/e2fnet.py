"""E2fNet and E2fGAN's discriminator (Roos et al. 2025), one frame at a time.

Public code: kgr20/E2fNet (``models.py``, ``losses.py``, ``train_E2fNet.py``, ``train_E2fGAN.py``).
Structure kept: EEG spectrogram laid out as an image with the spectrogram's time bins as input
channels, electrodes x frequency as height x width -> a Conv2d encoder whose (1 x 5) kernels
stride along frequency only (x 1/4), then 3 x 3 convolutions (32 -> 64 -> 128 -> 256 channels) -> a two-level 2-D U-Net (the
original is diffusers' ``UNet2DModel`` with two ``DownBlock2D``/``UpBlock2D``, one ResNet block
per level, a ResNet-attention-ResNet middle, called at timestep 0) -> a Conv2d decoder
(256 -> 128 -> 64 -> 32 -> output maps). The discriminator of E2fGAN is five strided convolutions
(4 x 4 kernels, LeakyReLU 0.2, BatchNorm from the second) ending in one logit.

Adapted here:
- Input: one TR window; the spectrogram's time bins are the STFT segments inside it (the
  original stacks 20 TRs of |FFT|, one per TR, up to 250 Hz); frequency bins up to 75 Hz.
- The original resizes the encoder's map to the 64 x 64 slice grid of the volume (bicubic); ours
  keeps the electrode x frequency map (padded to even sides for the U-Net's down/up step).
- The U-Net's timestep embedding of the constant timestep 0 is a learned constant per block, so
  it is left out (the ResNet blocks' biases play that role).
- Output: their decoder emits volume slices through a sigmoid (data min-max scaled to [0, 1]);
  ours emits one map, flattened, and a linear head maps it to the V grayordinates of z-scored
  frames (no sigmoid: z-scores are unbounded).
- Discriminator: the original sees the volume's slices as channels of a 64 x 64 image; ours sees
  the frame through a linear map V -> grid x grid (the mirror of the generator's head), then the
  same five strided convolutions (grid 16 -> 8 -> 4 -> 2 -> 1, final kernel grid / 16).

Shapes: N frames, C electrodes, F frequency bins, S STFT segments, ch U-Net channels, V vertices.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from eeg2fmri.nn.baselines.features import Spectrogram, Standardize

#################################################################################
#                                 U-Net parts                                   #
#################################################################################


def _groups(channels: int) -> int:
    """GroupNorm groups: 32 as in diffusers when it divides the channels, else the largest divisor <= 32."""
    return max(g for g in range(1, min(32, channels) + 1) if channels % g == 0)


class ResBlock2d(nn.Module):
    """GroupNorm -> SiLU -> Conv3x3 -> GroupNorm -> SiLU -> Conv3x3, plus a (1x1 when needed) shortcut."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.GroupNorm(_groups(in_channels), in_channels),
            nn.SiLU(),
            nn.Conv2d(in_channels, out_channels, 3, padding=1),
            nn.GroupNorm(_groups(out_channels), out_channels),
            nn.SiLU(),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
        )
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.skip(x) + self.body(x)


class SelfAttention2d(nn.Module):
    """Single-head self-attention over the H x W positions, residual (the U-Net's middle block)."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.GroupNorm(_groups(channels), channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        N, ch, H, W = x.shape
        h = self.norm(x).flatten(2).transpose(1, 2)  # (N, H*W, ch)
        q, k, v = self.qkv(h).chunk(3, dim=-1)  # (N, H*W, ch) each
        h = F.scaled_dot_product_attention(q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1)).squeeze(1)  # (N, H*W, ch)
        return x + self.proj(h).transpose(1, 2).reshape(N, ch, H, W)


class UNet2d(nn.Module):
    """Two-level U-Net as diffusers' UNet2DModel(layers_per_block=1, two Down/UpBlock2D).

    conv_in -> [ResBlock -> Downsample] -> [ResBlock] -> middle (ResBlock, attention, ResBlock)
    -> [2 ResBlocks on skip concatenations -> Upsample] -> [2 ResBlocks on skips] -> GN, SiLU, conv_out.
    Input sides must be even (one 2x down/up step).
    """

    def __init__(self, channels: int):
        super().__init__()
        ch = channels
        self.conv_in = nn.Conv2d(ch, ch, 3, padding=1)
        self.down0 = ResBlock2d(ch, ch)
        self.downsample = nn.Conv2d(ch, ch, 3, stride=2, padding=1)
        self.down1 = ResBlock2d(ch, ch)
        self.mid = nn.Sequential(ResBlock2d(ch, ch), SelfAttention2d(ch), ResBlock2d(ch, ch))
        self.up1 = nn.ModuleList([ResBlock2d(2 * ch, ch), ResBlock2d(2 * ch, ch)])
        self.upsample = nn.Conv2d(ch, ch, 3, padding=1)
        self.up0 = nn.ModuleList([ResBlock2d(2 * ch, ch), ResBlock2d(2 * ch, ch)])
        self.out = nn.Sequential(nn.GroupNorm(_groups(ch), ch), nn.SiLU(), nn.Conv2d(ch, ch, 3, padding=1))

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv_in(x)  # (N, ch, H, W)
        skips = [h]
        h = self.down0(h)
        skips.append(h)
        h = self.downsample(h)  # (N, ch, H/2, W/2)
        skips.append(h)
        h = self.down1(h)
        skips.append(h)
        h = self.mid(h)  # (N, ch, H/2, W/2)
        for block in self.up1:
            h = block(torch.cat([h, skips.pop()], dim=1))
        h = self.upsample(F.interpolate(h, scale_factor=2.0, mode="nearest"))  # (N, ch, H, W)
        for block in self.up0:
            h = block(torch.cat([h, skips.pop()], dim=1))
        return self.out(h)  # (N, ch, H, W)


def conv_bn_relu(in_channels: int, out_channels: int, kernel, stride=1, padding=0) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=padding),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


#################################################################################
#                                  Generator                                    #
#################################################################################


class E2fNetGenerator(nn.Module):
    """(N, n_chans, n_times) EEG windows -> (N, n_vertices) frames.

    Args:
        n_vertices: V, grayordinates per frame.
        n_chans: EEG electrodes (the map's height).
        n_times: samples per window.
        sfreq: EEG sampling rate (Hz).
        segment_s: STFT segment (s).
        hop_s: STFT hop (s); the segments are the image's input channels.
        fmax: highest STFT frequency kept (Hz).
        unet_channels: channels of the encoder's last conv and of the U-Net (original: 256).
        base_channels: b, widths of the encoder (b, 2b, 4b) and decoder (4b, 2b, b) convs (original: 32).
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
        unet_channels: int = 128,
        base_channels: int = 32,
    ):
        super().__init__()
        b = base_channels
        self.spectrogram = Spectrogram(sfreq, n_times, segment_s, hop_s, fmax=fmax)
        F_, S = self.spectrogram.n_freqs, self.spectrogram.n_segments
        self.standardize = Standardize((S, n_chans, F_))
        # ---- encoder: (1 x 5) kernels striding along frequency, then 3 x 3
        self.encoder = nn.Sequential(
            conv_bn_relu(S, b, (1, 5), stride=(1, 2), padding=(0, 2)),
            conv_bn_relu(b, 2 * b, (1, 5), stride=(1, 2), padding=(0, 2)),
            conv_bn_relu(2 * b, 4 * b, 3, padding=1),
            nn.Conv2d(4 * b, unet_channels, 3, padding=1),
        )
        w = F_
        for _ in range(2):
            w = (w + 4 - 5) // 2 + 1
        self.map_size = (n_chans + n_chans % 2, w + w % 2)  # even sides for the U-Net
        self.unet = UNet2d(unet_channels)
        # ---- decoder: 4b -> 2b -> b -> one map, then the linear head
        self.decoder = nn.Sequential(
            conv_bn_relu(unet_channels, 4 * b, 3, padding=1),
            conv_bn_relu(4 * b, 2 * b, 3, padding=1),
            conv_bn_relu(2 * b, b, 3, padding=1),
            nn.Conv2d(b, 1, 3, padding=1),
        )
        self.head = nn.Linear(self.map_size[0] * self.map_size[1], n_vertices)

    def forward(self, eeg: Tensor) -> Tensor:
        x = self.spectrogram(eeg).permute(0, 3, 1, 2)  # (N, S, C, F): segments as channels
        x = self.standardize(x)
        h = self.encoder(x)  # (N, ch, C, F/4)
        H, W = self.map_size
        h = F.pad(h, (0, W - h.shape[-1], 0, H - h.shape[-2]), mode="replicate")  # (N, ch, H, W)
        h = self.unet(h)  # (N, ch, H, W)
        m = self.decoder(h)  # (N, 1, H, W)
        return self.head(m.flatten(1))  # (N, V)


#################################################################################
#                                Discriminator                                  #
#################################################################################


class FrameDiscriminator(nn.Module):
    """(N, n_vertices) frames -> (N,) real/fake logits (no sigmoid: BCE-with-logits).

    Args:
        n_vertices: V, grayordinates per frame.
        grid: side of the image the frame is linearly mapped to (a multiple of 16).
    """

    def __init__(self, n_vertices: int, grid: int = 16):
        super().__init__()
        if grid < 16 or grid % 16:
            raise ValueError(f"grid={grid}: the discriminator needs a multiple of 16 (four stride-2 convolutions)")
        self.grid = grid
        self.project = nn.Linear(n_vertices, grid * grid)
        lrelu = nn.LeakyReLU(0.2, inplace=True)
        self.model = nn.Sequential(
            nn.Conv2d(1, 64, 4, stride=2, padding=1),
            lrelu,
            nn.Conv2d(64, 64, 4, stride=2, padding=1),
            nn.BatchNorm2d(64),
            lrelu,
            nn.Conv2d(64, 128, 4, stride=2, padding=1),
            nn.BatchNorm2d(128),
            lrelu,
            nn.Conv2d(128, 128, 4, stride=2, padding=1),
            nn.BatchNorm2d(128),
            lrelu,
            nn.Conv2d(128, 1, grid // 16),
        )

    def forward(self, frames: Tensor) -> Tensor:
        img = self.project(frames).reshape(-1, 1, self.grid, self.grid)  # (N, 1, grid, grid)
        return self.model(img).flatten()  # (N,)
