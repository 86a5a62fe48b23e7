"""Surface figures: grayordinate → mesh mapping, the fsLR-32k surfaces, the painter's-algorithm
renderer, Figure 4 as PNG and the callback in a Trainer.test run."""

import numpy as np
import pytest
from lightning.pytorch import Trainer
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.image import imread

from eeg2fmri.data.cifti import N_CORTEX_LEFT, N_CORTEX_RIGHT, N_GRAYORDINATES, standard_brain_models
from eeg2fmri.figures import (
    N_MESH,
    NAN_GREY,
    SurfaceFigures,
    camera,
    draw,
    frame_figure,
    load_surface,
    project,
    save_png,
    to_mesh,
)

N_CORTEX = N_CORTEX_LEFT + N_CORTEX_RIGHT


def test_load_surface_is_the_fslr32k_mesh():
    for hemi in ("L", "R"):
        vertices, faces = load_surface(hemi)
        assert vertices.shape == (N_MESH, 3) and faces.shape == (64_980, 3)
        assert faces.min() == 0 and faces.max() == N_MESH - 1
        assert load_surface(hemi)[0] is vertices  # cached
        assert not vertices.flags.writeable
    # left hemisphere on the left (RAS), and the midthickness differs from the inflated surface
    assert load_surface("L")[0][:, 0].mean() < 0 < load_surface("R")[0][:, 0].mean()
    assert not np.allclose(load_surface("L", "midthickness")[0], load_surface("L")[0])
    with pytest.raises(ValueError, match="expected one of"):
        load_surface("L", "pial_typo")


def test_to_mesh_puts_each_value_at_its_vertex():
    bm = standard_brain_models()
    rng = np.random.default_rng(0)
    indices = np.sort(rng.choice(N_GRAYORDINATES, 5000, replace=False))  # cortex and subcortex
    values = rng.standard_normal(len(indices))
    left, right = to_mesh(values, indices)
    assert left.shape == right.shape == (N_MESH,)
    is_l, is_r = indices < N_CORTEX_LEFT, (indices >= N_CORTEX_LEFT) & (indices < N_CORTEX)
    np.testing.assert_array_equal(left[bm.vertex[indices[is_l]]], values[is_l])
    np.testing.assert_array_equal(right[bm.vertex[indices[is_r]]], values[is_r])
    # every other vertex is NaN; subcortical values go nowhere
    assert np.isfinite(left).sum() == is_l.sum() and np.isfinite(right).sum() == is_r.sum()

    # the whole layout: every cortical vertex filled, the medial wall NaN
    left, right = to_mesh(np.arange(N_GRAYORDINATES, dtype=float), np.arange(N_GRAYORDINATES))
    assert np.isfinite(left).sum() == N_CORTEX_LEFT and np.isfinite(right).sum() == N_CORTEX_RIGHT
    medial_l = np.setdiff1d(np.arange(N_MESH), bm.vertex[:N_CORTEX_LEFT])
    medial_r = np.setdiff1d(np.arange(N_MESH), bm.vertex[N_CORTEX_LEFT:N_CORTEX])
    assert np.isnan(left[medial_l]).all() and np.isnan(right[medial_r]).all()
    assert left[bm.vertex[17]] == 17 and right[bm.vertex[N_CORTEX_LEFT + 5]] == N_CORTEX_LEFT + 5
    with pytest.raises(ValueError, match="values for"):
        to_mesh(np.zeros(3), np.arange(4))


# ------------------------------------------------------------------ the renderer on tiny meshes


def _render_pixels(draw_fn, size=100) -> np.ndarray:
    """(size, size, 3) floats of one axes filling a square figure."""
    fig = Figure(figsize=(1, 1), dpi=size)
    ax = fig.add_axes([0, 0, 1, 1])
    draw_fn(ax)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3] / 255.0


