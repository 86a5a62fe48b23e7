"""The benchmark's sizes: the two scales (ci, paper), the architecture they time, the sampler's settings."""

from __future__ import annotations

from typing import Literal

Scale = Literal["ci", "paper"]
CompileMode = Literal["none", "default", "reduce-overhead"]

# the architecture the FLOP/byte model and the bare reference describe: the paper's as published
# (strided-convolution EEG encoder, K EEG tokens, no regression stage; configs/paper/)
PAPER_ARCHITECTURE = dict(
    eeg_features="conv", regression=False, train_autoencoder=True, loss_weighting="eps", cond_drop_prob=0.1
)
SCALES: dict[str, dict] = {
    # every 20th grayordinate (the tests' simulator subset), 10 clips of 50 frames, a tiny model
    "ci": dict(
        every=20,
        n_clips=10,
        clip_frames=50,
        n_frames=10,
        batch_size=32,
        steps=20,
        warmup=5,
        model=dict(
            latent_dim=64,
            eeg_embed_dim=32,
            eeg_blocks=2,
            eeg_channels=16,
            hidden_size=64,
            depth=2,
            num_heads=4,
            **PAPER_ARCHITECTURE,
        ),
    ),
    # one CineBrain subject: 27,000 frames in 270 clips of 100 (70/10/20 % of clips: 540 test
    # windows of 10), all 91,282 grayordinates, the paper's model (EEG2fMRIDiffusion's defaults)
    "paper": dict(
        every=1,
        n_clips=270,
        clip_frames=100,
        n_frames=10,
        batch_size=32,
        steps=50,
        warmup=10,
        model=dict(PAPER_ARCHITECTURE),
    ),
}
N_CHANS, N_TIMES = 64, 800  # the 64-channel montage, one TR (0.8 s) at 1000 Hz
SAMPLER_STEPS = 50  # DDIM steps of the sampler measurement (DESIGN §6)
SAMPLER_REPEATS = 3
SAMPLER_MAX_WINDOWS = 1024  # windows per sample() call; more are sampled in chunks
