"""Affine-Align against the per-pixel NumPy float64 reference (tests/ops/reference_align.py).

Tolerances: sample coordinates are float32, so even a correctly rounded coordinate near 128 is
off by up to 3.8e-6 (spacing 7.6e-6) and each extra rounding adds as much; over 300 random
matrices the implementation stays within 3e-7 * |src| (2-norm). Coordinates are checked to
``1e-6 + 4e-7 * |src|`` per pixel. Features are drawn in [0, 1), so bilinear interpolation is
1-Lipschitz per axis and each sampled value may be off by twice the coordinate tolerance:
about 1e-5 for samples within |src| < 10, 1.5e-4 for samples near (128, 128). Matrices whose
sample coordinates are exact in float32 (power-of-two scales, integer translations) are held
to 1e-6, which tests the interpolation itself.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pose2seg_jax.ops import align

from .reference_align import ref_affine_align, ref_align_adjoint, ref_source_point


def similarity(angle: float, scale: float, feature_point, align_point) -> np.ndarray:
    """m3 mapping ``feature_point`` to ``align_point`` with a rotation and a uniform scale."""
    linear = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    matrix = np.eye(3)
    matrix[:2, :2] = linear
    matrix[:2, 2] = np.asarray(align_point) - linear @ np.asarray(feature_point)
    return matrix.astype(np.float32)


def random_matrices(seed: int, count: int) -> list[np.ndarray]:
    """Rotations, scales 0.1..5 (log-uniform), windows inside, across the edge and far outside."""
    rng = np.random.default_rng(seed)
    matrices = []
    for index in range(count):
        angle = rng.uniform(-np.pi, np.pi)
        scale = float(np.exp(rng.uniform(np.log(0.1), np.log(5.0))))
        kind = index % 4
        if kind == 0:
            scale = rng.uniform(1.5, 5.0)
            centre = rng.uniform(40, 88, 2)
        elif kind == 1:
            centre = rng.uniform(10, 118, 2)
        elif kind == 2:
            centre = rng.choice([-8.0, 136.0]) + rng.uniform(-6, 6, 2)
        else:
            centre = rng.uniform(300, 600, 2) * rng.choice([-1, 1], 2)
        matrices.append(similarity(angle, scale, centre, 32 + rng.uniform(-20, 20, 2)))
    # A shear and an anisotropic scale: m3 need not be a similarity for the sampler.
    shear = np.array([[0.7, 0.3, 5.0], [-0.2, 1.6, -40.0], [0, 0, 1]], np.float32)
    return [*matrices, shear]


def ref_coordinates(matrix, shape, align_size, mapping):
    height, width = shape
    return np.array(
        [
            [ref_source_point(matrix, jx, jy, height, width, mapping) for jx in range(align_size)]
            for jy in range(align_size)
        ]
    )


def coordinate_tolerance(coords: np.ndarray) -> np.ndarray:
    return 1e-6 + 4e-7 * np.linalg.norm(coords, axis=-1)


def feature_tolerance(coords: np.ndarray) -> np.ndarray:
    return 1e-6 + 2 * coordinate_tolerance(coords)


@pytest.fixture(scope="module")
def features() -> np.ndarray:
    return np.random.default_rng(1).uniform(0, 1, (128, 128, 3)).astype(np.float32)


@pytest.mark.parametrize("mapping", ["reference", "clean"])
@pytest.mark.parametrize("index", range(13))
def test_matches_reference(features, mapping, index):
    matrix = random_matrices(0, 12)[index]
    expected = ref_affine_align(features, matrix, 64, mapping)
    coords = ref_coordinates(matrix, (128, 128), 64, mapping)

    src_x, src_y = align.sample_coordinates(
        jnp.asarray(matrix), feature_shape=(128, 128), mapping=mapping
    )
    coord_error = np.abs(np.stack([src_x, src_y], -1) - coords).max(axis=-1)
    assert np.all(coord_error <= coordinate_tolerance(coords)), coord_error.max()

    tolerance = feature_tolerance(coords)[..., None]
    got = np.asarray(
        align.affine_align(jnp.asarray(features), jnp.asarray(matrix), mapping=mapping)
    )
    assert got.shape == (64, 64, 3) and got.dtype == np.float32
    error = np.abs(got - expected)
    assert np.all(error <= tolerance), error.max()


def test_table_covers_inside_partial_and_outside(features):
    """The random table must exercise fully inside, partly outside and fully outside samples."""
    fractions = []
    for matrix in random_matrices(0, 12):
        coords = ref_coordinates(matrix, (128, 128), 64, "reference")
        inside = (coords >= 0).all(-1) & (coords <= 127).all(-1)
        partial = (coords > -1).all(-1) & (coords < 128).all(-1) & ~inside
        fractions.append((inside.mean(), partial.sum(), (~inside & ~partial).mean()))
    fractions = np.array(fractions)
    assert (fractions[:, 0] == 1).any(), "no person fully inside the map"
    assert fractions[:, 1].sum() > 20, "too few samples straddling the border"
    assert (fractions[:, 2] == 1).any(), "no person fully outside the map"


def test_reference_numbers_for_128_map():
    """The 128 -> 64 case reproduces REFERENCE.md's q = 128/127 j, src = 127/128 m3^-1 q."""
    matrix = similarity(0.4, 0.7, (100.0, 20.0), (5.0, 60.0))
    inverse = np.linalg.inv(matrix.astype(np.float64))
    j = np.arange(64.0)
    q = np.stack(np.broadcast_arrays((128 / 127) * j[None, :], (128 / 127) * j[:, None], 1.0), -1)
    expected = (127 / 128) * (q @ inverse.T)[..., :2]
    src_x, src_y = align.sample_coordinates(jnp.asarray(matrix), feature_shape=(128, 128))
    error = np.abs(np.stack([src_x, src_y], -1) - expected).max(axis=-1)
    assert np.all(error <= coordinate_tolerance(expected)), error.max()
    # On a square map the factors cancel on m3^-1's linear part: only its translation
    # shrinks, so reference - clean = -m3^-1(0, 0) / 128 at every pixel.
    clean_x, clean_y = align.sample_coordinates(
        jnp.asarray(matrix), feature_shape=(128, 128), mapping="clean"
    )
    shift = -inverse[:2, 2] / 128
    assert np.abs(shift).max() > 0.3
    np.testing.assert_allclose(np.asarray(src_x - clean_x), shift[0], atol=5e-5)
    np.testing.assert_allclose(np.asarray(src_y - clean_y), shift[1], atol=5e-5)


