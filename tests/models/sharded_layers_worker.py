"""Worker for test_layers_sharded.py: runs on 2 simulated devices (XLA_FLAGS set by the test).

Under ``jax.shard_map`` (check_vma on, as in training), our BatchNorm with cross-device
statistics (also pending into a convolution, ``normalize_into``) and ``conv_custom_grads``
must give the same gradients as flax's ``nn.BatchNorm`` (+ ReLU + ``nn.Conv``) and a plain
convolution, with the parameters replicated (invariant) or marked
varying (the training step's pattern). Exits non-zero, with numpy's message, on a mismatch.
"""

import sys
from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, PartitionSpec

from pose2seg_jax.models.layers import (
    BatchNorm,
    GroupedInputConv,
    PointwiseConv,
    conv_custom_grads,
)

AXIS = "data"


class _Norm(nn.Module):
    ours: bool
    train: bool

    @nn.compact
    def __call__(self, x):
        if self.ours:
            norm = BatchNorm(use_running_average=not self.train, axis_name=AXIS)
            return norm(x, relu=True)
        norm = nn.BatchNorm(use_running_average=not self.train, momentum=0.99, axis_name=AXIS)
        return jax.nn.relu(norm(x))


class _NormConv(nn.Module):
    """BatchNorm + ReLU into a conv: ours pending (``lazy``, ``normalize_into``) or flax's."""

    ours: bool
    pointwise: bool

    @nn.compact
    def __call__(self, x):
        if self.ours:
            y = BatchNorm(axis_name=AXIS, name="bn")(x, relu=True, lazy=True)
            if self.pointwise:
                return PointwiseConv(4, strides=2, name="conv")(y)
            return GroupedInputConv(
                4, (3, 3), strides=2, padding=1, input_grad_chunk=1, name="conv"
            )(y)
        y = jax.nn.relu(nn.BatchNorm(use_running_average=False, axis_name=AXIS, name="bn")(x))
        if self.pointwise:
            return nn.Conv(4, (1, 1), strides=2, padding="VALID", name="conv")(y)
        return nn.Conv(4, (3, 3), strides=2, padding=((1, 1), (1, 1)), name="conv")(y)


def _sharded_grads(mesh, fn, params, *data):
    """d sum(fn(params, data)) / d params, the data split over the mesh, params replicated.

    Two ways, as ``[invariant, varying]``: the params left replicated (shard_map sums their
    gradients implicitly), and marked varying with an explicit ``psum`` (the training step's).
    """

    def per_device(varying):
        def grads(params, *data):
            def loss(p):
                return jnp.sum(fn(p, *data))

            if not varying:
                return jax.grad(loss)(params)
            params = jax.tree.map(lambda p: jax.lax.pcast(p, AXIS, to="varying"), params)
            return jax.lax.psum(jax.grad(loss)(params), AXIS)

        return grads

    specs = (PartitionSpec(),) + (PartitionSpec(AXIS),) * len(data)
    return [
        jax.jit(jax.shard_map(per_device(v), mesh=mesh, in_specs=specs, out_specs=PartitionSpec()))(
            params, *data
        )
        for v in (False, True)
    ]


def _norm_fn(ours: bool, train: bool, stats):
    """``(params, weights, x) -> weights * norm(x)`` for our BatchNorm or flax's."""

    def apply(p, w, xs):
        y, _ = _Norm(ours, train).apply(
            {"params": p, "batch_stats": stats}, xs, mutable=["batch_stats"]
        )
        return y * w

    return apply


def _sharded_input_grad(mesh, fn, params, weights, x):
    """d sum(fn(params, weights, x)) / dx, weights and x split over the mesh."""

    def per_device(p, w, xs):
        return jax.grad(lambda t: jnp.sum(fn(p, w, t)))(xs)

    specs = (PartitionSpec(), PartitionSpec(AXIS), PartitionSpec(AXIS))
    mapped = jax.shard_map(per_device, mesh=mesh, in_specs=specs, out_specs=PartitionSpec(AXIS))
    return jax.jit(mapped)(params, weights, x)


def main() -> None:
    assert jax.device_count() == 2, jax.devices()
    mesh = jax.make_mesh((2,), (AXIS,), axis_types=(AxisType.Auto,))
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(4, 5, 6, 8)) * 2 + 0.5, jnp.float32)
    weights = jnp.asarray(rng.normal(size=x.shape), jnp.float32)
    for train in (True, False):
        variables = _Norm(True, train).init(jax.random.key(0), x)
        stats = {"BatchNorm_0": {"mean": jnp.linspace(-1, 1, 8), "var": jnp.linspace(1, 3, 8)}}
        ours, ref = _norm_fn(True, train, stats), _norm_fn(False, train, stats)
        got = _sharded_grads(mesh, ours, variables["params"], weights, x)
        want = _sharded_grads(mesh, ref, variables["params"], weights, x)
        for g, w in zip(got, want):
            for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(w)):
                np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4, err_msg=f"train={train}")
        # And the input gradient, for data split over the devices.
        grad_x, want_x = (
            _sharded_input_grad(mesh, fn, variables["params"], weights, x) for fn in (ours, ref)
        )
        np.testing.assert_allclose(grad_x, want_x, rtol=1e-4, atol=1e-4)

    # BatchNorm + ReLU pending into a convolution (params and input gradients).
    out_w = jnp.asarray(rng.normal(size=(4, 3, 3, 4)), jnp.float32)
    for pointwise in (True, False):
        variables = _NormConv(True, pointwise).init(jax.random.key(1), x)
        variables = jax.tree.map(lambda v: v + 0.1, variables)

        def make(ours, pointwise=pointwise, stats=variables["batch_stats"]):
            def apply(p, w, xs):
                y, _ = _NormConv(ours, pointwise).apply(
                    {"params": p, "batch_stats": stats}, xs, mutable=["batch_stats"]
                )
                return y * w

            return apply

        for got, want in zip(
            _sharded_grads(mesh, make(True), variables["params"], out_w, x),
            _sharded_grads(mesh, make(False), variables["params"], out_w, x),
        ):
            for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
                np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4, err_msg=f"{pointwise=}")
        grad_x, want_x = (
            _sharded_input_grad(mesh, make(ours), variables["params"], out_w, x)
            for ours in (True, False)
        )
        np.testing.assert_allclose(grad_x, want_x, rtol=1e-4, atol=1e-4)

    kernel = jnp.asarray(rng.normal(size=(3, 3, 8, 4)), jnp.float32)
    conv_w = jnp.asarray(rng.normal(size=(4, 3, 3, 4)), jnp.float32)
    pads = ((1, 1), (1, 1))

    def plain(k, w, xs):
        dims = ("NHWC", "HWIO", "NHWC")
        return jax.lax.conv_general_dilated(xs, k, (2, 2), pads, dimension_numbers=dims) * w

    # Each kernel-gradient method, with the input gradient chunked and all at once.
    for kernel_grad, chunk in (("xla", 1), ("patches", None), ("taps", 1), ("taps", None)):
        custom = partial(_custom_conv, pads=pads, kernel_grad=kernel_grad, chunk=chunk)
        for g, w in zip(
            _sharded_grads(mesh, custom, kernel, conv_w, x),
            _sharded_grads(mesh, plain, kernel, conv_w, x),
        ):
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4, err_msg=kernel_grad)
    print("ok")


def _custom_conv(k, w, xs, pads, kernel_grad, chunk):
    return conv_custom_grads(xs, k, (2, 2), pads, kernel_grad, chunk) * w


if __name__ == "__main__":
    sys.exit(main())
