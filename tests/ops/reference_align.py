"""NumPy float64 reference of Affine-Align, written per person from REFERENCE.md section 4.

Deliberately plain: inverts m3 with ``np.linalg.inv``, maps every align pixel with the three
steps of the text (q = 128/127 j, f = m3^-1 q, src = 127/128 f for the 128 map, W/(W-1) in
general), then interpolates with an explicit four-corner loop and a bounds check per corner
(corners outside the map contribute 0, so partly outside samples blend with 0).
"""

import numpy as np


def ref_source_point(
    matrix: np.ndarray, jx: int, jy: int, height: int, width: int, mapping: str
) -> tuple[float, float]:
    """Feature pixel (x, y) sampled for align pixel (jx, jy)."""
    inverse = np.linalg.inv(np.asarray(matrix, np.float64))
    if mapping == "reference":
        q = np.array([jx * width / (width - 1), jy * height / (height - 1), 1.0])
        f = inverse @ q
        return f[0] * (width - 1) / width, f[1] * (height - 1) / height
    f = inverse @ np.array([jx, jy, 1.0], np.float64)
    return f[0], f[1]


def ref_bilinear(features: np.ndarray, x: float, y: float) -> np.ndarray:
    """Bilinear sample of (H, W, C) at (x, y) with zero outside; returns (C,)."""
    height, width, channels = features.shape
    x0 = int(np.floor(x))
    y0 = int(np.floor(y))
    out = np.zeros(channels, np.float64)
    for cy in (y0, y0 + 1):
        for cx in (x0, x0 + 1):
            if 0 <= cx < width and 0 <= cy < height:
                weight = (1.0 - abs(x - cx)) * (1.0 - abs(y - cy))
                out += weight * features[cy, cx].astype(np.float64)
    return out


def ref_affine_align(
    features: np.ndarray, matrix: np.ndarray, align_size: int = 64, mapping: str = "reference"
) -> np.ndarray:
    """Reference Affine-Align of one person: (H, W, C), (3, 3) -> (A, A, C) float64."""
    height, width, channels = features.shape
    out = np.zeros((align_size, align_size, channels), np.float64)
    for jy in range(align_size):
        for jx in range(align_size):
            x, y = ref_source_point(matrix, jx, jy, height, width, mapping)
            out[jy, jx] = ref_bilinear(features, x, y)
    return out


def ref_align_adjoint(
    cotangent: np.ndarray,
    shape: tuple[int, int, int],
    matrix: np.ndarray,
    mapping: str = "reference",
) -> np.ndarray:
    """Adjoint of ``ref_affine_align`` in the features: scatters (A, A, C) back onto (H, W, C).

    Sampling is linear in the features, so this is the gradient of ``sum(cotangent * align)``.
    """
    height, width, channels = shape
    align_size = cotangent.shape[0]
    grad = np.zeros((height, width, channels), np.float64)
    for jy in range(align_size):
        for jx in range(align_size):
            x, y = ref_source_point(matrix, jx, jy, height, width, mapping)
            x0 = int(np.floor(x))
            y0 = int(np.floor(y))
            for cy in (y0, y0 + 1):
                for cx in (x0, x0 + 1):
                    if 0 <= cx < width and 0 <= cy < height:
                        weight = (1.0 - abs(x - cx)) * (1.0 - abs(y - cy))
                        grad[cy, cx] += weight * cotangent[jy, jx]
    return grad
