"""Affine-Align: bilinear sampling of a person's feature window into the align frame.

REFERENCE.md section 4. For an align pixel ``j = (j_x, j_y)`` the reference samples the feature
map at

    q = (W / (W - 1)) * j,   f = m3^-1 q,   src = ((W - 1) / W) * f      (per axis: W for x, H for y)

with bilinear interpolation and zeros outside. For the reference's 128x128 feature map this is
exactly ``128/127`` and ``127/128``.

Where the factors come from: the reference turns the pixel matrix ``m3`` into PyTorch's
normalised ``theta`` with the half-pixel normalisation of the feature map on both sides,
``x_n = 2 x / W - 1`` (and its inverse ``x = (x_n + 1) W / 2``), while ``affine_grid`` and
``grid_sample`` use corner-aligned coordinates (``align_corners=True``: ``x_n = 2 x / (N - 1) - 1``)
on a lattice with the feature map's spacing ``N = W``. Writing it out, the grid point of pixel
``j`` is ``2 j / (W - 1) - 1``; un-normalising gives ``q = j W / (W - 1)``; ``theta`` applies
``m3^-1``; normalising and sampling corner-aligned gives ``src = f (W - 1) / W``. Both factors
therefore depend on the feature map's size only, not on the align size; with a square map they
cancel on the linear part of ``m3^-1`` and only its translation shrinks by ``(W - 1) / W``.
``mapping="clean"`` drops both factors: ``src = m3^-1 j``.

Two sampling implementations give the same numbers (tests check 1e-6):
``"map_coordinates"`` (``jax.scipy.ndimage.map_coordinates`` per channel, order 1, constant 0,
which blends samples that are partly outside with 0, like ``grid_sample``'s zero padding) and
``"gather"`` (a hand-written four-corner gather of whole channel vectors from the NHWC map).
"""

from typing import Literal

import jax
import jax.numpy as jnp
from jax.scipy import ndimage

Mapping = Literal["reference", "clean"]
Impl = Literal["map_coordinates", "gather"]


def sample_coordinates(
    feature_to_align: jax.Array,
    *,
    feature_shape: tuple[int, int],
    align_size: int = 64,
    mapping: Mapping = "reference",
) -> tuple[jax.Array, jax.Array]:
    """Feature-map coordinates sampled for every align pixel.

    Args:
      feature_to_align: (3, 3) affine map from feature pixels to align pixels (m3).
      feature_shape: (H, W) of the feature map.
      align_size: side A of the square align frame.
      mapping: "reference" (the reference's stretch factors) or "clean" (``src = m3^-1 j``).

    Returns:
      (src_x, src_y), each (A, A) float32, indexed [row j_y, column j_x].
    """
    height, width = feature_shape
    matrix = jnp.asarray(feature_to_align, jnp.float32)
    if mapping == "reference":
        stretch_x, stretch_y = width / (width - 1), height / (height - 1)
        shrink_x, shrink_y = (width - 1) / width, (height - 1) / height
    elif mapping == "clean":
        stretch_x = stretch_y = shrink_x = shrink_y = 1.0
    else:
        raise ValueError(
            f"align.sample_coordinates: mapping must be 'reference' or 'clean', got {mapping!r}"
        )
    a, b, tx = matrix[0, 0], matrix[0, 1], matrix[0, 2]
    c, d, ty = matrix[1, 0], matrix[1, 1], matrix[1, 2]
    det = a * d - b * c
    grid = jnp.arange(align_size, dtype=jnp.float32)
    # m3^-1 q = L^-1 (q - t), with q - t = (j - t) + (stretch - 1) j: every rounding is then
    # relative to q - t itself, not to the (possibly large, cancelling) j and t, whose errors
    # L^-1 would magnify by 1 / scale.
    dx = (grid[None, :] - tx) + (stretch_x - 1.0) * grid[None, :]
    dy = (grid[:, None] - ty) + (stretch_y - 1.0) * grid[:, None]
    src_x = shrink_x * ((d / det) * dx - (b / det) * dy)
    src_y = shrink_y * ((a / det) * dy - (c / det) * dx)
    return src_x, src_y


def _sample_map_coordinates(features: jax.Array, src_x: jax.Array, src_y: jax.Array) -> jax.Array:
    sample = lambda channel: ndimage.map_coordinates(
        channel, [src_y, src_x], order=1, mode="constant", cval=0.0
    )
    return jax.vmap(sample, in_axes=2, out_axes=2)(features)


def _sample_gather(features: jax.Array, src_x: jax.Array, src_y: jax.Array) -> jax.Array:
    height, width, _ = features.shape
    x0 = jnp.floor(src_x)
    y0 = jnp.floor(src_y)
    fx = src_x - x0
    fy = src_y - y0
    x0 = x0.astype(jnp.int32)
    y0 = y0.astype(jnp.int32)
    out = jnp.zeros((*src_x.shape, features.shape[2]), features.dtype)
    for dy, wy in ((0, 1.0 - fy), (1, fy)):
        for dx, wx in ((0, 1.0 - fx), (1, fx)):
            xi = x0 + dx
            yi = y0 + dy
            inside = (xi >= 0) & (xi < width) & (yi >= 0) & (yi < height)
            weight = jnp.where(inside, wx * wy, 0.0).astype(features.dtype)
            corner = features[jnp.clip(yi, 0, height - 1), jnp.clip(xi, 0, width - 1)]
            out = out + weight[..., None] * corner
    return out


def affine_align(
    features: jax.Array,
    feature_to_align: jax.Array,
    *,
    align_size: int = 64,
    mapping: Mapping = "reference",
    impl: Impl = "map_coordinates",
) -> jax.Array:
    """Samples one person's align window from a feature map (bilinear, zero outside).

    Args:
      features: (H, W, C) feature map.
      feature_to_align: (3, 3) affine map from feature pixels to align pixels (m3).
      align_size: side A of the square align frame.
      mapping: "reference" (default, matches the released weights) or "clean".
      impl: "map_coordinates" or "gather" (same numbers; see the module docstring).

    Returns:
      (A, A, C) aligned features in ``features.dtype``; pixel [j_y, j_x].
    """
    height, width, _ = features.shape
    src_x, src_y = sample_coordinates(
        feature_to_align, feature_shape=(height, width), align_size=align_size, mapping=mapping
    )
    if impl == "map_coordinates":
        return _sample_map_coordinates(features, src_x, src_y)
    if impl == "gather":
        return _sample_gather(features, src_x, src_y)
    raise ValueError(
        f"align.affine_align: impl must be 'map_coordinates' or 'gather', got {impl!r}"
    )


def align_people(
    features: jax.Array,
    matrices: jax.Array,
    *,
    align_size: int = 64,
    mapping: Mapping = "reference",
    impl: Impl = "map_coordinates",
) -> jax.Array:
    """Affine-Align for every person of a padded batch.

    Args:
      features: (B, H, W, C) feature maps.
      matrices: (B, P, 3, 3) feature-to-align maps, one per (padded) person.
      align_size: side A of the align frame.
      mapping: "reference" or "clean", as in ``affine_align``.
      impl: "map_coordinates" or "gather", as in ``affine_align``.

    Returns:
      (B, P, A, A, C) aligned features.
    """
    one = lambda f, m: affine_align(f, m, align_size=align_size, mapping=mapping, impl=impl)
    per_image = jax.vmap(one, in_axes=(None, 0))
    return jax.vmap(per_image, in_axes=(0, 0))(features, matrices)
