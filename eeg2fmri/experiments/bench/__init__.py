"""``eeg2fmri bench``: the training step and the sampler against a bare-PyTorch reference (DESIGN §6).

One process measures, in this order:

1. the device's ceilings: a large matrix product (TFLOP/s; bf16 on CUDA, float32 on CPU) and a
   large device-to-device copy (GB/s, bytes read + written);
2. loading the prepared cache (``EEGfMRIDataModule.setup``: /fmri and /eeg into memory), GB/s,
   from disk where the page cache can be dropped for the file (``posix_fadvise``);
3. the reference: the same nn modules (LinearAutoencoder, EEGEncoder, DiT) in a hand-written loop
   that trains the module's own loss (``eeg2fmri.losses.training_losses``), data resident on the
   device, bf16 autocast and fused AdamW on CUDA, no Lightning;
4. the project's own step: ``Trainer.fit`` of the real ``EEG2fMRIDiffusion`` on the real
   ``EEGfMRIDataModule`` (GPU-resident path on CUDA), with the callbacks ``eeg2fmri fit`` always
   has (EMA, FiniteLossGuard), timed by a callback between consecutive batch starts;
5. the sampler: the module's ``sample`` (DDIM-50) on every test window, frames per second.

Timing (see /work/.library/device/METHOD.md): the first ``warmup`` steps (compilation, the first
copy of the data to the device, allocator growth) are excluded; CUDA times come from events
recorded on the stream at each step boundary (no per-step host sync), CPU times from the host
clock; ms/step is the median over the timed steps, and the mean (one host sync at each end of the
timed window) is reported beside it. Floors: the FLOPs one training step must do, counted from the
model's dimensions (matrix products and convolutions; elementwise work ignored), and the fewest
bytes it must move (AdamW's read and write of parameters and both moments, 24 B per parameter, plus
the batch read once in 16 bit), each over the measured ceiling.

``--scale ci`` (default) fits 2 CPU cores in under two minutes: a synthetic cache with every 20th
grayordinate (4,565) and a tiny model. ``--scale paper`` is the paper's size for one GPU: 91,282
grayordinates, K = 10, batch 32, the paper's model, 27,000 frames (540 test windows of 10).

Modules: ``scales`` (the two sizes), ``costs`` (the FLOP and byte floors), ``device`` (clocks,
memory, the measured ceilings), ``cache`` (the synthetic cache, loading), ``harness`` (what is
timed), ``report`` (JSON, the printed table), ``run`` (:func:`bench`, the sections in order).
"""

from eeg2fmri.experiments.bench.report import format_table
from eeg2fmri.experiments.bench.run import bench

__all__ = ["bench", "format_table"]