def _square_scene():
    """A large triangle far away (z = 0, value 0) listed after a small one near the viewer (z = 1,
    value 1) and a back-facing one nearest of all (z = 2, value 0.5): seen from above, the small
    triangle must cover the large one wherever they overlap, and the back face must not show."""
    vertices = np.array(
        [
            [-0.2, -0.2, 1.0],
            [0.2, -0.2, 1.0],
            [0.0, 0.3, 1.0],  # near, small, counter-clockwise
            [-1.0, -1.0, 0.0],
            [1.0, -1.0, 0.0],
            [0.0, 1.0, 0.0],  # far, large, counter-clockwise
            [-1.0, -1.0, 2.0],
            [0.0, 1.0, 2.0],
            [1.0, -1.0, 2.0],  # nearest, clockwise: facing away
        ]
    )
    faces = np.array([[0, 1, 2], [3, 4, 5], [6, 7, 8]])
    values = np.array([1.0, 1, 1, 0, 0, 0, 0.5, 0.5, 0.5])
    return vertices, faces, values


def test_painter_nearer_triangle_wins_and_back_faces_are_culled():
    vertices, faces, values = _square_scene()
    proj = project(vertices, faces, camera("both", "superior"))
    assert proj.faces.tolist() == [[3, 4, 5], [0, 1, 2]]  # culled, then far to near
    cmap = colormaps["viridis"]
    px = _render_pixels(lambda ax: draw(ax, proj, values, 0.0, 1.0, cmap, shading=0.0))
    centre, side = px[50, 50], px[75, 30]  # inside the small triangle; inside only the large one
    np.testing.assert_allclose(centre, cmap(1.0)[:3], atol=2 / 255)
    np.testing.assert_allclose(side, cmap(0.0)[:3], atol=2 / 255)
    # without culling the clockwise triangle, nearest of all, covers both
    proj_all = project(vertices, faces, camera("both", "superior"), cull=False)
    px = _render_pixels(lambda ax: draw(ax, proj_all, values, 0.0, 1.0, cmap, shading=0.0))
    np.testing.assert_allclose(px[50, 50], cmap(0.5)[:3], atol=2 / 255)


def test_renderer_greys_missing_data_and_shades_oblique_faces():
    vertices, faces, values = _square_scene()
    values = values.copy()
    values[:3] = np.nan  # the small triangle has no data
    proj = project(vertices, faces, camera("both", "superior"))
    px = _render_pixels(lambda ax: draw(ax, proj, values, 0.0, 1.0, "viridis", shading=0.0))
    np.testing.assert_allclose(px[50, 50], [NAN_GREY] * 3, atol=2 / 255)
    # Lambert: a face tilted away from the light is darker than the same colour facing it
    flat = _render_pixels(lambda ax: draw(ax, proj, np.zeros(9), -1, 1, "Greys", shading=0.5))
    tilted = vertices.copy()
    tilted[3, 2] = 1.5  # the large triangle now leans to the right, away from the light
    proj_t = project(tilted, faces, camera("both", "superior"))
    dark = _render_pixels(lambda ax: draw(ax, proj_t, np.zeros(9), -1, 1, "Greys", shading=0.5))
    assert dark[75, 30].mean() < flat[75, 30].mean() - 0.02


def test_views_are_rotations_not_mirrors():
    for hemi, view in [
        ("L", "lateral"),
        ("R", "lateral"),
        ("L", "medial"),
        ("R", "medial"),
        ("both", "superior"),
        ("both", "inferior"),
    ]:
        r = camera(hemi, view)
        np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
        assert np.isclose(np.linalg.det(r), 1.0)
    # the left lateral view looks at the left side with the front on the left
    r = camera("L", "lateral")
    assert r[2] @ [-1, 0, 0] == 1 and r[0] @ [0, 1, 0] == -1
    with pytest.raises(ValueError, match="one hemisphere"):
        camera("both", "lateral")


# ------------------------------------------------------------------ Figure 4


def _panel(png: np.ndarray, fig: Figure, ax) -> np.ndarray:
    x0, y0, x1, y1 = np.round(ax.get_window_extent().extents).astype(int)
    h = png.shape[0]
    return png[h - y1 : h - y0, x0:x1, :3]


