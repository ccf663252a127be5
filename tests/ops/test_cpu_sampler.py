"""The compiled CPU sampling kernel: against the NumPy reference, against map_coordinates, inside
Affine-Align (values and gradients), and its fallbacks when it cannot be built or is switched off."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pose2seg_jax.ops import align, cpu_sampler

from .reference_align import ref_bilinear

needs_kernel = pytest.mark.skipif(
    not cpu_sampler.available(), reason="no C++ compiler: the CPU kernel could not be built"
)


def _coordinates(seed, shape, height, width):
    """Coordinates inside, partly outside (within a pixel of the border) and far outside the
    map, plus exact integers, the last row and column, and -0.5 (a corner on each side)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-3.0, width + 2.0, shape).astype(np.float32)
    y = rng.uniform(-3.0, height + 2.0, shape).astype(np.float32)
    flat_x, flat_y = x.reshape(-1), y.reshape(-1)
    special = [(0, 0), (width - 1, height - 1), (-0.5, 2), (3, -0.5), (width - 0.5, 1), (-40, 1e9)]
    for i, (sx, sy) in enumerate(special):
        flat_x[i], flat_y[i] = sx, sy
    return x, y


@needs_kernel
@pytest.mark.parametrize("channels", [16, 5, 37])
def test_kernel_matches_numpy_reference(channels):
    rng = np.random.default_rng(channels)
    features = rng.normal(size=(2, 9, 11, channels)).astype(np.float32)
    src_x, src_y = _coordinates(channels, (2, 3, 6, 6), 9, 11)
    out = np.asarray(jax.jit(cpu_sampler.sample)(features, src_x, src_y))
    assert out.shape == (2, 3, 6, 6, channels)
    for index in np.ndindex(src_x.shape):
        expected = ref_bilinear(features[index[0]], float(src_x[index]), float(src_y[index]))
        np.testing.assert_allclose(out[index], expected, atol=1e-5, err_msg=str(index))
    # The far-outside sample is exactly zero, not a blend of clamped rows.
    assert not out[0, 0, 0, 5].any()


@needs_kernel
def test_kernel_equals_map_coordinates():
    rng = np.random.default_rng(0)
    features = jnp.asarray(rng.normal(size=(3, 20, 24, 64)).astype(np.float32))
    src_x, src_y = (jnp.asarray(c) for c in _coordinates(1, (3, 4, 16, 16), 20, 24))
    per_image = lambda f, xs, ys: jax.vmap(lambda x, y: align._sample(f, x, y))(xs, ys)
    expected = jax.jit(jax.vmap(per_image))(features, src_x, src_y)
    out = jax.jit(cpu_sampler.sample)(features, src_x, src_y)
    np.testing.assert_allclose(np.asarray(out), np.asarray(expected), rtol=0, atol=1e-6)


@needs_kernel
def test_non_finite_coordinates_sample_zero():
    features = jnp.ones((1, 4, 4, 8), jnp.float32)
    src = jnp.array([np.nan, np.inf, -np.inf, 1.0], jnp.float32).reshape(1, 1, 2, 2)
    out = np.asarray(cpu_sampler.sample(features, src, jnp.ones_like(src)))
    assert not out[0, 0].reshape(4, 8)[:3].any()
    np.testing.assert_array_equal(out[0, 0, 1, 1], 1.0)


def _align_and_gradients(features, matrices):
    def loss(f, m):
        return jnp.sum(align.align_people(f, m, align_size=16) * jnp.cos(jnp.arange(8.0)))

    values = jax.jit(lambda f, m: align.align_people(f, m, align_size=16))(features, matrices)
    return values, jax.jit(jax.grad(loss, argnums=(0, 1)))(features, matrices)


@needs_kernel
def test_align_people_same_with_and_without_kernel(monkeypatch):
    rng = np.random.default_rng(3)
    features = jnp.asarray(rng.normal(size=(2, 12, 12, 8)).astype(np.float32))
    angle, scale = rng.uniform(-0.5, 0.5, (2, 3)), rng.uniform(0.6, 2.0, (2, 3))
    matrices = np.zeros((2, 3, 3, 3), np.float32)
    matrices[..., 0, 0] = matrices[..., 1, 1] = scale * np.cos(angle)
    matrices[..., 0, 1] = -scale * np.sin(angle)
    matrices[..., 1, 0] = scale * np.sin(angle)
    matrices[..., :2, 2] = rng.uniform(-6, 10, (2, 3, 2))
    matrices[..., 2, 2] = 1.0
    fast, (fast_df, fast_dm) = _align_and_gradients(features, jnp.asarray(matrices))
    monkeypatch.setattr(cpu_sampler, "available", lambda: False)
    slow, (slow_df, slow_dm) = _align_and_gradients(features, jnp.asarray(matrices))
    # Coordinates are computed in another fusion, so they may round differently (1e-5 is the
    # agreement asked of Affine-Align against the NumPy reference).
    np.testing.assert_allclose(np.asarray(fast), np.asarray(slow), atol=1e-5)
    np.testing.assert_array_equal(np.asarray(fast_df), np.asarray(slow_df))
    np.testing.assert_array_equal(np.asarray(fast_dm), np.asarray(slow_dm))
    assert np.abs(np.asarray(fast)).max() > 0.1


def test_failed_build_warns_and_falls_back(monkeypatch, tmp_path):
    monkeypatch.setenv("POSE2SEG_JAX_CACHE", str(tmp_path))
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    monkeypatch.delenv("POSE2SEG_JAX_CPU_SAMPLER", raising=False)
    cpu_sampler.available.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="map_coordinates instead"):
            assert cpu_sampler.available() is False
        out = align.align_people(jnp.ones((1, 4, 4, 2)), jnp.eye(3)[None, None], align_size=4)
        np.testing.assert_allclose(np.asarray(out)[0, 0, :3, :3], 1.0)
    finally:
        cpu_sampler.available.cache_clear()
    assert not list(tmp_path.glob("cpu_sampler/*.so"))


def test_switched_off_by_environment(monkeypatch, recwarn):
    monkeypatch.setenv("POSE2SEG_JAX_CPU_SAMPLER", "0")
    cpu_sampler.available.cache_clear()
    try:
        assert cpu_sampler.available() is False
    finally:
        cpu_sampler.available.cache_clear()
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


@needs_kernel
def test_build_writes_the_library_where_asked(tmp_path):
    path = tmp_path / "nested" / "sampler.so"
    cpu_sampler.build(path)
    assert path.stat().st_size > 0
    assert [p.name for p in path.parent.iterdir()] == ["sampler.so"]
