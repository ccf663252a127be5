"""Template fitting: the per-person matrix of Affine-Align (REFERENCE.md section 3).

Each person's keypoints, in feature coordinates (128x128 map), are fitted to every pose template
(unit coordinates, from ``templates.load_templates``) by the least-squares 4-parameter similarity
``A = [[a, b, tx], [-b, a, ty]]`` over the joints visible in both. The candidate
``diag(64, 64, 1) @ A`` maps feature pixels to align pixels; the best-scoring candidate whose scale
beats the default letterbox's wins, else the default matrix is used.

The least-squares problem is solved in closed form (weighted centroids), which is exact for this
4-parameter family and was the fastest and most accurate of the solvers tried (ECOSYSTEM.md
section 2). Everything here is ``jnp``, jittable and shape-static; ``fit_people`` vmaps over a
padded batch.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

# The fit needs at least this many joints visible in both person and template (|I| > 2).
_MIN_COMMON_JOINTS = 3


class FitResult(NamedTuple):
    """Selected matrices of a padded batch of people.

    Attributes:
      matrices: (B, P, 3, 3) float32 ``feature_to_align`` maps.
      template_index: (B, P) int32 index into the templates, -1 where the default matrix was used.
      score: (B, P) float32 score of the selected template, 0 for the default matrix.
    """

    matrices: jax.Array
    template_index: jax.Array
    score: jax.Array


def default_matrix(feature_size: int = 128, align_size: int = 64) -> jax.Array:
    """The centred letterbox of the whole square feature map into the align frame.

    Args:
      feature_size: side of the (square) feature map.
      align_size: side of the (square) align frame.

    Returns:
      (3, 3) float32 ``diag(s, s, 1)`` with ``s = align_size / feature_size`` (0.5 by default);
      a square map needs no translation.
    """
    s = align_size / feature_size
    return jnp.array([[s, 0.0, 0.0], [0.0, s, 0.0], [0.0, 0.0, 1.0]], jnp.float32)


def matrix_scale(matrix: jax.Array) -> jax.Array:
    """Scale of a similarity matrix, ``sqrt(M00^2 + M01^2)``.

    Args:
      matrix: (..., 3, 3) matrices.

    Returns:
      (...) scales.
    """
    return jnp.sqrt(matrix[..., 0, 0] ** 2 + matrix[..., 0, 1] ** 2)


def fit_template(
    points: jax.Array, template: jax.Array, *, align_size: int = 64
) -> tuple[jax.Array, jax.Array]:
    """Fit one person to one template by the least-squares similarity, and score the fit.

    The matrix is always ``diag(align_size, align_size, 1) @ A`` for the least-squares ``A`` over
    the joints I visible in both (the minimum-norm solution when all of them sit at one position,
    as ``numpy.linalg.lstsq`` gives; zeros when I is empty). The score is 0 ("no fit") when
    ``|I| <= 2`` or when a joint visible in the person is invisible in the template (the hard
    rule); otherwise ``mean_I exp(-||A p - t||^2 / 2) * |I| / |U|`` with U the joints visible in
    either. Person joints with non-finite coordinates are treated as invisible, so padded people
    cannot produce NaN.

    Args:
      points: (17, 3) person keypoints ``(x, y, v)`` in feature coordinates; visible where v > 0.
      template: (17, 3) template ``(x, y, score)`` in unit coordinates, vis threshold already
        applied (visible where score > 0).
      align_size: side of the align frame (64 in the reference).

    Returns:
      matrix: (3, 3) float32 candidate ``feature_to_align`` map.
      score: () float32 score in [0, 1].
    """
    points = jnp.asarray(points, jnp.float32)
    template = jnp.asarray(template, jnp.float32)
    finite = jnp.all(jnp.isfinite(points[:, :2]), axis=-1)
    vis_p = (points[:, 2] > 0) & finite
    vis_t = template[:, 2] > 0
    common = vis_p & vis_t
    w = common.astype(jnp.float32)
    n = jnp.sum(w)
    n_union = jnp.sum((vis_p | vis_t).astype(jnp.float32))

    p = jnp.where(common[:, None], points[:, :2], 0.0)
    t = jnp.where(common[:, None], template[:, :2], 0.0)
    inv_n = 1.0 / jnp.maximum(n, 1.0)
    mean_p = jnp.sum(p, axis=0) * inv_n
    mean_t = jnp.sum(t, axis=0) * inv_n
    pc = jnp.where(common[:, None], p - mean_p, 0.0)
    tc = jnp.where(common[:, None], t - mean_t, 0.0)
    den = jnp.sum(pc**2)
    num_a = jnp.sum(pc * tc)
    num_b = jnp.sum(tc[:, 0] * pc[:, 1] - tc[:, 1] * pc[:, 0])

    # All common joints at one position (or none): the centred sums vanish and the problem is
    # rank-deficient. Test that exactly on the raw coordinates, since the rounded centroid leaves
    # tiny non-zero residues that would blow a and b up.
    first = p[jnp.argmax(common)]
    degenerate = jnp.all(jnp.where(common[:, None], p == first, True))
    safe_den = jnp.where(degenerate, 1.0, den)
    a = num_a / safe_den
    b = num_b / safe_den
    tx = mean_t[0] - (a * mean_p[0] + b * mean_p[1])
    ty = mean_t[1] - (-b * mean_p[0] + a * mean_p[1])
    # Minimum-norm solution of the rank-2 system whose rows are all [x, y, 1, 0] and [y, -x, 0, 1].
    alpha = mean_t[0] / (first[0] ** 2 + first[1] ** 2 + 1.0)
    beta = mean_t[1] / (first[0] ** 2 + first[1] ** 2 + 1.0)
    a = jnp.where(degenerate, alpha * first[0] + beta * first[1], a)
    b = jnp.where(degenerate, alpha * first[1] - beta * first[0], b)
    tx = jnp.where(degenerate, alpha, tx)
    ty = jnp.where(degenerate, beta, ty)

    rx = a * p[:, 0] + b * p[:, 1] + tx - t[:, 0]
    ry = -b * p[:, 0] + a * p[:, 1] + ty - t[:, 1]
    fit = jnp.sum(jnp.where(common, jnp.exp(-(rx**2 + ry**2) / 2.0), 0.0)) * inv_n
    score = fit * n / jnp.maximum(n_union, 1.0)
    ok = (n >= _MIN_COMMON_JOINTS) & ~jnp.any(vis_p & ~vis_t) & jnp.isfinite(score)
    score = jnp.where(ok, score, 0.0)

    s = float(align_size)
    matrix = jnp.array(
        [[s * a, s * b, s * tx], [-s * b, s * a, s * ty], [0.0, 0.0, 1.0]], jnp.float32
    )
    return matrix, score


def select_matrix(
    points: jax.Array,
    templates: jax.Array,
    *,
    feature_size: int = 128,
    align_size: int = 64,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Choose one person's ``feature_to_align`` matrix among the templates and the default.

    Going through the templates in order, a candidate replaces the best so far when its score is
    strictly greater than the best score (starting from the default's 0) and its scale strictly
    greater than the default matrix's scale. That is: the first maximum of the score among the
    qualifying candidates with a positive score.

    Args:
      points: (17, 3) person keypoints in feature coordinates.
      templates: (T, 17, 3) templates from ``load_templates``.
      feature_size: side of the feature map (128).
      align_size: side of the align frame (64).

    Returns:
      matrix: (3, 3) float32 selected map.
      index: () int32 template index, -1 for the default matrix.
      score: () float32 score of the selected template, 0 for the default.
    """
    matrices, scores = jax.vmap(lambda t: fit_template(points, t, align_size=align_size))(templates)
    default = default_matrix(feature_size, align_size)
    qualifies = (
        (scores > 0.0)
        & (matrix_scale(matrices) > matrix_scale(default))
        & jnp.all(jnp.isfinite(matrices), axis=(-2, -1))
    )
    masked = jnp.where(qualifies, scores, -1.0)
    best = jnp.argmax(masked)
    chosen = masked[best] > 0.0
    index = jnp.where(chosen, best, -1).astype(jnp.int32)
    matrix = jnp.where(chosen, matrices[best], default)
    score = jnp.where(chosen, scores[best], 0.0)
    return matrix, index, score


