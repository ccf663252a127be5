"""Layers shared by the networks, written for the memory and speed of XLA's CPU training step.

- ``PointwiseConv``: a 1x1 convolution as a matrix product. XLA's CPU backend computes the
  weight gradient of a 1x1 convolution as a convolution whose window is the whole feature map
  (seen in the optimised HLO), which ran 1.65x slower forward + backward than the same layer
  written as a ``dot_general`` (benchmarks/RESULTS.md, bench_train). Same parameters
  (``kernel`` of shape (1, 1, C_in, C_out) and ``bias``, initialised as ``nn.Conv`` would), so
  checkpoints and the PyTorch conversion do not see the difference; on GPU and TPU both forms
  lower to the same matrix units.
- ``BatchNorm``: flax's BatchNorm function and variables, with the residual add and ReLU that
  follow it fused in, a backward pass that keeps only the input and the output
  (``affine_normalize``), and the preceding conv's bias absorbed (``shift``).
- ``conv_chunked_input_grad``: a convolution whose input gradient runs a few samples at a time.

The last two exist for memory: together they took the paper-size training step's XLA
temporaries from 11.6 to 8.5 GiB and its peak resident memory from 15.3 to about 11 GiB
(benchmarks/RESULTS.md).
"""

from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


class PointwiseConv(nn.Module):
    """1x1 convolution (NHWC, VALID padding, optional stride) as a channel contraction.

    Attributes:
        features: output channels.
        strides: spatial stride (a 1x1 kernel with stride ``s`` reads ``x[:, ::s, ::s]``).
        use_bias: add a bias.
        kernel_init: initialiser of the (1, 1, C_in, features) kernel.
        bias_init: initialiser of the bias.
        dtype: computation dtype.
        param_dtype: parameter dtype.
    """

    features: int
    strides: int = 1
    use_bias: bool = True
    kernel_init: Any = nn.initializers.lecun_normal()
    bias_init: Any = nn.initializers.zeros
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, split_bias: bool = False):
        """Args: x (N, H, W, C_in); split_bias: see below.

        Returns: (N, ceil(H / s), ceil(W / s), features); with ``split_bias`` the pair (output
        without the bias, bias), for a BatchNorm to absorb the bias (``BatchNorm(shift=...)``).
        """
        kernel = self.param(
            "kernel", self.kernel_init, (1, 1, x.shape[-1], self.features), self.param_dtype
        )
        if self.strides != 1:
            x = x[:, :: self.strides, :: self.strides]
        y = jax.lax.dot_general(
            x.astype(self.dtype),
            kernel[0, 0].astype(self.dtype),
            (((x.ndim - 1,), (0,)), ((), ())),
        )
        bias = None
        if self.use_bias:
            bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype)
        return add_or_split_bias(y, bias, split_bias, self.dtype)


def add_or_split_bias(y: jnp.ndarray, bias: jnp.ndarray | None, split: bool, dtype: Any):
    """``y + bias``, or with ``split`` the pair ``(y, bias)`` (bias None without one)."""
    if split:
        return y, bias
    return y if bias is None else y + bias.astype(dtype)


def _varying_axes(x) -> frozenset:
    """The mesh axes over which ``x`` varies inside ``shard_map`` (empty outside it)."""
    manual = getattr(jax.typeof(x), "manual_axis_type", None)
    return frozenset(manual.varying) if manual is not None else frozenset()


def _cotangent_like(ct: jnp.ndarray, primal: jnp.ndarray) -> jnp.ndarray:
    """Sums a custom VJP's cotangent over the mesh axes along which its primal input is invariant.

    Inside ``shard_map`` an invariant input (a ``pmean``-ed statistic, a replicated weight)
    is implicitly broadcast to every device; the transpose of that broadcast is a ``psum``,
    which ``jax.vjp`` inserts itself but a hand-written backward rule must do explicitly (its
    cotangents must have the input's type).
    """
    extra = _varying_axes(ct) - _varying_axes(primal)
    return jax.lax.psum(ct, tuple(sorted(extra))) if extra else ct


def _normalize_forward(x, mean, mul, bias, add, relu, dtype):
    y = (x.astype(mean.dtype) - mean) * mul + bias
    if add is not None:
        y = y + add.astype(y.dtype)
    if relu:
        y = jnp.maximum(y, 0)
    return y.astype(dtype)


