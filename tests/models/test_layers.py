"""PointwiseConv against flax and PyTorch; BatchNorm (also pending into a conv) against flax; max_pool against PyTorch."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from pose2seg_jax.models import layers
from pose2seg_jax.models.layers import (
    BatchNorm,
    GroupedInputConv,
    Normalized,
    PointwiseConv,
    conv_custom_grads,
    conv_input_grad_by_phases,
    max_pool,
)


@pytest.mark.parametrize(
    ("shape", "stride", "use_bias"),
    [((2, 8, 8, 5), 1, True), ((2, 9, 7, 6), 2, False), ((1, 16, 16, 3), 2, True)],
)
def test_matches_flax_conv_and_torch(shape, stride, use_bias) -> None:
    x = jax.random.normal(jax.random.key(0), shape)
    ours = PointwiseConv(4, strides=stride, use_bias=use_bias)
    conv = nn.Conv(4, (1, 1), strides=stride, padding="VALID", use_bias=use_bias)
    variables = ours.init(jax.random.key(1), x)
    # Same parameter names, shapes and initialisation as nn.Conv.
    conv_vars = conv.init(jax.random.key(1), x)
    assert jax.tree.map(jnp.shape, variables) == jax.tree.map(jnp.shape, conv_vars)
    np.testing.assert_array_equal(variables["params"]["kernel"], conv_vars["params"]["kernel"])
    if use_bias:
        variables = jax.tree.map(lambda p: p + 0.3, variables)
    y = ours.apply(variables, x)
    np.testing.assert_allclose(y, conv.apply(variables, x), rtol=1e-5, atol=1e-5)

    kernel = np.array(variables["params"]["kernel"])
    torch_conv = torch.nn.Conv2d(shape[-1], 4, 1, stride=stride, bias=use_bias)
    with torch.no_grad():
        torch_conv.weight.copy_(torch.from_numpy(kernel.transpose(3, 2, 0, 1)))
        if use_bias:
            torch_conv.bias.copy_(torch.from_numpy(np.array(variables["params"]["bias"])))
        expected = torch_conv(torch.from_numpy(np.array(x).transpose(0, 3, 1, 2)))
    np.testing.assert_allclose(y, expected.numpy().transpose(0, 2, 3, 1), rtol=1e-5, atol=1e-5)


def test_gradients_match_flax_conv() -> None:
    x = jax.random.normal(jax.random.key(2), (2, 10, 10, 6))
    ours = PointwiseConv(3, strides=2)
    conv = nn.Conv(3, (1, 1), strides=2, padding="VALID")
    variables = ours.init(jax.random.key(3), x)

    def loss(module, v, x):
        return jnp.sum(jnp.sin(module.apply(v, x)))

    g_ours = jax.grad(lambda v, x: loss(ours, v, x), argnums=(0, 1))(variables, x)
    g_conv = jax.grad(lambda v, x: loss(conv, v, x), argnums=(0, 1))(variables, x)
    for a, b in zip(jax.tree.leaves(g_ours), jax.tree.leaves(g_conv)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_bfloat16_compute_keeps_float32_parameters() -> None:
    x = jnp.ones((1, 4, 4, 3))
    layer = PointwiseConv(2, dtype=jnp.bfloat16)
    variables = layer.init(jax.random.key(0), x)
    assert variables["params"]["kernel"].dtype == jnp.float32
    assert layer.apply(variables, x).dtype == jnp.bfloat16


class _FlaxNorm(nn.Module):
    """flax's BatchNorm followed by the residual add and ReLU, as the models used to write it."""

    train: bool

    @nn.compact
    def __call__(self, x, mask, add, relu, shift):
        x = x if shift is None else x + shift
        y = nn.BatchNorm(use_running_average=not self.train, momentum=0.9, epsilon=1e-5)(
            x, mask=mask
        )
        y = y if add is None else y + add
        return nn.relu(y) if relu else y