def fit_people(
    keypoints: jax.Array,
    templates: jax.Array,
    valid: jax.Array | None = None,
    *,
    feature_size: int = 128,
    align_size: int = 64,
) -> FitResult:
    """Select the ``feature_to_align`` matrix of every person of a padded batch.

    Args:
      keypoints: (B, P, 17, 3) keypoints in feature coordinates (``m2 @ m1`` applied).
      templates: (T, 17, 3) templates from ``load_templates`` (originals then mirrored).
      valid: optional (B, P) bool mask; people outside it get the default matrix, index -1 and
        score 0. Padded people with any values give finite results even without it.
      feature_size: side of the feature map (128).
      align_size: side of the align frame (64).

    Returns:
      FitResult with matrices (B, P, 3, 3), template_index (B, P) int32 and score (B, P).
    """
    select = lambda pts: select_matrix(
        pts, templates, feature_size=feature_size, align_size=align_size
    )
    matrices, index, score = jax.vmap(jax.vmap(select))(jnp.asarray(keypoints, jnp.float32))
    if valid is not None:
        valid = jnp.asarray(valid, bool)
        matrices = jnp.where(
            valid[..., None, None], matrices, default_matrix(feature_size, align_size)
        )
        index = jnp.where(valid, index, -1)
        score = jnp.where(valid, score, 0.0)
    return FitResult(matrices=matrices, template_index=index, score=score)
