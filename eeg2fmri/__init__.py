"""eeg2fmri: fsLR-32k CIFTI fMRI sequences from simultaneous EEG (EEG-conditioned diffusion
transformer with null-space InterRecon). See README.md."""

__version__ = "0.1.0"
