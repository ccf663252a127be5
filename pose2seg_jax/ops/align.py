"""Affine-Align: bilinear sampling of a person's feature window into the align frame.

REFERENCE.md section 4. For an align pixel ``j = (j_x, j_y)`` the reference samples the feature
map at

    q = (W / (W - 1)) * j,   f = m3^-1 q,   src = ((W - 1) / W) * f      (per axis: W for x, H for y)

with bilinear interpolation and zeros outside. For the reference's 128x128 feature map this is
exactly ``128/127`` and ``127/128``.

Where the factors come from (a derivation consistent with the reference's numbers, which is how
they generalise here): the reference turns the pixel matrix ``m3`` into PyTorch's normalised
``theta`` with the half-pixel normalisation of the feature map on both sides, ``x_n = 2 x / W - 1``
(inverse ``x = (x_n + 1) W / 2``), while ``affine_grid`` and ``grid_sample`` use corner-aligned
coordinates (``align_corners=True``: ``x_n = 2 x / (N - 1) - 1``). The grid point of align pixel
``j`` is ``2 j / (N - 1) - 1``; un-normalising gives ``q = j W / (N - 1)``; ``theta`` applies
``m3^-1``; normalising and sampling corner-aligned on the ``W`` map gives
``src = f (W - 1) / W``. The reference's ``128/127`` says ``N - 1 = 127``, i.e. its grid lattice
has the feature map's spacing (``N = W``), so both factors depend on the feature map's size only,
not on the align size. With a square map they cancel on the linear part of ``m3^-1`` and only its
translation shrinks by ``(W - 1) / W``. ``mapping="clean"`` drops both: ``src = m3^-1 j``.

Sampling is ``jax.scipy.ndimage.map_coordinates`` per channel (order 1, constant 0, which blends
samples that are partly outside with 0, like ``grid_sample``'s zero padding). Under ``jit`` XLA
turns the vmapped per-channel calls into one fused four-corner gather over the NHWC map; a
hand-written NHWC gather compiles to the same fusion and measured the same, so there is one
implementation. On CPU, large outputs are slowed mostly by page faults on the freshly allocated
(B, P, A, A, C) buffer rather than by the gather: transparent huge pages
(``GLIBC_TUNABLES=glibc.malloc.hugetlb=1`` in the environment) made it about twice as fast.
"""

from typing import Literal

import jax
import jax.numpy as jnp
from jax.scipy import ndimage

Mapping = Literal["reference", "clean"]


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


def _sample(features: jax.Array, src_x: jax.Array, src_y: jax.Array) -> jax.Array:
    sample = lambda channel: ndimage.map_coordinates(
        channel, [src_y, src_x], order=1, mode="constant", cval=0.0
    )
    return jax.vmap(sample, in_axes=2, out_axes=2)(features)


def affine_align(
    features: jax.Array,
    feature_to_align: jax.Array,
    *,
    align_size: int = 64,
    mapping: Mapping = "reference",
) -> jax.Array:
    """Samples one person's align window from a feature map (bilinear, zero outside).

    Args:
      features: (H, W, C) feature map.
      feature_to_align: (3, 3) affine map from feature pixels to align pixels (m3).
      align_size: side A of the square align frame.
      mapping: "reference" (default, matches the released weights) or "clean".

    Returns:
      (A, A, C) aligned features in ``features.dtype``; pixel [j_y, j_x].
    """
    height, width, _ = features.shape
    src_x, src_y = sample_coordinates(
        feature_to_align, feature_shape=(height, width), align_size=align_size, mapping=mapping
    )
    return _sample(features, src_x, src_y)


def align_people(
    features: jax.Array,
    matrices: jax.Array,
    *,
    align_size: int = 64,
    mapping: Mapping = "reference",
) -> jax.Array:
    """Affine-Align for every person of a padded batch.

    Args:
      features: (B, H, W, C) feature maps.
      matrices: (B, P, 3, 3) feature-to-align maps, one per (padded) person.
      align_size: side A of the align frame.
      mapping: "reference" or "clean", as in ``affine_align``.

    Returns:
      (B, P, A, A, C) aligned features.
    """
    one = lambda f, m: affine_align(f, m, align_size=align_size, mapping=mapping)
    per_image = jax.vmap(one, in_axes=(None, 0))
    return jax.vmap(per_image, in_axes=(0, 0))(features, matrices)