@pytest.mark.parametrize(
    ("matrix", "mapping"),
    [
        (np.diag([0.5, 0.5, 1.0]), "clean"),
        (np.array([[1, 0, -37], [0, 1, 12], [0, 0, 1]]), "clean"),
        (np.array([[2, 0, -100], [0, 2, -3], [0, 0, 1]]), "clean"),
        (np.array([[0, 1, -7], [-1, 0, 90], [0, 0, 1]]), "clean"),
    ],
)
def test_exact_coordinates_tight(features, matrix, mapping):
    matrix = np.asarray(matrix, np.float32)
    expected = ref_affine_align(features, matrix, 64, mapping)
    got = align.affine_align(jnp.asarray(features), jnp.asarray(matrix), mapping=mapping)
    np.testing.assert_allclose(np.asarray(got), expected, atol=1e-6)


def test_non_square_map_and_other_sizes():
    """Per-axis factors W/(W-1), H/(H-1) and any align size, against the reference."""
    rng = np.random.default_rng(3)
    feats = rng.uniform(0, 1, (24, 40, 2)).astype(np.float32)
    matrix = similarity(0.9, 1.7, (20.0, 12.0), (8.0, 9.0))
    for mapping in ("reference", "clean"):
        expected = ref_affine_align(feats, matrix, 17, mapping)
        coords = ref_coordinates(matrix, (24, 40), 17, mapping)
        got = align.affine_align(
            jnp.asarray(feats), jnp.asarray(matrix), align_size=17, mapping=mapping
        )
        assert got.shape == (17, 17, 2)
        assert np.all(np.abs(np.asarray(got) - expected) <= feature_tolerance(coords)[..., None])


def test_align_people_shapes_and_per_person():
    rng = np.random.default_rng(4)
    feats = rng.uniform(0, 1, (2, 32, 32, 5)).astype(np.float32)
    matrices = np.stack(
        [
            similarity(rng.uniform(-1, 1), rng.uniform(0.5, 3), rng.uniform(0, 32, 2), (8, 8))
            for _ in range(6)
        ]
    ).reshape(2, 3, 3, 3)
    out = align.align_people(jnp.asarray(feats), jnp.asarray(matrices), align_size=16)
    assert out.shape == (2, 3, 16, 16, 5) and out.dtype == jnp.float32
    for b in range(2):
        for p in range(3):
            expected = ref_affine_align(feats[b], matrices[b, p], 16, "reference")
            np.testing.assert_allclose(np.asarray(out[b, p]), expected, atol=2e-5)