@partial(jax.custom_vjp, nondiff_argnums=(5, 6))
def affine_normalize(x, mean, mul, bias, add, relu, dtype):
    """``act((x - mean) * mul + bias + add)``, keeping only ``x`` (and the output) for backward.

    Why a hand-written VJP: differentiating this expression with ``jax.vjp`` keeps the centred
    copy ``x - mean`` as a residual (for the gradient of ``mul``) beside ``x`` itself, which the
    statistics' gradient and the preceding convolution keep anyway, and the ReLU keeps its own
    mask. At the paper's sizes those copies were 3.3 GiB of the training step's 11.6 GiB of XLA
    temporaries (benchmarks/RESULTS.md). Here the backward pass recomputes ``x - mean`` inside
    its reductions, and takes the ReLU mask from the output, which the next layer keeps as its
    input anyway: what PyTorch's BatchNorm followed by an in-place ReLU stores.

    Args:
        x: (..., C) input (any float dtype; the arithmetic is in ``mean``'s dtype).
        mean, mul, bias: (C,) shift, scale (``scale * rsqrt(var + eps)``) and bias.
        add: None or an array of ``x``'s shape added before the activation (a residual).
        relu: apply a ReLU at the end.
        dtype: output dtype.

    Returns:
        An array of ``x``'s shape in ``dtype``.
    """
    return _normalize_forward(x, mean, mul, bias, add, relu, dtype)


def _affine_normalize_fwd(x, mean, mul, bias, add, relu, dtype):
    y = _normalize_forward(x, mean, mul, bias, add, relu, dtype)
    # Zero-size slices carry an input's dtype and mesh-axis type without keeping it alive.
    add_like = None if add is None else add.reshape(-1)[:0]
    return y, (x, mean, mul, bias[:0], y if relu else None, add_like)


def _affine_normalize_bwd(relu, dtype, residuals, g):
    x, mean, mul, bias_like, y, add_like = residuals
    # Without the barrier XLA's CSE merges ``x - mean`` below with the forward pass's, and the
    # centred copy is kept from the forward to the backward pass after all. Tying ``x`` to the
    # cotangent also keeps the recomputation where the cotangent exists.
    x, g = jax.lax.optimization_barrier((x, g))
    if relu:
        g = jnp.where(y > 0, g, jnp.zeros_like(g))
    axes = tuple(range(x.ndim - 1))
    g = g.astype(mean.dtype)
    d_bias = jnp.sum(g, axes)
    # sum(g * (x - mean)) without a broadcast ``mean`` operand: XLA's CPU backend hands large
    # reductions to YNNPACK, which needs every operand materialised at full size.
    d_mul = jnp.sum(g * x.astype(mean.dtype), axes) - mean * d_bias
    d_x = g * mul
    d_mean = -d_bias * mul
    d_add = None if add_like is None else _cotangent_like(g.astype(add_like.dtype), add_like)
    return (
        _cotangent_like(d_x.astype(x.dtype), x),
        _cotangent_like(d_mean, mean),
        _cotangent_like(d_mul, mul),
        _cotangent_like(d_bias, bias_like),
        d_add,
    )


affine_normalize.defvjp(_affine_normalize_fwd, _affine_normalize_bwd)


def _masked_moments(x: jnp.ndarray, mask: jnp.ndarray | None) -> jnp.ndarray:
    """(2, C) float32 E[x] and E[x^2] over all axes but the last, over the samples in ``mask``.

    Per-sample sums come first and the mask applies to those (N, C) sums, so no mask or
    statistic is ever broadcast to the full shape of ``x``.
    """
    x32 = x.astype(jnp.float32)
    spatial = tuple(range(1, x.ndim - 1))
    sums = jnp.stack([jnp.sum(x32, spatial), jnp.sum(jnp.square(x32), spatial)])  # (2, N, C)
    per_sample = float(np.prod([x.shape[a] for a in spatial]))
    if mask is None:
        return jnp.sum(sums, axis=1) / (x.shape[0] * per_sample)
    if jnp.shape(mask)[1:] and np.prod(jnp.shape(mask)[1:]) != 1:
        raise ValueError(f"BatchNorm: mask must select whole samples, got shape {jnp.shape(mask)}")
    weight = jnp.reshape(jnp.asarray(mask, jnp.float32), (x.shape[0], 1))
    return jnp.sum(sums * weight, axis=1) / (jnp.sum(weight) * per_sample)


