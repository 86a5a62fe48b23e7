"""EEG spectral features of one frame window, shared by CNN-TAG, E2fNet and the ridge floor.

Torch ops only (``unfold`` + ``rfft``), so the features are computed on the GPU inside the model
from the same (-1, 1)-scaled EEG windows every model receives. The scaling follows SciPy so a test
can hold the functions to ``scipy.signal.spectrogram`` / ``scipy.signal.welch``:

- :func:`segment_psd`: one-sided power spectral density (V²/Hz) of Hann-windowed segments,
  mean removed per segment (SciPy's ``detrend='constant'``), ``scaling='density'``.
- :func:`spectrogram` (STFT power, channels x frequency x segments) and :func:`welch` (its mean
  over segments) on top of it; :func:`band_power` integrates Welch's PSD over frequency bands.
- :class:`Spectrogram`, :class:`BandPower`: the same as modules with the frequency selection fixed
  at construction (what the networks hold), and :class:`Standardize`, the networks' running
  per-feature z-scoring of those features (the originals z-score their spectra offline).

Shapes: ``...`` any leading dims (B, K), C channels, W samples per window, S segments, F bins.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

# Canonical EEG bands (Hz), lower edge inclusive, upper exclusive. Gamma stops at 75 Hz, the
# upper edge of the band-pass that `eeg2fmri prepare` applies.
EEG_BANDS: dict[str, tuple[float, float]] = {
    "delta": (1.0, 4.0),
    "theta": (4.0, 8.0),
    "alpha": (8.0, 13.0),
    "beta": (13.0, 30.0),
    "gamma": (30.0, 75.0),
}


#################################################################################
#                                   Functions                                   #
#################################################################################


def rfft_freqs(nperseg: int, sfreq: float) -> Tensor:
    """(nperseg // 2 + 1,) frequencies (Hz) of the one-sided spectrum, float64."""
    return torch.arange(nperseg // 2 + 1, dtype=torch.float64) * (sfreq / nperseg)


def segment_psd(x: Tensor, sfreq: float, nperseg: int, step: int, detrend: bool = True) -> Tensor:
    """One-sided PSD of each Hann-windowed segment: (..., W) -> (..., S, nperseg // 2 + 1).

    S = (W - nperseg) // step + 1 (trailing samples that do not fill a segment are dropped, like
    SciPy's default ``boundary=None, padded=False``).
    """
    if nperseg > x.shape[-1]:
        raise ValueError(f"segments of {nperseg} samples do not fit in windows of {x.shape[-1]} samples")
    dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    x = x.to(dtype)
    window = torch.hann_window(nperseg, periodic=True, dtype=dtype, device=x.device)  # scipy's 'hann'
    seg = x.unfold(-1, nperseg, step)  # (..., S, nperseg)
    if detrend:
        seg = seg - seg.mean(dim=-1, keepdim=True)
    spec = torch.fft.rfft(seg * window, dim=-1)  # (..., S, F)
    power = spec.real.square() + spec.imag.square()  # (..., S, F)
    # density scaling; one-sided: every bin but DC (and Nyquist for even nperseg) counted twice
    onesided = torch.full((nperseg // 2 + 1,), 2.0, dtype=dtype, device=x.device)
    onesided[0] = 1.0
    if nperseg % 2 == 0:
        onesided[-1] = 1.0
    return power * (onesided / (sfreq * window.square().sum()))  # (..., S, F)


def spectrogram(x: Tensor, sfreq: float, nperseg: int, step: int) -> Tensor:
    """STFT power: (..., W) -> (..., F, S), as ``scipy.signal.spectrogram(x, sfreq, 'hann',
    nperseg, nperseg - step, mode='psd')``."""
    return segment_psd(x, sfreq, nperseg, step).transpose(-1, -2)


def welch(x: Tensor, sfreq: float, nperseg: int, step: int | None = None) -> Tensor:
    """Welch PSD: (..., W) -> (..., F), as ``scipy.signal.welch(x, sfreq, 'hann', nperseg,
    nperseg - step)`` (default: SciPy's overlap of nperseg // 2 samples)."""
    return segment_psd(x, sfreq, nperseg, step or nperseg - nperseg // 2).mean(dim=-2)


def band_matrix(freqs: Tensor, bands: dict[str, tuple[float, float]]) -> Tensor:
    """(F, n_bands) 0/1 matrix selecting the bins lo <= f < hi of each band; errors name empty bands."""
    cols = []
    for name, (lo, hi) in bands.items():
        sel = (freqs >= lo) & (freqs < hi)
        if not bool(sel.any()):
            df = float(freqs[1] - freqs[0]) if len(freqs) > 1 else float("nan")
            raise ValueError(
                f"band {name!r} [{lo}, {hi}) Hz holds no frequency bin at a resolution of {df:.3g} Hz; "
                "use longer segments (segment_s) or drop the band"
            )
        cols.append(sel)
    return torch.stack(cols, dim=1).to(freqs.dtype)


def band_power(
    x: Tensor, sfreq: float, nperseg: int, bands: dict[str, tuple[float, float]] = EEG_BANDS, step: int | None = None
) -> Tensor:
    """Power per band (V²): Welch's PSD summed over the band's bins times the bin width.
    (..., W) -> (..., n_bands)."""
    psd = welch(x, sfreq, nperseg, step)  # (..., F)
    freqs = rfft_freqs(nperseg, sfreq)
    m = band_matrix(freqs, bands).to(device=psd.device, dtype=psd.dtype)  # (F, n_bands)
    return psd @ m * (sfreq / nperseg)  # (..., n_bands)


#################################################################################
#                                    Modules                                    #
#################################################################################


def _float(x: Tensor) -> Tensor:
    """float64 stays float64 (reference checks); anything else becomes float32."""
    return x if x.dtype == torch.float64 else x.float()


def _samples(seconds: float, sfreq: float, what: str, n_times: int) -> int:
    n = int(round(seconds * sfreq))
    if not 1 <= n <= n_times:
        raise ValueError(f"{what} = {seconds} s is {n} samples at {sfreq} Hz; it must lie in 1..{n_times} (n_times)")
    return n


class Spectrogram(nn.Module):
    """Log STFT power of every channel: (..., C, W) -> (..., C, F, S), bins fmin <= f <= fmax.

    Args:
        sfreq: sampling rate (Hz).
        n_times: W, samples per window (checked against segment_s).
        segment_s: STFT segment length (s); the frequency resolution is 1 / segment_s.
        hop_s: step between segments (s).
        fmin: lowest kept frequency (Hz; the DC bin carries nothing after the high-pass).
        fmax: highest kept frequency (Hz; 75 Hz is the band-pass edge).
        log: return log(PSD) (the scale that networks and the ridge see), else the PSD.
    """

    def __init__(
        self,
        sfreq: float = 1000.0,
        n_times: int = 800,
        segment_s: float = 0.4,
        hop_s: float = 0.1,
        fmin: float = 1.0,
        fmax: float = 75.0,
        log: bool = True,
    ):
        super().__init__()
        self.sfreq, self.log = sfreq, log
        self.nperseg = _samples(segment_s, sfreq, "segment_s", n_times)
        self.step = _samples(hop_s, sfreq, "hop_s", n_times)
        freqs = rfft_freqs(self.nperseg, sfreq)
        keep = torch.nonzero((freqs >= fmin) & (freqs <= fmax)).squeeze(1)
        if len(keep) == 0:
            raise ValueError(f"no STFT bin between {fmin} and {fmax} Hz at {sfreq / self.nperseg:.3g} Hz resolution")
        self.register_buffer("bins", keep, persistent=False)
        self.freqs = freqs[keep]
        self.n_freqs = len(keep)
        self.n_segments = (n_times - self.nperseg) // self.step + 1

    def forward(self, eeg: Tensor) -> Tensor:
        with torch.autocast(eeg.device.type, enabled=False):  # spectra in float32 whatever the precision
            p = spectrogram(_float(eeg), self.sfreq, self.nperseg, self.step)  # (..., C, F_all, S)
            p = p.index_select(-2, self.bins)  # (..., C, F, S)
            return torch.log(p.clamp_min(1e-20)) if self.log else p


class BandPower(nn.Module):
    """Log band power of every channel (Welch): (..., C, W) -> (..., C, n_bands).

    Args:
        sfreq: sampling rate (Hz).
        n_times: W, samples per window.
        segment_s: Welch segment length (s), 50 % overlap; 0.4 s gives 2.5 Hz bins and three
            segments in a 0.8 s window.
        bands: name -> (low, high) Hz, low inclusive.
        log: return log(power), else the power.
    """

    def __init__(
        self,
        sfreq: float = 1000.0,
        n_times: int = 800,
        segment_s: float = 0.4,
        bands: dict[str, tuple[float, float]] = EEG_BANDS,
        log: bool = True,
    ):
        super().__init__()
        self.sfreq, self.log = sfreq, log
        self.nperseg = _samples(segment_s, sfreq, "segment_s", n_times)
        self.bands = dict(bands)
        m = band_matrix(rfft_freqs(self.nperseg, sfreq), self.bands) * (sfreq / self.nperseg)  # (F, n_bands)
        self.register_buffer("band_weights", m.float(), persistent=False)
        self.n_bands = len(self.bands)

    def forward(self, eeg: Tensor) -> Tensor:
        with torch.autocast(eeg.device.type, enabled=False):  # band power in float32 whatever the precision
            psd = welch(_float(eeg), self.sfreq, self.nperseg)  # (..., C, F)
            p = psd @ self.band_weights.to(psd.dtype)  # (..., C, n_bands)
            return torch.log(p.clamp_min(1e-20)) if self.log else p


class Standardize(nn.Module):
    """Running per-feature z-scoring of any feature tensor (BatchNorm without the affine part).

    The originals z-score their spectra over the training set before training; this learns the
    same statistics on the fly and applies the running ones in eval mode, so each frame's
    prediction depends on that frame alone at test time.
    """

    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        self.shape = tuple(shape)
        self.norm = nn.BatchNorm1d(math.prod(self.shape), affine=False)

    def forward(self, x: Tensor) -> Tensor:
        lead = x.shape[: x.dim() - len(self.shape)]
        return self.norm(x.reshape(-1, math.prod(self.shape))).reshape(*lead, *self.shape)
