"""Affine warps between the frames of the model, align-space augmentation, keypoint checks.

Frames (REFERENCE.md section 1): original image --m1--> input 512 --m2--> feature 128 --m3--> align 64.
Matrices are 3x3 homogeneous affine maps acting on column vectors ``[x, y, 1]`` and are named by
what they map (``input_to_align`` maps input pixels to align pixels). Pixel centres sit at integer
coordinates, as in OpenCV's ``warpAffine``: a warp by ``src_to_dst`` gives
``dst(x, y) = src(inverse(src_to_dst) @ (x, y))``, sampled bilinearly, with zero outside the
source; a sample partly outside blends with zero.

``letterbox_matrix``, ``scale_matrix``, ``bucket_shape`` and ``check_keypoints`` are NumPy only,
so data-loading workers can use them without jax. The warps are jitted with their output shapes
static; they also run inside a caller's jit.
"""

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from pose2seg_jax.ops.keypoints import KEYPOINT_NAMES, NUM_KEYPOINTS


def letterbox_matrix(height: int, width: int, size: int = 512) -> np.ndarray:
    """The letterbox map m1 of an image into a square input frame (REFERENCE.md section 1).

    ``s = min(size / width, size / height)``; ``x' = s (x - width / 2) + size / 2``, likewise y.

    Args:
        height: image height H in pixels.
        width: image width W in pixels.
        size: side of the square input frame.

    Returns:
        (3, 3) float64 matrix, original pixels -> input pixels.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"letterbox_matrix: image size must be positive, got {height}x{width}")
    s = min(size / width, size / height)
    return np.array(
        [
            [s, 0.0, size / 2 - s * width / 2],
            [0.0, s, size / 2 - s * height / 2],
            [0.0, 0.0, 1.0],
        ],
        dtype=np.float64,
    )


def scale_matrix(s: float) -> np.ndarray:
    """A uniform scaling about the origin, ``diag(s, s, 1)``; m2 is ``scale_matrix(1 / 4)``.

    Args:
        s: scale factor.

    Returns:
        (3, 3) float64 matrix.
    """
    return np.diag([s, s, 1.0]).astype(np.float64)


def transform_keypoints(keypoints: jax.Array, matrix: jax.Array) -> jax.Array:
    """Maps keypoints through an affine matrix; joints with ``v == 0`` become ``(0, 0, 0)``.

    Args:
        keypoints: (..., 17, 3) of (x, y, v); NumPy or jax.
        matrix: (3, 3), or (..., 3, 3) broadcasting against the keypoints' leading dimensions.

    Returns:
        (..., 17, 3) of (x', y', v), v unchanged for visible joints.
    """
    keypoints = jnp.asarray(keypoints)
    matrix = jnp.asarray(matrix, dtype=jnp.result_type(keypoints.dtype, jnp.float32))
    xy = keypoints[..., :2].astype(matrix.dtype)
    v = keypoints[..., 2:3]
    moved = xy @ jnp.swapaxes(matrix[..., :2, :2], -1, -2) + matrix[..., None, :2, 2]
    out = jnp.concatenate([moved, v.astype(moved.dtype)], axis=-1)
    return jnp.where(v > 0, out, jnp.zeros_like(out))


def _invert_affine(matrix: jax.Array) -> jax.Array:
    """Closed-form inverse of a (3, 3) affine matrix whose last row is [0, 0, 1]."""
    a, b, tx = matrix[0, 0], matrix[0, 1], matrix[0, 2]
    c, d, ty = matrix[1, 0], matrix[1, 1], matrix[1, 2]
    det = a * d - b * c
    inv_a, inv_b, inv_c, inv_d = d / det, -b / det, -c / det, a / det
    return jnp.array(
        [
            [inv_a, inv_b, -(inv_a * tx + inv_b * ty)],
            [inv_c, inv_d, -(inv_c * tx + inv_d * ty)],
            [0.0, 0.0, 1.0],
        ],
        dtype=matrix.dtype,
    )


def _sample_grid(image: jax.Array, dst_to_src: jax.Array, out_shape: tuple[int, int]) -> jax.Array:
    """Bilinear samples of a 2-D image at ``dst_to_src @ (x, y)`` for every pixel of out_shape.

    Args:
        image: (H, W) float.
        dst_to_src: (3, 3) destination pixels -> source pixels.
        out_shape: (h, w) of the destination.

    Returns:
        (h, w) float; zero outside the source, partial blends at its edge.
    """
    h, w = out_shape
    ys, xs = jnp.meshgrid(
        jnp.arange(h, dtype=dst_to_src.dtype), jnp.arange(w, dtype=dst_to_src.dtype), indexing="ij"
    )
    src_x = dst_to_src[0, 0] * xs + dst_to_src[0, 1] * ys + dst_to_src[0, 2]
    src_y = dst_to_src[1, 0] * xs + dst_to_src[1, 1] * ys + dst_to_src[1, 2]
    # jax's mode="constant" blends partly-outside samples with cval (scipy's "grid-constant"),
    # which is what warpAffine with a zero constant border does.
    return jax.scipy.ndimage.map_coordinates(image, [src_y, src_x], order=1, mode="constant")


def _static_shape(out_shape: Sequence[int], name: str) -> tuple[int, int]:
    shape = tuple(int(n) for n in out_shape)
    if len(shape) != 2 or min(shape) <= 0:
        raise ValueError(f"{name}: out_shape must be (height, width) > 0, got {out_shape!r}")
    return shape


@functools.partial(jax.jit, static_argnames=("out_shape",))
def _warp_image(image: jax.Array, src_to_dst: jax.Array, out_shape: tuple[int, int]) -> jax.Array:
    dst_to_src = _invert_affine(src_to_dst)
    per_channel = jax.vmap(lambda chan: _sample_grid(chan, dst_to_src, out_shape), 2, 2)
    return per_channel(image)


def warp_image(image: jax.Array, src_to_dst: jax.Array, out_shape: Sequence[int]) -> jax.Array:
    """Warps an image like OpenCV's ``warpAffine`` (bilinear, zero border).

    Args:
        image: (H, W, C) numeric; integer images are warped as float32.
        src_to_dst: (3, 3) source pixels -> destination pixels (e.g. m1 for the letterbox).
        out_shape: (h, w) of the result; static (one compilation per shape).

    Returns:
        (h, w, C) float32 (float64 under x64 for float64 input).
    """
    image = jnp.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"warp_image: image must be (H, W, C), got shape {image.shape}")
    dtype = image.dtype if jnp.issubdtype(image.dtype, jnp.floating) else jnp.float32
    return _warp_image(
        image.astype(dtype),
        jnp.asarray(src_to_dst, dtype=dtype),
        _static_shape(out_shape, "warp_image"),
    )


@functools.partial(jax.jit, static_argnames=("size",))
def _mask_targets(masks: jax.Array, input_to_align: jax.Array, size: int) -> jax.Array:
    def one(mask: jax.Array, matrix: jax.Array) -> jax.Array:
        return _sample_grid(mask, _invert_affine(matrix), (size, size))

    warped = jax.vmap(one)(masks, input_to_align)
    return (warped >= 0.5).astype(jnp.int32)


def mask_targets(masks: jax.Array, input_to_align: jax.Array, size: int = 64) -> jax.Array:
    """The 0/1 training targets in the align frame (REFERENCE.md section 8).

    Each mask is warped bilinearly into the ``size x size`` frame and rounded, with halves
    rounding up (``>= 0.5``), as OpenCV's saturating cast of a uint8 warp does. The source
    frame is whatever the matrix starts from: the reference warps the ORIGINAL mask by
    ``m3 @ m2 @ m1`` directly, which avoids a second resampling at the letterbox. The mask
    shape is static (one compilation per shape): pad original-size masks with zeros to
    ``bucket_shape`` first, which leaves the targets unchanged (the zero border is what the warp
    sees outside the mask anyway).

    Args:
        masks: (P, H, W) in the source frame: bool or integer (nonzero = person, so 0/255
            works), or float in [0, 1] taken as is (e.g. a soft letterboxed mask).
        input_to_align: (P, 3, 3) source pixels -> align pixels, e.g. ``m3 @ m2`` for masks
            already at input size, or ``m3 @ m2 @ m1`` for masks at original size.
        size: side of the align frame; static.

    Returns:
        (P, size, size) int32 in {0, 1}.
    """
    masks = jnp.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(f"mask_targets: masks must be (P, H, W), got shape {masks.shape}")
    if not jnp.issubdtype(masks.dtype, jnp.floating):
        masks = masks > 0
    return _mask_targets(
        masks.astype(jnp.float32),
        jnp.asarray(input_to_align, dtype=jnp.float32),
        int(size),
    )


@functools.partial(jax.jit, static_argnames=("out_shape",))
def _paste_masks(
    probs: jax.Array, image_to_align: jax.Array, out_shape: tuple[int, int]
) -> jax.Array:
    pasted = jax.vmap(lambda p, m: _sample_grid(p, m, out_shape))(probs, image_to_align)
    return pasted > 0.5


def paste_masks(probs: jax.Array, image_to_align: jax.Array, out_shape: Sequence[int]) -> jax.Array:
    """Warps each person's align-frame probability map back onto the image (section 8).

    Image pixel ``x`` takes the bilinear sample of the map at ``image_to_align @ x`` (zero
    outside the map), thresholded at > 0.5.

    ``out_shape`` is static: every new image size compiles again. Callers that paste onto many
    image sizes should paste onto a canvas from ``bucket_shape`` and crop (``paste_masks_image``
    does this); the pixels of the image are unchanged by the padding.

    Args:
        probs: (P, s, s) person probabilities in the align frame.
        image_to_align: (P, 3, 3) image pixels -> align pixels (``m3 @ m2 @ m1``).
        out_shape: (H, W) of the image.

    Returns:
        (P, H, W) bool masks.
    """
    probs = jnp.asarray(probs)
    if probs.ndim != 3:
        raise ValueError(f"paste_masks: probs must be (P, s, s), got shape {probs.shape}")
    return _paste_masks(
        probs.astype(jnp.float32),
        jnp.asarray(image_to_align, dtype=jnp.float32),
        _static_shape(out_shape, "paste_masks"),
    )


def bucket_shape(height: int, width: int, multiple: int = 128) -> tuple[int, int]:
    """Rounds an image size up to a multiple, to bound the compilations of ``paste_masks``.

    Args:
        height: image height.
        width: image width.
        multiple: bucket step; 128 gives 25 buckets for COCO's images (sides <= 640).

    Returns:
        (height', width') with each side the next multiple of ``multiple``.
    """
    return (
        multiple * max(1, math.ceil(height / multiple)),
        multiple * max(1, math.ceil(width / multiple)),
    )


def paste_masks_image(
    probs: jax.Array, image_to_align: jax.Array, height: int, width: int, multiple: int = 128
) -> np.ndarray:
    """``paste_masks`` onto a bucketed canvas, cropped to the image, as NumPy (host side).

    Args:
        probs: (P, s, s) person probabilities in the align frame.
        image_to_align: (P, 3, 3) image pixels -> align pixels.
        height: image height H.
        width: image width W.
        multiple: bucket step of ``bucket_shape``.

    Returns:
        (P, H, W) bool NumPy masks.
    """
    canvas = paste_masks(probs, image_to_align, bucket_shape(height, width, multiple))
    return np.asarray(canvas)[:, :height, :width]


def random_augmentation(
    key: jax.Array,
    *,
    size: int = 64,
    max_rotation_deg: float = 30.0,
    scale_range: tuple[float, float] = (0.8, 1.2),
    max_translation: float = 0.1,
) -> jax.Array:
    """A random similarity about the centre of the align frame (REFERENCE.md section 6).

    Rotation uniform in [-max_rotation_deg, max_rotation_deg], scale uniform in scale_range,
    translation uniform in [-max_translation, max_translation] * size per axis. The centre is
    ``(size / 2, size / 2)``, what ``cv2.getRotationMatrix2D((size / 2, size / 2), angle, scale)``
    gives; REFERENCE.md does not pin size / 2 against (size - 1) / 2. The translation is added
    after the rotation. Use as ``augmented = aug @ m3``.

    Args:
        key: a jax PRNG key.
        size: side of the align frame.
        max_rotation_deg: largest rotation in degrees.
        scale_range: (low, high) of the scale.
        max_translation: largest shift as a fraction of size.

    Returns:
        (3, 3) float32 matrix, align pixels -> augmented align pixels.
    """
    k_rot, k_scale, k_shift = jax.random.split(key, 3)
    angle = jnp.deg2rad(
        jax.random.uniform(k_rot, (), minval=-max_rotation_deg, maxval=max_rotation_deg)
    )
    scale = jax.random.uniform(k_scale, (), minval=scale_range[0], maxval=scale_range[1])
    shift = jax.random.uniform(
        k_shift, (2,), minval=-max_translation * size, maxval=max_translation * size
    )
    alpha = scale * jnp.cos(angle)
    beta = scale * jnp.sin(angle)
    c = size / 2
    return jnp.array(
        [
            [alpha, beta, (1 - alpha) * c - beta * c + shift[0]],
            [-beta, alpha, beta * c + (1 - alpha) * c + shift[1]],
            [0.0, 0.0, 1.0],
        ],
        dtype=jnp.float32,
    )


def check_keypoints(keypoints: np.ndarray, valid: np.ndarray, source: str = "") -> None:
    """Host-side validation of a batch of keypoints before any jitted code sees it.

    Args:
        keypoints: (B, P, 17, 3) of (x, y, v).
        valid: (B, P) bool, which people are real (padding is not checked).
        source: where the batch came from (file, split), put at the front of the message.

    Raises:
        ValueError: for a wrong shape, or NaN/inf in a valid person; the message names the
            image b and person p of the batch and the joints.
    """
    where = f"{source}: " if source else ""
    keypoints = np.asarray(keypoints)
    valid = np.asarray(valid)
    if keypoints.ndim != 4 or keypoints.shape[2:] != (NUM_KEYPOINTS, 3):
        raise ValueError(
            f"{where}keypoints must have shape (B, P, {NUM_KEYPOINTS}, 3), got {keypoints.shape}; "
            f"reshape COCO's flat lists of {3 * NUM_KEYPOINTS} values with .reshape(-1, "
            f"{NUM_KEYPOINTS}, 3) and pad people to a fixed count"
        )
    if valid.shape != keypoints.shape[:2]:
        raise ValueError(
            f"{where}valid must have shape (B, P) = {keypoints.shape[:2]} to match the keypoints, "
            f"got {valid.shape}"
        )
    if not np.issubdtype(keypoints.dtype, np.number):
        raise ValueError(f"{where}keypoints must be numeric, got dtype {keypoints.dtype}")
    bad_joint = ~np.isfinite(keypoints).all(axis=-1) & valid.astype(bool)[..., None]
    bad_people = np.argwhere(bad_joint.any(axis=-1))
    if len(bad_people):
        b, p = (int(i) for i in bad_people[0])
        joints = ", ".join(
            f"{k} ({KEYPOINT_NAMES[k]})" for k in np.flatnonzero(bad_joint[b, p]).tolist()
        )
        more = f" (and {len(bad_people) - 1} more people)" if len(bad_people) > 1 else ""
        raise ValueError(
            f"{where}image {b} person {p} has non-finite keypoint values at joints {joints}"
            f"{more}; set missing joints to (0, 0, 0) with v = 0, or mark the person invalid"
        )
