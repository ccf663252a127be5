"""NumPy float64 reference of the skeleton features, written per person from REFERENCE.md section 5.

Part maps are evaluated pixel by pixel; limbs walk the explicit index box of each limb with
Python's ``round`` (half-to-even, like the text) and test the line distance per pixel. Besides
the maps it returns a mask of entries within 1e-5 of a cut-off (d = 4.6025 for parts,
distance = 1 for limbs), where float32 and float64 may legitimately disagree.
"""

import math

import numpy as np

LIMBS = (
    (0, 1),
    (0, 2),
    (1, 2),
    (1, 3),
    (2, 4),
    (3, 5),
    (4, 6),
    (5, 6),
    (5, 7),
    (5, 11),
    (6, 8),
    (6, 12),
    (7, 9),
    (8, 10),
    (11, 12),
    (11, 13),
    (12, 14),
    (13, 15),
    (14, 16),
)
CUTOFF = 4.6025
NEAR = 1e-5


def ref_skeleton(
    keypoints: np.ndarray, size: int = 64, sigma: float = 3.0
) -> tuple[np.ndarray, np.ndarray]:
    """Reference skeleton maps of one person.

    Args:
      keypoints: (17, 3) (x, y, v) in align coordinates.

    Returns:
      maps (size, size, 55) float64 and near_cutoff (size, size, 55) bool.
    """
    keypoints = np.asarray(keypoints, np.float64)
    maps = np.zeros((size, size, 17 + 2 * len(LIMBS)), np.float64)
    near = np.zeros(maps.shape, bool)
    for k in range(17):
        x, y, v = keypoints[k]
        if v <= 0:
            continue
        sign = -1.0 if v == 1 else 1.0
        for i in range(size):
            for j in range(size):
                d = ((j - x) ** 2 + (i - y) ** 2) / (2 * sigma**2)
                if d < CUTOFF:
                    maps[i, j, k] = sign * math.exp(-d)
                near[i, j, k] = abs(d - CUTOFF) < NEAR
    for index, (a, b) in enumerate(LIMBS):
        xa, ya, va = keypoints[a]
        xb, yb, vb = keypoints[b]
        if va <= 0 or vb <= 0 or (xa == xb and ya == yb):
            continue
        length = math.hypot(xb - xa, yb - ya)
        ux, uy = (xb - xa) / length, (yb - ya) / length
        x_lo = max(round(min(xa, xb) - 1), 0)
        x_hi = min(round(max(xa, xb) + 1), size)
        y_lo = max(round(min(ya, yb) - 1), 0)
        y_hi = min(round(max(ya, yb) + 1), size)
        channel = 17 + 2 * index
        for i in range(y_lo, y_hi):
            for j in range(x_lo, x_hi):
                distance = abs((j - xa) * uy - (i - ya) * ux)
                if distance < 1:
                    maps[i, j, channel] = ux
                    maps[i, j, channel + 1] = uy
                if abs(distance - 1) < NEAR:
                    near[i, j, channel : channel + 2] = True
    return maps, near