class BatchNorm(nn.Module):
    """BatchNorm over the last axis with an optional fused residual add and ReLU.

    The same variables as ``flax.linen.BatchNorm`` (params ``scale``/``bias``, batch_stats
    ``mean``/``var``) and the same statistics (float32, ``E[x^2] - E[x]^2`` clipped at zero,
    optional sample mask, ``pmean`` over ``axis_name``), so checkpoints and the PyTorch
    conversion are unchanged; what differs is the backward pass, which stores less
    (``affine_normalize``).

    Attributes:
        use_running_average: normalise with the running statistics (eval) instead of the
            batch's (training, which also updates them).
        momentum: running-average decay.
        epsilon: added to the variance.
        axis_name: mapped axis over which the batch statistics are averaged, or None.
        dtype: output dtype (None: the input's).
        param_dtype: dtype of ``scale`` and ``bias``.
    """

    use_running_average: bool = False
    momentum: float = 0.99
    epsilon: float = 1e-5
    axis_name: str | None = None
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self,
        x: jnp.ndarray,
        mask: jnp.ndarray | None = None,
        add: jnp.ndarray | None = None,
        relu: bool = False,
        shift: jnp.ndarray | None = None,
    ) -> jnp.ndarray:
        """Normalises ``x + shift`` and applies ``add`` and the ReLU.

        Args:
            x: (N, ..., C).
            mask: (N,) or (N, 1, ..., 1) bool, the samples in the batch statistics.
            add: like x, summed before the ReLU (a residual branch).
            relu: end with a ReLU.
            shift: (C,) the bias of the layer before, left out of ``x`` (``split_bias`` of
                ``PointwiseConv``): with batch statistics it cancels and only enters the
                running mean, so its gradient is exactly zero (the sum of many rounding errors
                otherwise), and ``x + shift`` is never materialised or stored for the backward
                pass.

        Returns:
            Like x, in ``dtype``.
        """
        features = x.shape[-1]
        ra_mean = self.variable(
            "batch_stats", "mean", lambda s: jnp.zeros(s, jnp.float32), (features,)
        )
        ra_var = self.variable(
            "batch_stats", "var", lambda s: jnp.ones(s, jnp.float32), (features,)
        )
        scale = self.param("scale", nn.initializers.ones, (features,), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (features,), self.param_dtype)
        shift = jnp.zeros((features,), jnp.float32) if shift is None else shift
        shift = shift.astype(jnp.float32)
        if self.use_running_average:
            mean, var = ra_mean.value - shift, ra_var.value
        else:
            moments = _masked_moments(x, mask)
            if self.axis_name is not None and not self.is_initializing():
                moments = jax.lax.pmean(moments, self.axis_name)
            mean = moments[0]
            var = jnp.maximum(0.0, moments[1] - jnp.square(mean))
            if not self.is_initializing():
                new_mean = jax.lax.stop_gradient(mean + shift)
                ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * new_mean
                ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
        mul = jax.lax.rsqrt(var + self.epsilon) * scale.astype(jnp.float32)
        bias = bias.astype(jnp.float32)
        return affine_normalize(x, mean, mul, bias, add, relu, jnp.dtype(self.dtype or x.dtype))


def _conv_nhwc(x, kernel, strides, padding):
    return jax.lax.conv_general_dilated(
        x, kernel, strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


@partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def conv_chunked_input_grad(x, kernel, strides, padding, chunk):
    """An NHWC convolution whose input gradient is computed for ``chunk`` samples at a time.

    Why: XLA's CPU backend computes the input gradient of a strided convolution (a transposed
    convolution) in ``EigenTransposedConv2D``, which allocates a column buffer of (input
    positions x kh * kw * C_out) floats for the whole batch, outside XLA's own buffer plan. For
    the SegModule's 7x7/2 stem over 32 people that buffer is 1.5 GiB, and it set the training
    step's peak memory (found with gdb on the allocation; benchmarks/RESULTS.md). Computing
    the gradient group by group, each group waiting for the previous one, keeps one group's
    buffer at a time; the arithmetic and the result are unchanged.

    Args:
        x: (N, H, W, C_in).
        kernel: (kh, kw, C_in, C_out).
        strides: (sh, sw).
        padding: ((top, bottom), (left, right)).
        chunk: samples per group.

    Returns:
        (N, H', W', C_out).
    """
    return _conv_nhwc(x, kernel, strides, padding)


def _conv_chunked_fwd(x, kernel, strides, padding, chunk):
    return _conv_nhwc(x, kernel, strides, padding), (x, kernel)


def _conv_chunked_bwd(strides, padding, chunk, residuals, g):
    x, kernel = residuals
    _, kernel_vjp = jax.vjp(lambda k: _conv_nhwc(x, k, strides, padding), kernel)
    (d_kernel,) = kernel_vjp(g)
    parts = []
    for start in range(0, x.shape[0], chunk):
        g_group = g[start : start + chunk]
        if parts:
            # Order the groups (XLA could otherwise run independent ones at the same time).
            g_group, parts[-1] = jax.lax.optimization_barrier((g_group, parts[-1]))
        x_group = x[start : start + chunk]
        _, input_vjp = jax.vjp(lambda t: _conv_nhwc(t, kernel, strides, padding), x_group)
        parts.append(input_vjp(g_group)[0])
    d_x = jnp.concatenate(parts, axis=0)
    return _cotangent_like(d_x, x), _cotangent_like(d_kernel, kernel)


conv_chunked_input_grad.defvjp(_conv_chunked_fwd, _conv_chunked_bwd)