def test_frame_figure_png(tmp_path):
    rng = np.random.default_rng(0)
    truth = rng.standard_normal(N_GRAYORDINATES)
    pred = truth + rng.standard_normal(N_GRAYORDINATES)
    fig = frame_figure(pred, truth, np.arange(N_GRAYORDINATES), title="random", dpi=80)
    path = save_png(fig, tmp_path / "fig.png")
    assert path.exists() and not list(tmp_path.glob(".fig.png*"))  # no temporary file left behind
    png = imread(path)
    w, h = fig.get_size_inches() * fig.dpi
    assert png.shape == (round(h), round(w), 4)
    assert png[..., :3].std() > 0.05
    n_panels = 3  # left lateral, right lateral, superior
    data_axes = fig.axes[: 3 * n_panels]
    assert [ax.get_title() for ax in data_axes[:n_panels]] == ["left lateral", "right lateral", "superior"]
    for p in range(n_panels):
        pred_px, truth_px = _panel(png, fig, data_axes[p]), _panel(png, fig, data_axes[n_panels + p])
        assert pred_px.shape == truth_px.shape
        assert (np.abs(pred_px - truth_px).max(axis=-1) > 0.05).mean() > 0.05  # different inputs → different pixels
        assert pred_px.std() > 0.05  # a rendered brain, not a blank panel

    # same inputs: the prediction and truth rows are pixel-identical
    fig = frame_figure(truth, truth, np.arange(N_GRAYORDINATES), dpi=40, views=("medial",))
    png = imread(save_png(fig, tmp_path / "same.png"))
    for p in range(2):
        np.testing.assert_array_equal(_panel(png, fig, fig.axes[p]), _panel(png, fig, fig.axes[2 + p]))


# ------------------------------------------------------------------ the callback


def test_callback_writes_png_and_logs_to_tensorboard(tmp_path, raw_subject):
    from lightning.pytorch.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from eeg2fmri.data.datamodule import EEGfMRIDataModule
    from eeg2fmri.data.prepare import prepare
    from eeg2fmri.module import EEG2fMRIDiffusion

    cache = prepare(raw_subject, tmp_path / "prep", progress=False)
    dm = EEGfMRIDataModule(str(cache), n_frames=4, batch_size=8)
    model = EEG2fMRIDiffusion(
        n_vertices=dm.n_vertices,
        n_chans=dm.n_chans,
        n_times=dm.n_times,
        n_frames=4,
        latent_dim=16,
        eeg_embed_dim=16,
        eeg_channels=8,
        eeg_blocks=2,
        hidden_size=32,
        depth=1,
        num_heads=2,
    )
    model.sampling = dict(num_inference_steps=2)
    surface = SurfaceFigures(every_n_epochs=1, frame=2, window=1)
    logger = TensorBoardLogger(tmp_path / "logs", name="", version=0)
    trainer = Trainer(
        max_epochs=1,
        limit_train_batches=1,
        limit_val_batches=1,
        num_sanity_val_steps=1,
        logger=logger,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[surface],
        default_root_dir=tmp_path,
    )
    trainer.fit(model, dm)
    trainer.test(model, dm)

    png_path = tmp_path / "logs" / "version_0" / "surface_frame2.png"  # no checkpoint: the log folder
    assert surface.saved == png_path and png_path.exists()
    png = imread(png_path)
    assert png.shape[0] > 500 and png.shape[1] > 500 and png[..., :3].std() > 0.05
    events = EventAccumulator(str(tmp_path / "logs" / "version_0"), size_guidance={"images": 0})
    events.Reload()
    assert sorted(events.Tags()["images"]) == ["surface/test", "surface/val"]  # once each: not at the sanity check
    assert len(events.Images("surface/val")) == 1

    with pytest.raises(ValueError, match="frame 7: windows have 4 frames"):
        Trainer(logger=False, callbacks=[SurfaceFigures(frame=7)], enable_progress_bar=False).test(model, dm)
