"""An independent NumPy float64 reference for pose2seg_jax.ops.warps, written from REFERENCE.md.

Every warp here maps each destination pixel back into the source explicitly and blends the four
neighbouring source pixels, each checked against the source bounds (outside counts as zero),
one person at a time. Nothing here calls jax.
"""

import numpy as np


def letterbox(height: int, width: int, size: int = 512) -> np.ndarray:
    """m1 of section 1: x' = s (x - W/2) + size/2 with s = min(size/W, size/H)."""
    s = min(size / width, size / height)
    m = np.eye(3)
    m[0, 0] = m[1, 1] = s
    m[0, 2] = size / 2 - s * width / 2
    m[1, 2] = size / 2 - s * height / 2
    return m


def apply_points(matrix: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """(N, 2) points through a (3, 3) matrix, in homogeneous form."""
    ones = np.ones((len(xy), 1))
    out = np.concatenate([xy, ones], axis=1) @ matrix.T
    return out[:, :2] / out[:, 2:3]


def keypoints(kps: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """One person's (17, 3) keypoints through a matrix; v == 0 joints become (0, 0, 0)."""
    out = np.zeros((len(kps), 3))
    for k, (x, y, v) in enumerate(kps):
        if v == 0:
            continue
        px, py = apply_points(matrix, np.array([[x, y]], dtype=np.float64))[0]
        out[k] = (px, py, v)
    return out


def bilinear(image: np.ndarray, sx: np.ndarray, sy: np.ndarray) -> np.ndarray:
    """Four-corner bilinear samples of a (H, W) image at float positions, zero outside."""
    h, w = image.shape
    x0 = np.floor(sx).astype(np.int64)
    y0 = np.floor(sy).astype(np.int64)
    fx = sx - x0
    fy = sy - y0
    out = np.zeros(sx.shape, dtype=np.float64)
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            yy = y0 + dy
            xx = x0 + dx
            inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
            values = np.where(inside, image[np.clip(yy, 0, h - 1), np.clip(xx, 0, w - 1)], 0.0)
            out += wx * wy * values
    return out


def warp(image: np.ndarray, src_to_dst: np.ndarray, out_shape: tuple[int, int]) -> np.ndarray:
    """dst(x, y) = src(inverse(src_to_dst) (x, y)) for a (H, W) image, bilinear, zero outside."""
    dst_to_src = np.linalg.inv(src_to_dst)
    return sample_at(image, dst_to_src, out_shape)


def sample_at(image: np.ndarray, dst_to_src: np.ndarray, out_shape: tuple[int, int]) -> np.ndarray:
    """dst(x, y) = src(dst_to_src (x, y)) for a (H, W) image."""
    h, w = out_shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    pts = apply_points(dst_to_src, np.stack([xs.ravel(), ys.ravel()], axis=1))
    return bilinear(image.astype(np.float64), pts[:, 0], pts[:, 1]).reshape(h, w)


def mask_targets(masks: np.ndarray, matrices: np.ndarray, size: int = 64) -> np.ndarray:
    """Section 8: each 0/1 mask warped into the size x size frame, rounded (halves up)."""
    out = np.zeros((len(masks), size, size), dtype=np.int64)
    for p in range(len(masks)):
        warped = warp((masks[p] > 0).astype(np.float64), matrices[p], (size, size))
        out[p] = np.floor(warped + 0.5)
    return out


def paste(probs: np.ndarray, image_to_align: np.ndarray, out_shape: tuple[int, int]) -> np.ndarray:
    """Section 8: image pixel x samples the map at image_to_align x; threshold > 0.5."""
    out = np.zeros((len(probs), *out_shape), dtype=bool)
    for p in range(len(probs)):
        out[p] = sample_at(probs[p], image_to_align[p], out_shape) > 0.5
    return out


def similarity(
    angle_deg: float, scale: float, shift: tuple[float, float], centre: float
) -> np.ndarray:
    """Rotation + scale about (centre, centre), then a shift: the form of section 6."""
    t = np.deg2rad(angle_deg)
    rot = np.array(
        [[np.cos(t), np.sin(t), 0.0], [-np.sin(t), np.cos(t), 0.0], [0.0, 0.0, 1.0]]
    ) * np.array([[scale], [scale], [1.0]])
    to_origin = np.array([[1.0, 0, -centre], [0, 1.0, -centre], [0, 0, 1.0]])
    back = np.array([[1.0, 0, centre + shift[0]], [0, 1.0, centre + shift[1]], [0, 0, 1.0]])
    return back @ rot @ to_origin


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean arrays; 1.0 when both are empty."""
    a = a.astype(bool)
    b = b.astype(bool)
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def ellipse_mask(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A random rotated filled ellipse, as uint8 0/1."""
    cy, cx = rng.uniform(0.2, 0.8) * height, rng.uniform(0.2, 0.8) * width
    ay, ax = rng.uniform(0.1, 0.4) * height, rng.uniform(0.1, 0.4) * width
    t = rng.uniform(0, np.pi)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    u = (xs - cx) * np.cos(t) + (ys - cy) * np.sin(t)
    v = -(xs - cx) * np.sin(t) + (ys - cy) * np.cos(t)
    return ((u / ax) ** 2 + (v / ay) ** 2 <= 1.0).astype(np.uint8)


def polygon_mask(rng: np.random.Generator, height: int, width: int, n: int = 7) -> np.ndarray:
    """A random star-shaped polygon (points sorted by angle about a centre), as uint8 0/1."""
    cx, cy = rng.uniform(0.3, 0.7) * width, rng.uniform(0.3, 0.7) * height
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    radii = rng.uniform(0.1, 0.45, n) * min(height, width)
    px = cx + radii * np.cos(angles)
    py = cy + radii * np.sin(angles)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    inside = np.zeros((height, width), dtype=bool)
    # Even-odd ray casting over the polygon's edges.
    for i in range(n):
        x1, y1, x2, y2 = px[i], py[i], px[(i + 1) % n], py[(i + 1) % n]
        crosses = (y1 > ys) != (y2 > ys)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_at = x1 + (ys - y1) * (x2 - x1) / (y2 - y1)
        inside ^= crosses & (xs < x_at)
    return inside.astype(np.uint8)