def test_gradient_matches_numpy_adjoint():
    rng = np.random.default_rng(6)
    feats = rng.standard_normal((8, 8, 2)).astype(np.float32)
    matrix = similarity(0.6, 0.9, (4.0, 3.5), (3.0, 2.0))
    cotangent = rng.standard_normal((6, 6, 2)).astype(np.float32)
    for mapping in ("reference", "clean"):
        expected = ref_align_adjoint(cotangent.astype(np.float64), feats.shape, matrix, mapping)
        assert np.abs(expected).max() > 0.1
        loss = lambda f, mapping=mapping: jnp.sum(
            cotangent * align.affine_align(f, jnp.asarray(matrix), align_size=6, mapping=mapping)
        )
        grad = jax.grad(loss)(jnp.asarray(feats))
        assert np.all(np.isfinite(np.asarray(grad)))
        np.testing.assert_allclose(np.asarray(grad), expected, atol=1e-5)


def test_align_people_gradients_match_numpy_adjoint_and_autodiff():
    """The hand-written feature gradient of ``align_people`` (row scatters) against the
    per-person NumPy adjoint summed over each image's people, for windows inside, across the
    edge and outside the map; the matrices' gradient against plain autodiff (no sample lands
    exactly on a pixel row or column, where the coordinate derivative has a kink and rounding
    picks a side)."""
    rng = np.random.default_rng(7)
    feats = rng.standard_normal((2, 9, 7, 3)).astype(np.float32)
    matrices = np.stack(
        [
            [
                similarity(0.6, 0.9, (4.0, 3.5), (3.0, 2.0)),
                similarity(-2.0, 1.7, (0.5, 7.7), (3.0, 3.0)),  # across the edge
                similarity(0.3, 1.0, (40.0, -30.0), (3.0, 3.0)),  # outside: no gradient
            ],
            [
                similarity(1.2, 0.4, (3.0, 4.0), (2.5, 2.5)),
                similarity(0.1, 2.0, (6.3, 8.2), (3.0, 3.0)),
                similarity(3.0, 0.8, (2.0, 2.0), (1.0, 4.0)),
            ],
        ]
    )
    cotangent = rng.standard_normal((2, 3, 6, 6, 3)).astype(np.float32)
    for mapping in ("reference", "clean"):
        expected = np.zeros(feats.shape)
        for b in range(2):
            for p in range(3):
                expected[b] += ref_align_adjoint(
                    cotangent[b, p].astype(np.float64), feats.shape[1:], matrices[b, p], mapping
                )
        assert np.abs(expected).max() > 0.1

        def loss(f, m, sample, mapping=mapping):
            return jnp.sum(cotangent * sample(f, m, 6, mapping))

        ours = lambda f, m, size, mapping: align.align_people(
            f, m, align_size=size, mapping=mapping
        )
        grads = jax.jit(jax.grad(loss, argnums=(0, 1)), static_argnums=2)
        d_feats, d_matrices = grads(jnp.asarray(feats), jnp.asarray(matrices), ours)
        np.testing.assert_allclose(np.asarray(d_feats), expected, atol=1e-5)
        autodiff_feats, autodiff_matrices = grads(
            jnp.asarray(feats), jnp.asarray(matrices), align._sample_people
        )
        np.testing.assert_allclose(np.asarray(d_feats), autodiff_feats, atol=1e-5)
        assert np.abs(np.asarray(d_matrices)).max() > 0.1
        np.testing.assert_allclose(d_matrices, autodiff_matrices, rtol=1e-5, atol=1e-5)


def test_no_recompilation_for_new_values():
    traces = 0

    def run(feats, matrices):
        nonlocal traces
        traces += 1
        return align.align_people(feats, matrices, align_size=8)

    jitted = jax.jit(run)
    rng = np.random.default_rng(8)
    for _ in range(3):
        feats = jnp.asarray(rng.standard_normal((2, 16, 16, 3)), jnp.float32)
        matrices = jnp.asarray(
            np.stack(
                [
                    similarity(rng.uniform(-1, 1), rng.uniform(0.2, 2), (8, 8), (4, 4))
                    for _ in range(4)
                ]
            ).reshape(2, 2, 3, 3)
        )
        jax.block_until_ready(jitted(feats, matrices))
    assert traces == 1


def test_bad_arguments_raise():
    feats = jnp.zeros((8, 8, 1))
    with pytest.raises(ValueError, match="mapping"):
        align.affine_align(feats, jnp.eye(3), mapping="nearest")
