"""Pictures: overlays colour exactly the masked pixels; grids and curves are written."""

import os

import numpy as np
from PIL import Image

from pose2seg_jax import visualization


def test_overlay_colours_only_masked_pixels():
    image = np.full((40, 50, 3), 100, np.uint8)
    masks = np.zeros((2, 40, 50), bool)
    masks[0, 5:15, 5:15] = True
    masks[1, 20:30, 30:45] = True
    out = visualization.overlay(image, masks, draw_skeleton=False)
    changed = np.any(out != image, axis=-1)
    np.testing.assert_array_equal(changed, masks.any(0))
    colours = visualization.person_colours(2)
    expected = np.round(0.5 * 100 + 0.5 * colours[1].astype(np.float32))
    np.testing.assert_allclose(out[25, 35], expected, atol=1)


def test_overlay_draws_visible_joints_only():
    image = np.zeros((64, 64, 3), np.uint8)
    keypoints = np.zeros((1, 17, 3), np.float32)
    keypoints[0, 0] = (20, 20, 2)
    keypoints[0, 1] = (40, 40, 0)  # missing: not drawn
    out = visualization.overlay(image, np.zeros((1, 64, 64), bool), keypoints)
    assert out[20, 20].sum() > 0
    assert out[40, 40].sum() == 0


def test_grid_and_curves(tmp_path):
    pictures = [np.full((30, 40, 3), i * 40, np.uint8) for i in range(5)]
    g = visualization.grid(pictures, columns=2, height=32)
    assert g.shape[0] == 3 * 32
    history = {
        "train": [{"step": s, "train/loss": 1.0 / s, "train/learning_rate": 1e-3} for s in (1, 2)],
        "eval": [{"step": 2, "AP": 0.4, "AP50": 0.7}],
    }
    path = visualization.plot_curves(history, os.path.join(tmp_path, "c.png"))
    assert Image.open(path).size[0] > 100
