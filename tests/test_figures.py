"""Alignment figures: panels computed right, files written with real content."""

import numpy as np
import pytest
from PIL import Image

from pose2seg_jax import figures
from pose2seg_jax.ops import skeleton
from pose2seg_jax.ops import templates as templates_lib

A = 32


def _person(offset: float) -> np.ndarray:
    """A standing pose in a 32-pixel align frame, joints visible except the right ear."""
    xs = np.array([16, 17, 15, 18, 14, 20, 12, 22, 10, 23, 9, 19, 13, 19, 13, 19, 13], np.float32)
    ys = np.array([4, 3, 3, 4, 4, 9, 9, 14, 14, 19, 19, 19, 19, 24, 24, 29, 29], np.float32)
    kp = np.stack([xs + offset, ys, np.full(17, 2.0, np.float32)], axis=-1)
    kp[4] = 0
    kp[9, 2] = 1  # an occluded wrist: its part map is negative
    return kp


def _details(n: int = 2):
    rng = np.random.default_rng(0)
    kp_align = np.stack([_person(2.0 * i) for i in range(n)])
    skel = np.stack([np.asarray(skeleton.skeleton_features(k, size=A)) for k in kp_align])
    masks = np.zeros((n, 60, 80), bool)
    masks[0, 10:50, 20:40] = True
    if n > 1:
        masks[1, 5:55, 45:70] = True
    return {
        "masks": masks,
        "probs": rng.uniform(0, 1, (n, A, A)).astype(np.float32),
        "template_index": np.array([0, 4, -1][:n]),
        "image_to_align": np.tile(np.eye(3, dtype=np.float32), (n, 1, 1)),
        "aligned": rng.normal(size=(n, A, A, 8)).astype(np.float32),
        "skeleton": skel,
        "keypoints_align": kp_align,
    }


def test_skeleton_summary_signs_and_limbs():
    kp = np.zeros((17, 3), np.float32)
    kp[0] = (8, 8, 2)  # visible nose
    kp[16] = (24, 8, 1)  # occluded right ankle
    kp[5] = (5, 22, 2)  # left shoulder and elbow: one horizontal limb (5, 7)
    kp[7] = (15, 22, 2)
    parts, limbs = figures.skeleton_summary(np.asarray(skeleton.skeleton_features(kp, size=A)))
    assert parts.shape == limbs.shape == (A, A)
    assert parts[8, 8] == pytest.approx(1.0, abs=1e-6)
    assert parts[8, 24] == pytest.approx(-1.0, abs=1e-6)
    assert parts[22, 5] == pytest.approx(1.0, abs=1e-6)
    # The limb's pixels carry a unit direction; nothing elsewhere.
    np.testing.assert_allclose(limbs[22, 5:16], 1.0, atol=1e-6)
    assert limbs[8, 8] == 0 and limbs[30, 30] == 0 and limbs[22, 20] == 0


def test_feature_rgb_picks_high_variance_channels():
    rng = np.random.default_rng(1)
    crop = np.zeros((A, A, 5), np.float32)
    crop[..., 3] = rng.normal(size=(A, A)) * 10
    crop[..., 1] = rng.normal(size=(A, A)) * 5
    crop[..., 4] = rng.normal(size=(A, A))
    rgb = figures.feature_rgb(crop)
    assert rgb.shape == (A, A, 3) and rgb.min() >= 0 and rgb.max() <= 1
    expected_red = np.clip(
        (crop[..., 3] - np.percentile(crop[..., 3], 1))
        / (np.percentile(crop[..., 3], 99) - np.percentile(crop[..., 3], 1)),
        0,
        1,
    )
    np.testing.assert_allclose(rgb[..., 0], expected_red, atol=1e-6)
    assert figures.feature_rgb(crop[..., :1]).shape == (A, A, 3)


def test_alignment_figure_draws_every_panel(tmp_path):
    rng = np.random.default_rng(2)
    image = rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)
    details = _details(3)
    keypoints = details["keypoints_align"] * 2  # any image-pixel pose
    templates = templates_lib.load_templates()
    pictures = [figures.alignment_figure(image, keypoints, details, i, templates) for i in range(3)]
    for picture in pictures:
        assert picture.dtype == np.uint8 and picture.ndim == 3 and picture.shape[2] == 3
        assert picture.shape[0] > 400 and picture.shape[1] > 600
        not_white = (picture < 240).any(axis=-1).mean()
        assert not_white > 0.3, "panels should fill much of the figure"
        assert len(np.unique(picture.reshape(-1, 3), axis=0)) > 500
    # Different people give different figures (template, crop and mask panels differ).
    assert np.mean(pictures[0] != pictures[1]) > 0.05
    path = tmp_path / "fig.png"
    figures.visualization.save_png(pictures[2], str(path))
    with Image.open(path) as png:
        assert png.size == (pictures[2].shape[1], pictures[2].shape[0])
    without = {k: v for k, v in details.items() if k != "skeleton"}
    assert figures.alignment_figure(image, keypoints, without, 0, templates).shape[2] == 3


def test_write_alignment_figures_with_a_stand_in_predictor(tmp_path):
    """write_alignment_figures asks the predictor once and writes a PNG per person."""
    details = _details(2)
    calls = []

    class Explainer:
        templates = templates_lib.load_templates()

        def explain(self, image, keypoints):
            calls.append(len(keypoints))
            return details

    image = np.full((60, 80, 3), 90, np.uint8)
    keypoints = details["keypoints_align"] * 2
    paths = figures.write_alignment_figures(Explainer(), image, keypoints, tmp_path / "f", "img")
    assert calls == [2]
    assert [p.rsplit("/", 1)[-1] for p in paths] == ["img_person0.png", "img_person1.png"]
    for p in paths:
        with Image.open(p) as png:
            pixels = np.asarray(png.convert("RGB"))
        assert pixels.std() > 20
    assert (
        figures.write_alignment_figures(Explainer(), image, np.zeros((0, 17, 3)), tmp_path, "e")
        == []
    )
