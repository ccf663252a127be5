"""PointwiseConv against flax's nn.Conv and PyTorch; BatchNorm against flax's nn.BatchNorm."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from pose2seg_jax.models.layers import BatchNorm, PointwiseConv


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
