"""Plain ``nn.Module`` networks (no Lightning, no data access): autoencoder, EEG encoder, DiT."""

from eeg2fmri.nn.autoencoder import LinearAutoencoder
from eeg2fmri.nn.dit import DIT_CONFIGS, DiT
from eeg2fmri.nn.eeg_encoder import EEGEncoder

__all__ = ["DIT_CONFIGS", "DiT", "EEGEncoder", "LinearAutoencoder"]
