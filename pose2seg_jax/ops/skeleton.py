"""Skeleton features: 17 part maps and 19 limb direction fields in the align frame.

REFERENCE.md section 5. Pixel (i, j) is row i (y) and column j (x), pixel centres at integer
coordinates. Channels 0..16 are the part maps of the COCO joints; channel ``17 + 2 l`` is u_x
and ``18 + 2 l`` is u_y of limb ``l`` of ``keypoints.LIMBS``.
"""

import jax
import jax.numpy as jnp

from pose2seg_jax.ops.keypoints import LIMBS, NUM_KEYPOINTS, NUM_LIMBS

NUM_SKELETON_CHANNELS = NUM_KEYPOINTS + 2 * NUM_LIMBS
# Part maps are cut where exp(-d) drops to about 0.01.
PART_CUTOFF = 4.6025


def _round_shifted(value: jax.Array, shift: float) -> jax.Array:
    """round_half_even(value + shift) for an integer shift, exact for every float32 value.

    ``value + 1`` in float32 can round onto a .5 tie (or off one) that the exact sum does not
    sit on, flipping a box edge. Split value = round(value) + frac (both exact): the exact
    sum is (round(value) + shift) + frac, whose rounding only differs from
    round(value) + shift when frac is exactly +-0.5, and then value + shift is exact.
    """
    rounded = jnp.round(value)
    tie = jnp.abs(value - rounded) == 0.5
    return jnp.where(tie, jnp.round(value + shift), rounded + shift)


def skeleton_features(keypoints: jax.Array, *, size: int = 64, sigma: float = 3.0) -> jax.Array:
    """Part maps and limb fields of one person.

    Args:
      keypoints: (17, 3) of (x, y, v) in align pixel coordinates; v 0 missing, 1 occluded,
        2 visible.
      size: side of the square map.
      sigma: Gaussian width of the part maps, in pixels.

    Returns:
      (size, size, 55) float32: 17 part maps (exp(-d) where d < 4.6025, negated for v == 1,
      zero for v == 0), then (u_x, u_y) for each of the 19 limbs.
    """
    keypoints = jnp.asarray(keypoints, jnp.float32)
    x, y, v = keypoints[:, 0], keypoints[:, 1], keypoints[:, 2]
    grid = jnp.arange(size, dtype=jnp.float32)
    cols = grid[None, :, None]
    rows = grid[:, None, None]

    d = ((cols - x) ** 2 + (rows - y) ** 2) / (2.0 * sigma**2)
    sign = jnp.where(v == 1, -1.0, jnp.where(v > 0, 1.0, 0.0))
    parts = jnp.where(d < PART_CUTOFF, jnp.exp(-d), 0.0) * sign

    a = jnp.array([limb[0] for limb in LIMBS])
    b = jnp.array([limb[1] for limb in LIMBS])
    xa, ya, xb, yb = x[a], y[a], x[b], y[b]
    dx = xb - xa
    dy = yb - ya
    length = jnp.sqrt(dx**2 + dy**2)
    drawn = (v[a] > 0) & (v[b] > 0) & ((dx != 0) | (dy != 0))
    safe_length = jnp.where(drawn, length, 1.0)
    ux = jnp.where(drawn, dx / safe_length, 0.0)
    uy = jnp.where(drawn, dy / safe_length, 0.0)

    x0 = jnp.maximum(_round_shifted(jnp.minimum(xa, xb), -1.0), 0.0)
    x1 = jnp.minimum(_round_shifted(jnp.maximum(xa, xb), 1.0), float(size))
    y0 = jnp.maximum(_round_shifted(jnp.minimum(ya, yb), -1.0), 0.0)
    y1 = jnp.minimum(_round_shifted(jnp.maximum(ya, yb), 1.0), float(size))
    in_box = (cols >= x0) & (cols < x1) & (rows >= y0) & (rows < y1)
    near_line = jnp.abs((cols - xa) * uy - (rows - ya) * ux) < 1.0
    on_limb = (in_box & near_line & drawn).astype(jnp.float32)
    # Spread the (size, size, 19) masks to the interleaved (u_x, u_y) channels with a matmul
    # (row l of `spread` holds u_x at 2l and u_y at 2l + 1; exact, one non-zero term per sum):
    # an elementwise interleave along the minor axis ran 3x slower on CPU. HIGHEST keeps the
    # directions float32 where the default would use TF32/bf16 passes on accelerators.
    spread = (jnp.eye(NUM_LIMBS)[:, :, None] * jnp.stack([ux, uy], axis=-1)[:, None, :]).reshape(
        NUM_LIMBS, 2 * NUM_LIMBS
    )
    limbs = jnp.dot(on_limb, spread, precision=jax.lax.Precision.HIGHEST)
    return jnp.concatenate([parts, limbs], axis=-1)


def skeleton_people(keypoints: jax.Array, *, size: int = 64, sigma: float = 3.0) -> jax.Array:
    """Skeleton features for every person of a padded batch.

    Args:
      keypoints: (B, P, 17, 3) in align coordinates.
      size: side of the square map.
      sigma: Gaussian width of the part maps.

    Returns:
      (B, P, size, size, 55) float32.
    """
    one = lambda k: skeleton_features(k, size=size, sigma=sigma)
    return jax.vmap(jax.vmap(one))(keypoints)
