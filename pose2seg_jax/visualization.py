"""Pictures: mask overlays with skeletons, grids of overlays, training curves.

Drawing is NumPy plus PIL's ImageDraw (no OpenCV); plots use matplotlib's Agg backend.
"""

import os
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from pose2seg_jax.ops.keypoints import LIMBS


def person_colours(n: int) -> np.ndarray:
    """``n`` well-separated RGB uint8 colours (golden-ratio hues)."""
    import colorsys

    hues = (np.arange(n) * 0.618033988749895) % 1.0
    return np.array(
        [[int(255 * c) for c in colorsys.hsv_to_rgb(h, 0.75, 1.0)] for h in hues], np.uint8
    ).reshape(n, 3)


def overlay(
    image: np.ndarray,
    masks: np.ndarray,
    keypoints: np.ndarray | None = None,
    *,
    alpha: float = 0.5,
    draw_skeleton: bool = True,
) -> np.ndarray:
    """Each person's mask blended in its own colour, with the skeleton drawn on top.

    Args:
      image: (H, W, 3) uint8 RGB.
      masks: (n, H, W) bool.
      keypoints: (n, 17, 3) in image coordinates (joints with v == 0 are not drawn).
      alpha: mask opacity.
      draw_skeleton: draw limbs and joints.

    Returns:
      (H, W, 3) uint8 RGB picture.
    """
    out = image.astype(np.float32).copy()
    colours = person_colours(len(masks))
    for mask, colour in zip(masks, colours):
        m = mask.astype(bool)
        out[m] = (1 - alpha) * out[m] + alpha * colour
    picture = Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))
    if keypoints is not None and draw_skeleton:
        draw = ImageDraw.Draw(picture)
        radius = max(2, round(min(image.shape[:2]) / 150))
        for person, colour in zip(keypoints, colours):
            c = tuple(int(v) for v in colour)
            for a, b in LIMBS:
                if person[a, 2] > 0 and person[b, 2] > 0:
                    draw.line([tuple(person[a, :2]), tuple(person[b, :2])], fill=c, width=radius)
            for x, y, v in person:
                if v > 0:
                    fill = (255, 255, 255) if v >= 2 else (90, 90, 90)
                    box = [x - radius, y - radius, x + radius, y + radius]
                    draw.ellipse(box, fill=fill, outline=c)
    return np.asarray(picture)


def grid(pictures: Sequence[np.ndarray], columns: int = 4, height: int = 256) -> np.ndarray:
    """Pictures resized to a common height and tiled in rows of ``columns``."""
    if not pictures:
        return np.zeros((height, height, 3), np.uint8)
    resized = []
    for p in pictures:
        w = max(1, round(p.shape[1] * height / p.shape[0]))
        resized.append(np.asarray(Image.fromarray(p).resize((w, height), Image.BILINEAR)))
    width = max(r.shape[1] for r in resized)
    rows = -(-len(resized) // columns)
    canvas = np.full((rows * height, columns * width, 3), 255, np.uint8)
    for i, r in enumerate(resized):
        y, x = (i // columns) * height, (i % columns) * width
        canvas[y : y + height, x : x + r.shape[1]] = r
    return canvas


def save_png(picture: np.ndarray, path: str) -> str:
    """Writes an RGB uint8 array as PNG (creating the folder); returns the path."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    Image.fromarray(picture).save(path)
    return path


def plot_curves(history: dict, path: str) -> str:
    """Training loss and learning rate, and evaluation AP, against steps, as one PNG.

    Args:
      history: {'train': [{'step', 'train/loss', 'train/learning_rate', ...}],
        'eval': [{'step', 'AP', 'AP50', ...}]}.
      path: output PNG.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    train = history.get("train", [])
    if train:
        s = [h["step"] for h in train]
        axes[0].plot(s, [h["train/loss"] for h in train], label="loss")
        axes[0].set_yscale("log")
        lr_axis = axes[0].twinx()
        lr_axis.plot(s, [h["train/learning_rate"] for h in train], "C1--", label="lr")
        lr_axis.set_ylabel("learning rate")
    axes[0].set_xlabel("step")
    axes[0].set_ylabel("training loss")
    axes[0].set_title("training")
    evals = history.get("eval", [])
    for key in ("AP", "AP50", "AP75", "AP_moderate", "AP_hard"):
        points = [(h["step"], h[key]) for h in evals if h.get(key, -1) >= 0]
        if points:
            axes[1].plot(*zip(*points), marker="o", label=key)
    axes[1].set_xlabel("step")
    axes[1].set_ylabel("COCO segm AP")
    axes[1].set_ylim(0, 1)
    axes[1].set_title("evaluation")
    if evals:
        axes[1].legend()
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
