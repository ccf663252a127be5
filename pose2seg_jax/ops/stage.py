"""The whole align stage of Pose2Seg: fit, augment, sample, draw skeletons.

This is what the model runs between the FPN and the SegModule, for a padded batch of people:

    keypoints (input coords) --m2--> feature coords --fit--> m3 --(augmentation)--> m3'
    features (B, F, F, C) --Affine-Align through m3'--> (B, P, A, A, C)
    keypoints --m3'--> align coords --skeleton--> (B, P, A, A, 55)

The SegModule's input is the channel concatenation of the two; they are returned apart so that
its first convolution can read them without materialising the concatenation (measured: writing
the concatenated array cost more than sampling and drawing together on CPU).

Padded people (``valid == False``) get the default matrix so that every value stays finite.
"""

from typing import Literal

import jax
import jax.numpy as jnp

from pose2seg_jax.ops import align, fit, skeleton, warps

Alignment = Literal["affine", "box"]


def box_matrix(points: jax.Array, *, feature_size: int, align_size: int, margin: float = 0.1):
    """Aspect-keeping letterbox of a person's keypoint box into the align frame.

    The 'box' ablation of the paper (RoI-Align instead of Affine-Align): the box is the extent of
    the visible keypoints, grown by ``margin`` of its longer side on each side, and scaled to fit
    the align frame, centred, without rotation. People with fewer than two visible joints or a
    zero-size box get the default matrix.

    Args:
      points: (17, 3) keypoints in feature coordinates.
      feature_size: side of the feature map.
      align_size: side of the align frame.
      margin: fraction of the box's longer side added on each side.

    Returns:
      (3, 3) feature-to-align matrix.
    """
    visible = points[:, 2] > 0
    big = jnp.float32(1e9)
    x, y = points[:, 0], points[:, 1]
    x0 = jnp.min(jnp.where(visible, x, big))
    y0 = jnp.min(jnp.where(visible, y, big))
    x1 = jnp.max(jnp.where(visible, x, -big))
    y1 = jnp.max(jnp.where(visible, y, -big))
    side = jnp.maximum(x1 - x0, y1 - y0) * (1.0 + 2.0 * margin)
    ok = (jnp.sum(visible) >= 2) & (side > 1e-3)
    scale = align_size / jnp.where(ok, side, 1.0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    half = align_size / 2
    matrix = jnp.array(
        [[scale, 0.0, half - scale * cx], [0.0, scale, half - scale * cy], [0.0, 0.0, 1.0]],
        dtype=jnp.float32,
    )
    return jnp.where(ok, matrix, fit.default_matrix(feature_size, align_size))


def align_stage(
    features: jax.Array,
    keypoints: jax.Array,
    valid: jax.Array,
    templates: jax.Array,
    *,
    rng: jax.Array | None = None,
    align_size: int = 64,
    feature_stride: int = 4,
    alignment: Alignment = "affine",
    use_skeleton: bool = True,
    mapping: Literal["reference", "clean"] = "reference",
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Aligns every person of a padded batch and appends the skeleton features.

    Args:
      features: (B, F, F, C) feature map (FPN P2, stride ``feature_stride``).
      keypoints: (B, P, 17, 3) keypoints in input-image coordinates.
      valid: (B, P) bool, False for padding.
      templates: (T, 17, 3) pose templates in unit coordinates (``templates.load_templates``).
      rng: a PRNG key for the training augmentation (REFERENCE.md section 6); None: no
        augmentation.
      align_size: side A of the align frame.
      feature_stride: input pixels per feature pixel.
      alignment: 'affine' (template fitting, the paper's method) or 'box' (keypoint box).
      use_skeleton: append the 55 skeleton channels.
      mapping: sampling convention of ``align.affine_align``.

    Returns:
      aligned: (B, P, A, A, C) sampled features, in ``features.dtype``.
      aux: dict with 'feature_to_align' and 'input_to_align' (B, P, 3, 3), 'template_index'
        (B, P) int32 (-1: default matrix or box), and 'skeleton' (B, P, A, A, 55) in
        ``features.dtype`` when ``use_skeleton``.
    """
    batch, num_people = valid.shape
    feature_size = features.shape[1]
    input_to_feature = warps.scale_matrix(1.0 / feature_stride)
    points = warps.transform_keypoints(keypoints, input_to_feature)

    if alignment == "affine":
        fitted = fit.fit_people(points, templates, feature_size=feature_size, align_size=align_size)
        matrices, template_index = fitted.matrices, fitted.template_index
    elif alignment == "box":
        per_person = lambda p: box_matrix(p, feature_size=feature_size, align_size=align_size)
        matrices = jax.vmap(jax.vmap(per_person))(points)
        template_index = jnp.full((batch, num_people), -1, jnp.int32)
    else:
        raise ValueError(f"alignment must be 'affine' or 'box', got {alignment!r}")

    if rng is not None:
        keys = jax.random.split(rng, batch * num_people)
        augment = jax.vmap(lambda k: warps.random_augmentation(k, size=align_size))(keys)
        matrices = augment.reshape(batch, num_people, 3, 3) @ matrices

    default = fit.default_matrix(feature_size, align_size)
    matrices = jnp.where(valid[:, :, None, None], matrices, default)

    aligned = align.align_people(features, matrices, align_size=align_size, mapping=mapping)
    aux = {
        "feature_to_align": matrices,
        "input_to_align": matrices @ input_to_feature,
        "template_index": template_index,
    }
    if use_skeleton:
        points_align = warps.transform_keypoints(points, matrices)
        skeleton_maps = skeleton.skeleton_people(points_align, size=align_size)
        aux["skeleton"] = skeleton_maps.astype(aligned.dtype)
    return aligned, aux