class _OurNorm(nn.Module):
    train: bool

    @nn.compact
    def __call__(self, x, mask, add, relu, shift):
        bn = BatchNorm(use_running_average=not self.train, momentum=0.9, epsilon=1e-5)
        return bn(x, mask=mask, add=add, relu=relu, shift=shift)


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("with_add", [False, True])
@pytest.mark.parametrize("with_mask", [False, True])
@pytest.mark.parametrize("with_shift", [False, True])
def test_batch_norm_matches_flax(train, relu, with_add, with_mask, with_shift) -> None:
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(6, 5, 4, 8)) * 3 + 1, jnp.float32)
    add = jnp.asarray(rng.normal(size=x.shape), jnp.float32) if with_add else None
    mask = jnp.asarray([1, 1, 0, 1, 1, 0], bool)[:, None, None, None] if with_mask else None
    shift = jnp.asarray(rng.normal(size=8), jnp.float32) if with_shift else None
    weights = jnp.asarray(rng.normal(size=x.shape), jnp.float32)
    ref_vars = _FlaxNorm(train).init(jax.random.key(0), x, mask, add, relu, shift)
    our_vars = _OurNorm(train).init(jax.random.key(0), x, mask, add, relu, shift)
    # Same variable names and initial values (checkpoints and conversion see no difference).
    assert jax.tree.structure(ref_vars) == jax.tree.structure(our_vars)
    for a, b in zip(jax.tree.leaves(ref_vars), jax.tree.leaves(our_vars)):
        np.testing.assert_array_equal(a, b)
    params = {"BatchNorm_0": {"scale": jnp.linspace(0.5, 2, 8), "bias": jnp.linspace(-1, 1, 8)}}
    stats = {"BatchNorm_0": {"mean": jnp.linspace(-0.5, 1.5, 8), "var": jnp.linspace(1, 4, 8)}}

    def loss(module, params, x, add, shift):
        y, updates = module.apply(
            {"params": params, "batch_stats": stats},
            x,
            mask,
            add,
            relu,
            shift,
            mutable=["batch_stats"],
        )
        return jnp.sum(y * weights), (y, updates)

    def run(module):
        grad = jax.value_and_grad(lambda *a: loss(module, *a), argnums=(0, 1, 2, 3), has_aux=True)
        return jax.jit(grad)(params, x, add, shift)

    (_, (y_ref, upd_ref)), g_ref = run(_FlaxNorm(train))
    (_, (y_our, upd_our)), g_our = run(_OurNorm(train))
    np.testing.assert_allclose(y_our, y_ref, rtol=1e-5, atol=1e-5)
    for a, b in zip(jax.tree.leaves(upd_our), jax.tree.leaves(upd_ref)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # Gradients of params, x and add; the shift's gradient is exactly zero with batch
    # statistics (it cancels), where the reference's is rounding noise around zero.
    for a, b in zip(jax.tree.leaves(g_our[:3]), jax.tree.leaves(g_ref[:3])):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    if with_shift:
        if train:
            np.testing.assert_array_equal(g_our[3], 0.0)
            np.testing.assert_allclose(g_ref[3], 0.0, atol=1e-3)
        else:
            np.testing.assert_allclose(g_our[3], g_ref[3], rtol=1e-4, atol=1e-4)


def test_batch_norm_refuses_a_mask_that_is_not_per_sample() -> None:
    x = jnp.ones((2, 3, 3, 4))
    with pytest.raises(ValueError, match="whole samples"):
        _OurNorm(True).init(jax.random.key(0), x, jnp.ones((2, 3, 3, 1), bool), None, False, None)


class _FlaxNormConv(nn.Module):
    """flax's BatchNorm, ReLU and convolution: what ``BatchNorm(lazy=True)`` + conv computes."""

    train: bool
    kernel: tuple[int, int]
    stride: int

    @nn.compact
    def __call__(self, x, mask):
        norm = nn.BatchNorm(
            use_running_average=not self.train, momentum=0.9, epsilon=1e-5, name="bn"
        )
        y = nn.relu(norm(x, mask=mask))
        pad = [(k // 2, k // 2) for k in self.kernel]
        return nn.Conv(5, self.kernel, strides=self.stride, padding=pad, name="conv")(y)


class _OurNormConv(nn.Module):
    train: bool
    kernel: tuple[int, int]
    stride: int
    chunk: int | None

    @nn.compact
    def __call__(self, x, mask):
        norm = BatchNorm(use_running_average=not self.train, momentum=0.9, epsilon=1e-5, name="bn")
        y = norm(x, mask=mask, relu=True, lazy=True)
        assert isinstance(y, Normalized)
        if self.kernel == (1, 1):
            return PointwiseConv(5, strides=self.stride, name="conv")(y)
        conv = GroupedInputConv(
            5,
            self.kernel,
            strides=self.stride,
            padding=self.kernel[0] // 2,
            input_grad_chunk=self.chunk,
            name="conv",
        )
        return conv(y)


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize(
    ("kernel", "stride", "chunk"),
    [((1, 1), 1, None), ((1, 1), 2, None), ((3, 3), 1, None), ((3, 3), 2, 2), ((7, 7), 2, 1)],
)
def test_pending_batch_norm_into_conv_matches_flax(train, kernel, stride, chunk) -> None:
    """``normalize_into``: same values, statistics and gradients as storing the map."""
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(4, 9, 8, 6)) * 2 + 0.5, jnp.float32)
    mask = jnp.asarray([1, 0, 1, 1], bool)[:, None, None, None]
    ours, ref = _OurNormConv(train, kernel, stride, chunk), _FlaxNormConv(train, kernel, stride)
    variables = ref.init(jax.random.key(0), x, mask)
    our_vars = ours.init(jax.random.key(0), x, mask)
    assert jax.tree.structure(variables) == jax.tree.structure(our_vars)
    params = jax.tree.map(lambda p: p + 0.2, variables["params"])
    stats = {"bn": {"mean": jnp.linspace(-0.5, 1.5, 6), "var": jnp.linspace(1, 4, 6)}}
    out_shape = jax.eval_shape(lambda: ref.apply(variables, x, mask, mutable=True)[0]).shape
    weights = jnp.asarray(rng.normal(size=out_shape), jnp.float32)

    def run(module):
        def loss(params, x):
            y, updates = module.apply(
                {"params": params, "batch_stats": stats}, x, mask, mutable=["batch_stats"]
            )
            return jnp.sum(y * weights), (y, updates)

        return jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(params, x)

    (_, (y_ref, upd_ref)), g_ref = run(ref)
    (_, (y_our, upd_our)), g_our = run(ours)
    np.testing.assert_allclose(y_our, y_ref, rtol=1e-5, atol=1e-5)
    for a, b in zip(jax.tree.leaves(upd_our), jax.tree.leaves(upd_ref)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    for a, b in zip(jax.tree.leaves(g_our), jax.tree.leaves(g_ref)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_pending_batch_norm_refuses_a_residual() -> None:
    x = jnp.ones((2, 3, 3, 4))
    with pytest.raises(ValueError, match="lazy"):
        BatchNorm().init(jax.random.key(0), x, add=x, lazy=True)


@pytest.mark.parametrize(
    ("shape", "window", "stride", "padding"),
    [
        ((2, 9, 8, 5), 3, 2, 1),
        ((1, 8, 8, 3), 2, 2, 0),
        ((2, 7, 6, 4), 3, 1, 1),
        ((1, 12, 11, 2), 3, 2, 1),
    ],
)
@pytest.mark.parametrize("with_nan", [False, True])
def test_max_pool_matches_torch_with_ties(shape, window, stride, padding, with_nan) -> None:
    rng = np.random.default_rng(0)
    # Small integers (and ReLU-like zeros) so that most windows hold a tie.
    x = np.maximum(rng.integers(-2, 3, size=shape), 0).astype(np.float32)
    if with_nan:
        x[0, 2, 3, 0] = np.nan
    y_torch = torch.from_numpy(x.transpose(0, 3, 1, 2)).requires_grad_(True)
    pooled = torch.nn.functional.max_pool2d(y_torch, window, stride, padding)
    g = rng.normal(size=pooled.shape).astype(np.float32)
    pooled.backward(torch.from_numpy(g))
    expected_y = pooled.detach().numpy().transpose(0, 2, 3, 1)
    expected_dx = y_torch.grad.numpy().transpose(0, 2, 3, 1)

    fn = jax.jit(lambda t: jax.vjp(lambda u: max_pool(u, window, stride, padding), t))
    y, vjp = fn(jnp.asarray(x))
    np.testing.assert_array_equal(y, expected_y)
    np.testing.assert_array_equal(y, max_pool(jnp.asarray(x), window, stride, padding))
    (dx,) = vjp(jnp.asarray(g.transpose(0, 2, 3, 1)))
    # Sums of the same terms in another order: equal within rounding.
    np.testing.assert_allclose(dx, expected_dx, rtol=1e-6, atol=1e-6)
    if not with_nan:
        # XLA's own gradient of nn.max_pool picks the same taps.
        pad = ((padding, padding), (padding, padding))
        _, flax_vjp = jax.vjp(lambda u: nn.max_pool(u, (window,) * 2, (stride,) * 2, pad), x)
        np.testing.assert_allclose(
            dx, flax_vjp(jnp.asarray(g.transpose(0, 2, 3, 1)))[0], rtol=1e-6, atol=1e-6
        )


def test_max_pool_refuses_a_window_beyond_its_index_type() -> None:
    with pytest.raises(ValueError, match="int8"):
        jax.grad(lambda u: max_pool(u, 12, 1, 0).sum())(jnp.ones((1, 12, 12, 1)))


@pytest.mark.parametrize(
    ("shape", "kernel", "stride", "padding"),
    [
        ((2, 17, 15, 3), 7, 2, 3),
        ((1, 9, 9, 4), 3, 1, 1),
        ((2, 12, 10, 3), 5, 2, 2),
        ((1, 8, 8, 2), 2, 2, 0),
        ((3, 11, 13, 9), 4, 3, 1),
    ],
)
@pytest.mark.parametrize(
    ("kernel_grad", "input_grad_chunk", "one_sample_at_a_time"),
    [
        ("patches", None, False),
        ("patches", None, True),
        ("taps", None, False),
        ("taps", 2, False),
        ("xla", 1, False),
    ],
)
def test_custom_gradients_match_xla(
    shape, kernel, stride, padding, kernel_grad, input_grad_chunk, one_sample_at_a_time, monkeypatch
) -> None:
    if one_sample_at_a_time:
        monkeypatch.setattr(layers, "PATCH_BYTES", 1)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=shape), jnp.float32)
    k = jnp.asarray(rng.normal(size=(kernel, kernel, shape[-1], 5)), jnp.float32)
    pad = ((padding, padding), (padding, padding))

    def plain(t, w):
        dims = ("NHWC", "HWIO", "NHWC")
        return jax.lax.conv_general_dilated(t, w, (stride, stride), pad, dimension_numbers=dims)

    ours = jax.jit(
        lambda t, w: conv_custom_grads(t, w, (stride, stride), pad, kernel_grad, input_grad_chunk)
    )
    y, vjp = jax.vjp(ours, x, k)
    y_ref, vjp_ref = jax.vjp(plain, x, k)
    np.testing.assert_allclose(y, y_ref, rtol=1e-6, atol=1e-6)
    g = jnp.asarray(rng.normal(size=y.shape), jnp.float32)
    for ours, expected in zip(vjp(g), vjp_ref(g)):
        np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize(("kernel_grad", "chunk"), [("patches", None), ("taps", 2), ("taps", None)])
def test_grouped_conv_with_custom_kernel_gradient_matches_flax_conv(kernel_grad, chunk) -> None:
    x = jax.random.normal(jax.random.key(0), (3, 20, 18, 7))
    ours = GroupedInputConv(
        6,
        (7, 7),
        strides=2,
        padding=3,
        use_bias=False,
        input_grad_chunk=chunk,
        kernel_grad=kernel_grad,
    )
    conv = nn.Conv(6, (7, 7), strides=2, padding=((3, 3), (3, 3)), use_bias=False)
    variables = ours.init(jax.random.key(1), x)
    # Two channel groups, as the SegModule's aligned features and skeleton maps.
    parts = (x[..., :3], x[..., 3:])
    loss = lambda module: lambda v, t: jnp.sum(jnp.sin(module.apply(v, t)))
    value, grads = jax.jit(jax.value_and_grad(loss(ours), argnums=(0, 1)))(variables, parts)
    value_ref, grads_ref = jax.value_and_grad(loss(conv), argnums=(0, 1))(variables, x)
    np.testing.assert_allclose(value, value_ref, rtol=1e-5)
    np.testing.assert_allclose(
        grads[0]["params"]["kernel"], grads_ref[0]["params"]["kernel"], rtol=1e-5, atol=1e-4
    )
    d_x = jnp.concatenate(grads[1], axis=-1)
    np.testing.assert_allclose(d_x, grads_ref[1], rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="kernel_grad must be one of"):
        GroupedInputConv(6, (7, 7), kernel_grad="patch").init(jax.random.key(1), x)


@pytest.mark.parametrize(
    ("shape", "kernel", "strides", "padding"),
    [
        ((2, 16, 16, 5), (7, 7), (2, 2), ((3, 3), (3, 3))),
        ((1, 15, 13, 4), (3, 3), (2, 2), ((1, 1), (1, 1))),
        ((2, 11, 12, 3), (3, 3), (3, 3), ((0, 0), (0, 0))),
        ((1, 10, 9, 3), (4, 3), (2, 1), ((1, 2), (0, 1))),
        ((2, 9, 9, 2), (1, 1), (2, 2), ((0, 0), (0, 0))),
    ],
)
def test_input_gradient_by_phases_matches_xla(shape, kernel, strides, padding) -> None:
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=shape), jnp.float32)
    k = jnp.asarray(rng.normal(size=(*kernel, shape[-1], 6)), jnp.float32)
    dims = ("NHWC", "HWIO", "NHWC")
    y, vjp = jax.vjp(
        lambda t: jax.lax.conv_general_dilated(t, k, strides, padding, dimension_numbers=dims), x
    )
    g = jnp.asarray(rng.normal(size=y.shape), jnp.float32)
    ours = jax.jit(conv_input_grad_by_phases, static_argnums=(2, 3, 4))(
        g, k, shape[1:3], strides, padding
    )
    np.testing.assert_allclose(ours, vjp(g)[0], rtol=1e-5, atol=1e-5)
