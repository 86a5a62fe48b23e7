"""Plain ``nn.Module`` networks of the baselines (paper Tables 1-2), each predicting one frame from
its own EEG window: CNN-TC, CNN-TAG, E2fNet (+ E2fGAN's discriminator), and the EEG spectral
features they and the ridge floor share. The LightningModules are in ``eeg2fmri.baselines``."""

from eeg2fmri.nn.baselines.cnn_tag import CNNTAGNet, TopographicalAttention
from eeg2fmri.nn.baselines.cnn_tc import CNNTCNet
from eeg2fmri.nn.baselines.e2fnet import E2fNetGenerator, FrameDiscriminator, UNet2d
from eeg2fmri.nn.baselines.features import (
    EEG_BANDS,
    BandPower,
    Spectrogram,
    Standardize,
    band_power,
    spectrogram,
    welch,
)

__all__ = [
    "EEG_BANDS",
    "BandPower",
    "CNNTAGNet",
    "CNNTCNet",
    "E2fNetGenerator",
    "FrameDiscriminator",
    "Spectrogram",
    "Standardize",
    "TopographicalAttention",
    "UNet2d",
    "band_power",
    "spectrogram",
    "welch",
]
