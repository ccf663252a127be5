"""NumPy float64 reference of template fitting, written per person from REFERENCE.md section 3.

Deliberately not the closed form of ``pose2seg_jax.ops.fit``: it builds the 2|I| x 4 linear
system and solves it with ``np.linalg.lstsq``, then applies the rules with plain loops.
"""

import numpy as np

ALIGN = 64.0
DEFAULT_SCALE = 0.5


def ref_fit_template(points: np.ndarray, template: np.ndarray) -> tuple[np.ndarray, float]:
    """Reference fit of one person (17, 3) feature coords to one template (17, 3) unit coords.

    Returns the (3, 3) candidate matrix diag(64, 64, 1) @ A and the score (0 when no fit).
    """
    points = np.asarray(points, np.float64)
    template = np.asarray(template, np.float64)
    common = [k for k in range(17) if points[k, 2] > 0 and template[k, 2] > 0]
    union = [k for k in range(17) if points[k, 2] > 0 or template[k, 2] > 0]
    rows, rhs = [], []
    for k in common:
        x, y = points[k, :2]
        rows.append([x, y, 1.0, 0.0])
        rhs.append(template[k, 0])
        rows.append([y, -x, 0.0, 1.0])
        rhs.append(template[k, 1])
    if common:
        theta = np.linalg.lstsq(np.array(rows), np.array(rhs), rcond=None)[0]
    else:
        theta = np.zeros(4)
    a, b, tx, ty = theta
    affine = np.array([[a, b, tx], [-b, a, ty], [0.0, 0.0, 1.0]])
    matrix = np.diag([ALIGN, ALIGN, 1.0]) @ affine

    hard = any(points[k, 2] > 0 and template[k, 2] <= 0 for k in range(17))
    if len(common) <= 2 or hard:
        return matrix, 0.0
    total = 0.0
    for k in common:
        mapped = affine @ np.array([points[k, 0], points[k, 1], 1.0])
        total += np.exp(-np.sum((mapped[:2] - template[k, :2]) ** 2) / 2.0)
    score = total / len(common) * len(common) / len(union)
    return matrix, float(score)


def ref_default_matrix() -> np.ndarray:
    """The 128 -> 64 centred letterbox: scale 0.5, no translation."""
    return np.diag([DEFAULT_SCALE, DEFAULT_SCALE, 1.0])


def ref_select_matrix(
    points: np.ndarray, templates: np.ndarray
) -> tuple[np.ndarray, int, float, list[tuple[float, float]]]:
    """Reference selection over templates (T, 17, 3), in order, exactly as section 3 words it.

    Returns matrix, index (-1 default), score, and every template's (score, scale) for the
    caller to spot near-ties.
    """
    best_matrix, best_index, best_score = ref_default_matrix(), -1, 0.0
    candidates = []
    for index, template in enumerate(templates):
        matrix, score = ref_fit_template(points, template)
        scale = float(np.hypot(matrix[0, 0], matrix[0, 1]))
        candidates.append((score, scale))
        if score > best_score and scale > DEFAULT_SCALE:
            best_matrix, best_index, best_score = matrix, index, score
    return best_matrix, best_index, best_score, candidates
