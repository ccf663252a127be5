"""Alignment figures: what the network saw for one person, for understanding failures.

One figure per person, six panels: the chosen pose template (with the person's joints mapped into
the align frame on top), the aligned feature crop, the skeleton part maps, the limb fields, the
predicted mask in the align frame, and the image with that person's mask. A wrong template or a
crop that misses the body shows up at a glance. Matplotlib's Agg backend; no display needed.

    details = predictor.explain(image, keypoints)
    picture = alignment_figure(image, keypoints, details, person=0, templates=predictor.templates)
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from pose2seg_jax import visualization
from pose2seg_jax.ops.keypoints import LIMBS, NUM_KEYPOINTS


def feature_rgb(aligned: np.ndarray) -> np.ndarray:
    """The three highest-variance channels of an (A, A, C) crop as an (A, A, 3) image in [0, 1].

    Each channel is stretched between its 1st and 99th percentiles. With fewer than three
    channels the missing ones repeat the first.
    """
    aligned = np.asarray(aligned, np.float32)
    flat = aligned.reshape(-1, aligned.shape[-1])
    order = np.argsort(-flat.var(axis=0))
    picks = list(order[:3]) + [order[0]] * max(0, 3 - len(order))
    rgb = np.stack([aligned[..., c] for c in picks], axis=-1)
    lo = np.percentile(rgb, 1, axis=(0, 1))
    hi = np.percentile(rgb, 99, axis=(0, 1))
    return np.clip((rgb - lo) / np.maximum(hi - lo, 1e-6), 0, 1)


def skeleton_summary(skeleton: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Part maps summed (occluded joints count negative) and the summed limb-field magnitude.

    Args:
      skeleton: (A, A, 55): 17 part maps then 19 limbs x (u_x, u_y).

    Returns:
      ((A, A) part sum, (A, A) limb magnitude sum).
    """
    skeleton = np.asarray(skeleton, np.float32)
    parts = skeleton[..., :NUM_KEYPOINTS].sum(axis=-1)
    limbs = skeleton[..., NUM_KEYPOINTS:].reshape(*skeleton.shape[:2], -1, 2)
    return parts, np.sqrt((limbs**2).sum(axis=-1)).sum(axis=-1)


def _draw_pose(ax, points: np.ndarray, colour, *, label: str | None = None, marker="o") -> None:
    """Limbs and joints of one (17, 3) pose (joints with v <= 0 skipped)."""
    for a, b in LIMBS:
        if points[a, 2] > 0 and points[b, 2] > 0:
            ax.plot(points[[a, b], 0], points[[a, b], 1], "-", color=colour, lw=1.5)
    vis = points[:, 2] > 0
    ax.plot(points[vis, 0], points[vis, 1], marker, color=colour, ms=3, ls="none", label=label)


def alignment_figure(
    image: np.ndarray,
    keypoints: np.ndarray,
    details: dict[str, np.ndarray],
    person: int,
    templates: np.ndarray,
    *,
    title: str | None = None,
) -> np.ndarray:
    """The six-panel alignment figure of one person, rendered to an RGB array.

    Args:
      image: (H, W, 3) uint8 RGB.
      keypoints: (n, 17, 3) in image pixels.
      details: ``Predictor.explain(image, keypoints)``.
      person: which person, 0 <= person < n.
      templates: (T, 17, 3) templates in unit coordinates (the predictor's).
      title: figure title (default: the person's index and template).

    Returns:
      (h, w, 3) uint8 RGB picture.
    """
    # A bare Figure on an Agg canvas: no pyplot state, so a notebook's backend is left alone.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    templates = np.asarray(templates, np.float32)
    size = details["probs"].shape[-1]
    index = int(details["template_index"][person])
    k = len(templates) // 2
    if index >= 0:
        kind = f"template {index % k}" + (" (mirrored)" if index >= k else "")
    else:
        kind = "no fit: whole-image default"
    fig = Figure(figsize=(9, 6.8))
    canvas = FigureCanvasAgg(fig)
    axes = fig.subplots(2, 3)
    extent = (-0.5, size - 0.5, size - 0.5, -0.5)

    ax = axes[0, 0]
    ax.set_facecolor("0.95")
    if index >= 0:
        template = templates[index].copy()
        template[:, :2] *= size
        _draw_pose(ax, template, "C0", label="template")
    _draw_pose(ax, details["keypoints_align"][person], "C3", label="person", marker="x")
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.set_aspect("equal")
    ax.legend(loc="lower right", fontsize=7)
    ax.set_title(kind, fontsize=9)

    axes[0, 1].imshow(feature_rgb(details["aligned"][person]), extent=extent)
    axes[0, 1].set_title("aligned features (top-3 channels)", fontsize=9)

    if "skeleton" in details:
        parts, limbs = skeleton_summary(details["skeleton"][person])
        bound = max(1e-6, float(np.abs(parts).max()))
        axes[0, 2].imshow(parts, cmap="RdBu_r", vmin=-bound, vmax=bound, extent=extent)
        axes[0, 2].set_title("part maps (occluded < 0)", fontsize=9)
        axes[1, 0].imshow(limbs, cmap="magma", extent=extent)
        axes[1, 0].set_title("limb fields |u| summed", fontsize=9)
    else:
        for ax in (axes[0, 2], axes[1, 0]):
            ax.text(0.5, 0.5, "model without\nskeleton features", ha="center", va="center")

    probs = details["probs"][person]
    axes[1, 1].imshow(probs, cmap="gray", vmin=0, vmax=1, extent=extent)
    if probs.min() < 0.5 < probs.max():
        axes[1, 1].contour(probs, levels=[0.5], colors="C1", linewidths=1)
    axes[1, 1].set_title(f"mask in align frame ({size}x{size})", fontsize=9)

    picture = visualization.overlay(
        image, details["masks"][person : person + 1], np.asarray(keypoints)[person : person + 1]
    )
    axes[1, 2].imshow(picture)
    axes[1, 2].set_title(f"image, mask {details['masks'][person].mean():.1%}", fontsize=9)

    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title or f"person {person}: {kind}", fontsize=11)
    fig.tight_layout()
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def write_alignment_figures(
    predictor,
    image: np.ndarray,
    keypoints: np.ndarray,
    out_dir: str | os.PathLike,
    stem: str,
    *,
    people: Sequence[int] | None = None,
) -> list[str]:
    """Writes ``out_dir/<stem>_person<i>.png`` for each person of one image.

    Args:
      predictor: a ``Predictor``.
      image: (H, W, 3) uint8 RGB.
      keypoints: (n, 17, 3) in image pixels.
      out_dir: output folder (created).
      stem: file-name prefix (e.g. the image's stem).
      people: which people (default: all).

    Returns:
      The written paths.
    """
    keypoints = np.asarray(keypoints, np.float32).reshape(-1, NUM_KEYPOINTS, 3)
    if not len(keypoints):
        return []
    details = predictor.explain(image, keypoints)
    templates = np.asarray(predictor.templates)
    paths = []
    for i in range(len(keypoints)) if people is None else people:
        picture = alignment_figure(image, keypoints, details, i, templates)
        paths.append(
            visualization.save_png(picture, os.path.join(out_dir, f"{stem}_person{i}.png"))
        )
    return paths
