"""PointwiseConv against flax's nn.Conv and PyTorch's 1x1 convolution."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from pose2seg_jax.models.layers import PointwiseConv


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
