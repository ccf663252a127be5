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
  (``affine_normalize``), and the preceding conv's bias absorbed (``shift``). With
  ``lazy=True`` it returns the pending output (``Normalized``) for the convolution that consumes
  it, which then recomputes it in the backward pass instead of storing it (``normalize_into``).
- ``GroupedInputConv``: a convolution over several channel groups without concatenating them,
  whose gradients may be computed the ways XLA's CPU backend runs fastest
  (``conv_custom_grads``): the input gradient a few samples at a time, the kernel gradient as
  one matrix product over the input's patches (the ResNet stem) or one per kernel tap (the
  paper's SegModule stem).
- ``reference_batch_norm``: the networks' BatchNorm settings (PyTorch's defaults).
- ``max_pool``: ``nn.max_pool`` with a backward pass that keeps a one-byte argmax instead of
  XLA's four int32 index maps (the ResNet stem's pool).

The BatchNorm pieces and the chunked input gradient exist for memory: together they took the
paper-size training step's XLA temporaries from 11.6 to 7.2 GiB and its peak resident memory
from 15.3 GiB (1.48x PyTorch's) to 9.8 GiB (0.95x; 9.7 GiB, 0.94x, with Affine-Align's
hand-written gradient; 8.8 GiB, 0.87x, after the stem's gradients below replaced two Eigen
kernels; RESULTS.md). The stems' kernel gradients, the strided
input gradient by phases and ``max_pool`` exist for speed (XLA's CPU lowering of those
gradients was the largest single cost of the demo's training step).
"""

from functools import partial
from typing import Any

import flax.linen as nn
import flax.struct
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
        """Args: x (N, H, W, C_in), or a pending BatchNorm output; split_bias: see below.

        Returns: (N, ceil(H / s), ceil(W / s), features); with ``split_bias`` the pair (output
        without the bias, bias), for a BatchNorm to absorb the bias (``BatchNorm(shift=...)``).
        """
        kernel = self.param(
            "kernel", self.kernel_init, (1, 1, x.shape[-1], self.features), self.param_dtype
        )
        conv = partial(_pointwise, strides=self.strides, dtype=self.dtype)
        if isinstance(x, Normalized):
            y = normalize_into(conv, x, kernel)
        else:
            y = conv(x, kernel)
        bias = None
        if self.use_bias:
            bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype)
        return add_or_split_bias(y, bias, split_bias, self.dtype)


def _pointwise(x, kernel, strides, dtype):
    if strides != 1:
        x = x[:, ::strides, ::strides]
    return jax.lax.dot_general(
        x.astype(dtype), kernel[0, 0].astype(dtype), (((x.ndim - 1,), (0,)), ((), ()))
    )


def add_or_split_bias(y: jnp.ndarray, bias: jnp.ndarray | None, split: bool, dtype: Any):
    """``y + bias``, or with ``split`` the pair ``(y, bias)`` (bias None without one)."""
    if split:
        return y, bias
    return y if bias is None else y + bias.astype(dtype)


def _varying_axes(x) -> frozenset:
    """The mesh axes over which ``x`` varies inside ``shard_map`` (empty outside it)."""
    manual = getattr(jax.typeof(x), "manual_axis_type", None)
    return frozenset(manual.varying) if manual is not None else frozenset()


def cotangent_like(ct: jnp.ndarray, primal: jnp.ndarray) -> jnp.ndarray:
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


def _normalize_backward(x, mean, mul, y, g):
    """Cotangents of ``(x, mean, mul, bias)`` of ``act((x - mean) * mul + bias (+ add))``.

    ``y`` is the output (its sign is the ReLU's mask) or None without a ReLU. Also returns the
    cotangent after the ReLU (that of ``bias`` and ``add`` per element).
    """
    if y is not None:
        g = jnp.where(y > 0, g, jnp.zeros_like(g))
    axes = tuple(range(x.ndim - 1))
    g = g.astype(mean.dtype)
    d_bias = jnp.sum(g, axes)
    # sum(g * (x - mean)) without a broadcast ``mean`` operand: XLA's CPU backend hands large
    # reductions to YNNPACK, which needs every operand materialised at full size.
    d_mul = jnp.sum(g * x.astype(mean.dtype), axes) - mean * d_bias
    d_x = g * mul
    d_mean = -d_bias * mul
    return d_x, d_mean, d_mul, d_bias, g


def _affine_normalize_bwd(relu, dtype, residuals, g):
    x, mean, mul, bias_like, y, add_like = residuals
    # Without the barrier XLA's CSE merges ``x - mean`` below with the forward pass's, and the
    # centred copy is kept from the forward to the backward pass after all. Tying ``x`` to the
    # cotangent also keeps the recomputation where the cotangent exists.
    x, g = jax.lax.optimization_barrier((x, g))
    d_x, d_mean, d_mul, d_bias, g = _normalize_backward(x, mean, mul, y if relu else None, g)
    d_add = None if add_like is None else cotangent_like(g.astype(add_like.dtype), add_like)
    return (
        cotangent_like(d_x.astype(x.dtype), x),
        cotangent_like(d_mean, mean),
        cotangent_like(d_mul, mul),
        cotangent_like(d_bias, bias_like),
        d_add,
    )


affine_normalize.defvjp(_affine_normalize_fwd, _affine_normalize_bwd)


@flax.struct.dataclass
class Normalized:
    """A BatchNorm's output ``act((x - mean) * mul + bias)`` not computed yet.

    ``BatchNorm(..., lazy=True)`` returns this for a convolution that is its only consumer
    (``PointwiseConv``, ``GroupedInputConv``), which then runs ``normalize_into``: the
    normalised map is never stored for the backward pass, only ``x`` (kept anyway).
    """

    x: jax.Array
    mean: jax.Array
    mul: jax.Array
    bias: jax.Array
    relu: bool = flax.struct.field(pytree_node=False)
    dtype: Any = flax.struct.field(pytree_node=False)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.x.shape


def normalize_into(conv, inputs: Normalized, kernel: jax.Array) -> jax.Array:
    """``conv(act((x - mean) * mul + bias), kernel)``, recomputing the map in the backward pass.

    Why a hand-written VJP: differentiated as written, the convolution keeps its input (the
    normalised, ReLU-ed map) for its weight gradient, beside the BatchNorm's input ``x`` that
    the statistics' gradient keeps: two full maps per layer, as PyTorch keeps. Here only ``x``
    is kept and the backward pass recomputes the map from it (one elementwise pass) just before
    the convolution's own backward. In a bottleneck block that drops the two ``width``-channel
    maps of the block from the stored activations (benchmarks/RESULTS.md, bench_train).

    Args:
        conv: ``conv(y, kernel) -> out``, a pure function (hashable: it is a static argument).
        inputs: the pending BatchNorm output.
        kernel: the convolution's kernel, differentiated.

    Returns:
        ``conv``'s output.
    """
    return _normalize_into(
        conv, inputs.relu, inputs.dtype, inputs.x, inputs.mean, inputs.mul, inputs.bias, kernel
    )


@partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _normalize_into(conv, relu, dtype, x, mean, mul, bias, kernel):
    return conv(_normalize_forward(x, mean, mul, bias, None, relu, dtype), kernel)


def _normalize_into_fwd(conv, relu, dtype, x, mean, mul, bias, kernel):
    out = conv(_normalize_forward(x, mean, mul, bias, None, relu, dtype), kernel)
    return out, (x, mean, mul, bias, kernel)


def _normalize_into_bwd(conv, relu, dtype, residuals, g):
    x, mean, mul, bias, kernel = residuals
    # The recomputation must wait for the cotangent: scheduled earlier, it would hold the map
    # from the start of the backward pass, as storing it did. An optimization barrier does not
    # do it (XLA removes barriers before scheduling), a data dependency does: a zero read from
    # the cotangent (``v * 0`` is not folded for floats, as ``nan * 0`` is nan). It also keeps
    # XLA's CSE from merging the recomputation with the forward pass's map.
    bias_after_g = bias + g.reshape(-1)[0].astype(bias.dtype) * 0
    y = _normalize_forward(x, mean, mul, bias_after_g, None, relu, dtype)
    _, conv_vjp = jax.vjp(conv, y, kernel)
    d_y, d_kernel = conv_vjp(g)
    d_x, d_mean, d_mul, d_bias, _ = _normalize_backward(x, mean, mul, y if relu else None, d_y)
    return (
        cotangent_like(d_x.astype(x.dtype), x),
        cotangent_like(d_mean, mean),
        cotangent_like(d_mul, mul),
        cotangent_like(d_bias, bias),
        cotangent_like(d_kernel, kernel),
    )


_normalize_into.defvjp(_normalize_into_fwd, _normalize_into_bwd)


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
        lazy: bool = False,
    ) -> jnp.ndarray | Normalized:
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
            lazy: return the pending output (``Normalized``) for the one convolution that
                consumes it (``normalize_into``); not with ``add``.

        Returns:
            Like x, in ``dtype`` (a ``Normalized`` of it with ``lazy``).
        """
        if lazy and add is not None:
            raise ValueError("BatchNorm: lazy=True does not take a residual `add`")
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
        dtype = jnp.dtype(self.dtype or x.dtype)
        if lazy:
            return Normalized(x, mean, mul, bias, relu=relu, dtype=dtype)
        return affine_normalize(x, mean, mul, bias, add, relu, dtype)


def reference_batch_norm(
    train: bool, axis_name: str | None, dtype: Any, param_dtype: Any, name: str
) -> BatchNorm:
    """The networks' BatchNorm: PyTorch's defaults (momentum 0.1, i.e. decay 0.9; eps 1e-5).

    Args:
        train: batch statistics (updating the running ones) rather than the running ones.
        axis_name: mesh axis for cross-device statistics, or None.
        dtype: output dtype.
        param_dtype: dtype of scale and bias.
        name: the module name (the reference's parameter name).
    """
    return BatchNorm(
        use_running_average=not train,
        momentum=0.9,
        epsilon=1e-5,
        axis_name=axis_name,
        dtype=dtype,
        param_dtype=param_dtype,
        name=name,
    )


def _conv_nhwc(x, kernel, strides, padding):
    return jax.lax.conv_general_dilated(
        x, kernel, strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


@partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def conv_custom_grads(x, kernel, strides, padding, kernel_grad="xla", input_grad_chunk=None):
    """An NHWC convolution whose gradients are computed the way XLA's CPU backend runs fastest.

    The forward pass is XLA's convolution. In the backward pass:

    - ``input_grad_chunk``: the input gradient is computed for this many samples at a time.
      Why: XLA's CPU backend computes the input gradient of a strided convolution (a
      transposed convolution) in ``EigenTransposedConv2D``, which allocates a column buffer of
      (input positions x kh * kw * C_out) floats for the whole batch, outside XLA's own buffer
      plan. For the SegModule's 7x7/2 stem over 32 people that buffer is 1.5 GiB, and it set the
      training step's peak memory (found with gdb on the allocation; benchmarks/RESULTS.md).
      Computing the gradient group by group, each group waiting for the previous one, keeps one
      group's buffer at a time. A strided convolution's groups avoid that path altogether:
      ``conv_input_grad_by_phases`` computes them as stride-1 convolutions. None: XLA's input
      gradient for the whole batch (dropped when, as for images, nothing needs it).
    - ``kernel_grad``: "xla" (XLA's own: for a strided convolution, a convolution with a dilated
      window, the output gradient as the window), "patches" (``_patches_kernel_grad``: one
      matrix product over the patch matrix, for few input channels, as the ResNet stem's three)
      or "taps" (``_taps_kernel_grad``: one matrix product per kernel tap, for many input and
      output channels, as the paper's SegModule stem). Which is fastest depends on the sizes
      (``benchmarks/bench_stem_grad.py``); all compute the same sum.

    Args:
        x: (N, H, W, C_in).
        kernel: (kh, kw, C_in, C_out).
        strides: (sh, sw).
        padding: ((top, bottom), (left, right)).
        kernel_grad: "xla", "patches" or "taps".
        input_grad_chunk: samples per input-gradient group, or None.

    Returns:
        (N, H', W', C_out).
    """
    return _conv_nhwc(x, kernel, strides, padding)


def _conv_custom_fwd(x, kernel, strides, padding, kernel_grad, input_grad_chunk):
    if kernel_grad not in KERNEL_GRADS:
        raise ValueError(f"kernel_grad must be one of {sorted(KERNEL_GRADS)}, got {kernel_grad!r}")
    return _conv_nhwc(x, kernel, strides, padding), (x, kernel)


def _conv_custom_bwd(strides, padding, kernel_grad, input_grad_chunk, residuals, g):
    x, kernel = residuals
    d_kernel = KERNEL_GRADS[kernel_grad](x, g, kernel, strides, padding)
    if input_grad_chunk is None:
        _, input_vjp = jax.vjp(lambda t: _conv_nhwc(t, kernel, strides, padding), x)
        (d_x,) = input_vjp(g)
    else:
        d_x = _chunked_input_grad(x, g, kernel, strides, padding, input_grad_chunk)
    return cotangent_like(d_x, x), cotangent_like(d_kernel.astype(kernel.dtype), kernel)


conv_custom_grads.defvjp(_conv_custom_fwd, _conv_custom_bwd)


def _chunked_input_grad(x, g, kernel, strides, padding, chunk):
    parts = []
    for start in range(0, x.shape[0], chunk):
        g_group = g[start : start + chunk]
        if parts:
            # Order the groups (XLA could otherwise run independent ones at the same time).
            g_group, parts[-1] = jax.lax.optimization_barrier((g_group, parts[-1]))
        if max(strides) > 1:
            parts.append(conv_input_grad_by_phases(g_group, kernel, x.shape[1:3], strides, padding))
        else:
            x_group = x[start : start + chunk]
            _, input_vjp = jax.vjp(lambda t: _conv_nhwc(t, kernel, strides, padding), x_group)
            parts.append(input_vjp(g_group)[0])
    return jnp.concatenate(parts, axis=0)


def _xla_kernel_grad(x, g, kernel, strides, padding):
    _, kernel_vjp = jax.vjp(lambda k: _conv_nhwc(x, k, strides, padding), kernel)
    return kernel_vjp(g)[0]


# The largest patch matrix ``_patches_kernel_grad`` builds at once.
PATCH_BYTES = 64 * 2**20


def _patches_kernel_grad(x, g, kernel, strides, padding):
    """The kernel gradient as matrix products over the input's patches, in sample groups.

    Why: XLA's CPU backend computes the kernel gradient of a strided convolution as a
    convolution with a dilated window, which ran the ResNet stem's (7x7/2, 3 input channels) at
    38 ms for the demo's two 288-pixel images and 971 ms for the paper's four 512-pixel ones.
    Over few input channels the patches are small: the (kh * kw * C_in, N * H' * W') patch
    matrix, gathered channel-first by strided slices, times the (N * H' * W', C_out) output
    gradient takes 14 and 135 ms (``benchmarks/bench_stem_grad.py``); samples are grouped so
    that no patch matrix exceeds ``PATCH_BYTES``.
    """
    kh, kw, c, _ = kernel.shape
    sample_bytes = kh * kw * c * g.shape[1] * g.shape[2] * x.dtype.itemsize
    group = max(1, PATCH_BYTES // sample_bytes)
    d_kernel = None
    for start in range(0, x.shape[0], group):
        x_group, g_group = x[start : start + group], g[start : start + group]
        if d_kernel is not None:
            x_group, g_group, d_kernel = jax.lax.optimization_barrier((x_group, g_group, d_kernel))
        part = _patch_matrix_product(x_group, g_group, kernel.shape, strides, padding)
        d_kernel = part if d_kernel is None else d_kernel + part
    return d_kernel


def _patch_matrix_product(x, g, kernel_shape, strides, padding):
    """sum over positions of patch outer g, for x (N, H, W, C_in) and g (N, H', W', C_out)."""
    kh, kw, c, features = kernel_shape
    n, out_h, out_w, _ = g.shape
    xt = jnp.pad(jnp.transpose(x, (3, 0, 1, 2)), ((0, 0), (0, 0), *padding))
    taps = list(_window_taps(xt, (kh, kw), strides, (out_h, out_w), axes=(2, 3)))
    patches = jnp.stack(taps).reshape(kh * kw * c, n * out_h * out_w)
    # Sums over every position of the batch: accumulated in float32 also for bfloat16 inputs.
    d_kernel = jax.lax.dot(
        patches, g.reshape(n * out_h * out_w, features), preferred_element_type=jnp.float32
    )
    return d_kernel.reshape(kernel_shape)


def _taps_kernel_grad(x, g, kernel, strides, padding):
    """The kernel gradient as one (C_in, N * H' * W') x (N * H' * W', C_out) product per tap.

    Why: for the paper's SegModule stem (7x7/2, 311 -> 256 channels, 32 people) XLA's CPU
    backend's dilated-window convolution took 22-24 s, a seventh of the paper-size training
    step; the 49 products run at matrix-product speed (2.6 s; ``bench_stem_grad.py``). XLA's
    stride-1 3x3 kernel gradients were as slow (3.9 s against 0.38 s for each of the
    SegModule's units; 2-6x for ResNet-50's); with both, the step went from 0.61x to 1.38x
    PyTorch's speed (benchmarks/RESULTS.md). The padded input is split once into its stride
    phases, channel-first, so that each tap is a contiguous window of one phase; a loop over the
    taps keeps one tap's copy alive at a time. With few output channels (the demo's 16) the
    products are thin and XLA's own is faster.
    """
    kh, kw, c, features = kernel.shape
    n, out_h, out_w, _ = g.shape
    (sh, sw), ((top, _), (left, _)) = strides, padding
    # Phase (a, b) row u, column v is padded input (sh * u + a, sw * v + b); tap (i, j) reads
    # phase (i % sh, j % sw) from row i // sh, column j // sw on.
    rows, cols = out_h + (kh - 1) // sh, out_w + (kw - 1) // sw
    height, width = x.shape[1:3]
    bottom, right = max(0, rows * sh - height - top), max(0, cols * sw - width - left)
    xp = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))[:, : rows * sh, : cols * sw]
    phases = xp.reshape(n, rows, sh, cols, sw, c).transpose(2, 4, 5, 0, 1, 3)
    phases = phases.reshape(sh * sw, c, n, rows, cols)
    g_rows = g.reshape(n * out_h * out_w, features)

    def one_tap(t, d_kernel):
        i, j = t // kw, t % kw
        start = ((i % sh) * sw + j % sw, 0, 0, i // sh, j // sw)
        tap = jax.lax.dynamic_slice(phases, start, (1, c, n, out_h, out_w))
        # Sums over every position of the batch: accumulated in float32 also for bfloat16.
        d_tap = jax.lax.dot(
            tap.reshape(c, n * out_h * out_w), g_rows, preferred_element_type=jnp.float32
        )
        return jax.lax.dynamic_update_slice(d_kernel, d_tap[None], (t, 0, 0))

    d_kernel = jnp.zeros((kh * kw, c, features), jnp.float32)
    # Inside shard_map the loop's carry must vary over the mesh axes its products vary over.
    axes = tuple(sorted(_varying_axes(x) | _varying_axes(g)))
    if axes:
        d_kernel = jax.lax.pcast(d_kernel, axes, to="varying")
    return jax.lax.fori_loop(0, kh * kw, one_tap, d_kernel).reshape(kernel.shape)


KERNEL_GRADS = {"xla": _xla_kernel_grad, "patches": _patches_kernel_grad, "taps": _taps_kernel_grad}


def conv_input_grad_by_phases(g, kernel, in_hw, strides, padding):
    """The input gradient of a strided NHWC convolution as stride-1 convolutions, one per phase.

    Why: XLA's CPU backend runs the input gradient of a strided convolution as a transposed
    convolution (``EigenTransposedConv2D``: a column buffer of kh * kw * C_out floats per input
    position, then a scatter-add of the columns). Split by the parity of the (padded) input
    position instead: the rows r = s * u + a only receive the kernel taps a, a + s, ..., so each
    of the s_h * s_w phases is an ordinary stride-1 convolution of the output gradient with the
    flipped sub-kernel, which XLA runs as a forward convolution (its fast path), with no column
    buffer. The SegModule stem's (7x7/2, 8 people, 64x64x16) ran 3.4x faster than XLA's, the
    paper's (32 people, 64x64x256) 1.5x (benchmarks/RESULTS.md); the result is the same sum.

    Args:
        g: (N, H', W', C_out) gradient of the convolution's output.
        kernel: (kh, kw, C_in, C_out).
        in_hw: (H, W) of the convolution's input.
        strides: (sh, sw).
        padding: ((top, bottom), (left, right)).

    Returns:
        (N, H, W, C_in).
    """
    n, out_h, out_w, _ = g.shape
    (sh, sw), ((top, bottom), (left, right)) = strides, padding
    height, width = in_hw
    # Phase (a, b) holds the padded input positions (sh * u + a, sw * v + b).
    rows, cols = -(-(height + top + bottom) // sh), -(-(width + left + right) // sw)
    phases = []
    for a in range(sh):
        for b in range(sw):
            sub = kernel[a::sh, b::sw]
            taps_h, taps_w = sub.shape[:2]
            if taps_h == 0 or taps_w == 0:
                phases.append(jnp.zeros((n, rows, cols, kernel.shape[2]), g.dtype))
                continue
            # dx[s u + a] = sum_m g[u - m] W[a + s m]: a correlation with the flipped taps.
            sub = jnp.flip(sub, (0, 1)).transpose(0, 1, 3, 2)
            pad = ((taps_h - 1, rows - out_h), (taps_w - 1, cols - out_w))
            phases.append(_conv_nhwc(g, sub, (1, 1), pad))
    c_in = kernel.shape[2]
    full = jnp.stack(phases, axis=3).reshape(n, rows, cols, sh, sw, c_in)
    full = full.transpose(0, 1, 3, 2, 4, 5).reshape(n, rows * sh, cols * sw, c_in)
    return full[:, top : top + height, left : left + width]


# Kaiming normal (fan_out, ReLU gain): the reference's initialisation of every convolution.
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


class GroupedInputConv(nn.Module):
    """A convolution over the channel concatenation of several inputs, without concatenating.

    conv(concat(x_1, ..., x_n), K) = sum_i conv(x_i, K_i) with K split along its input
    channels. One kernel parameter (kh, kw, sum C_i, features) and optionally one bias are
    declared, as a single ``nn.Conv`` would (same names, same initialisation), so weights
    convert unchanged. Skipping the concatenation of the SegModule's 256 aligned channels with
    the 55 skeleton channels saves writing and re-reading a (B*P, 64, 64, 311) array. With one
    input it is a plain convolution, which also takes a pending BatchNorm output
    (``Normalized``, see ``normalize_into``).

    Attributes:
        features: output channels.
        kernel_size: (kh, kw).
        strides: spatial stride.
        padding: symmetric spatial padding.
        use_bias: declare and add a bias.
        input_grad_chunk: the input gradient is computed for this many samples at a time
            (``conv_custom_grads``: bounds the memory of XLA's CPU transposed convolution; the
            result is the same); None: all at once.
        kernel_grad: how the kernel gradient is computed (``conv_custom_grads``): "xla",
            "patches" (few input channels, as the ResNet stem's three) or "taps" (many input
            and output channels, as the paper's SegModule stem).
        dtype: computation dtype.
        param_dtype: parameter dtype.
    """

    features: int
    kernel_size: tuple[int, int]
    strides: int = 1
    padding: int = 0
    use_bias: bool = True
    input_grad_chunk: int | None = 2
    kernel_grad: str = "xla"
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, split_bias: bool = False):
        """Args: x, an array, a ``Normalized``, or a sequence of arrays (the channel groups);
        split_bias: return (output without the bias, bias) instead of the output (see
        ``PointwiseConv``)."""
        parts = [x] if isinstance(x, jnp.ndarray | np.ndarray | Normalized) else list(x)
        channels = [int(p.shape[-1]) for p in parts]
        kernel = self.param(
            "kernel", conv_init, (*self.kernel_size, sum(channels), self.features), self.param_dtype
        )
        bias = None
        if self.use_bias:
            bias = self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype)
        if self.kernel_grad not in KERNEL_GRADS:
            raise ValueError(
                f"GroupedInputConv {self.name}: kernel_grad must be one of "
                f"{sorted(KERNEL_GRADS)}, got {self.kernel_grad!r}"
            )
        pad = ((self.padding, self.padding), (self.padding, self.padding))
        if self.kernel_grad == "xla" and self.input_grad_chunk is None:
            convolve = _conv_nhwc
        else:
            convolve = partial(
                _conv_custom,
                kernel_grad=self.kernel_grad,
                input_grad_chunk=self.input_grad_chunk,
            )
        conv = partial(
            _cast_conv,
            strides=(self.strides, self.strides),
            padding=pad,
            convolve=convolve,
            dtype=self.dtype,
        )
        out, start = None, 0
        for part, c in zip(parts, channels):
            k = kernel[:, :, start : start + c]
            y = normalize_into(conv, part, k) if isinstance(part, Normalized) else conv(part, k)
            out = y if out is None else out + y
            start += c
        return add_or_split_bias(out, bias, split_bias, self.dtype)


def _conv_custom(x, kernel, strides, padding, kernel_grad, input_grad_chunk):
    return conv_custom_grads(x, kernel, strides, padding, kernel_grad, input_grad_chunk)


def _cast_conv(x, kernel, strides, padding, convolve, dtype):
    """``convolve(x, kernel, strides, padding)`` in ``dtype``."""
    return convolve(x.astype(dtype), kernel.astype(dtype), strides, padding)


@partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def max_pool(x: jnp.ndarray, window: int = 3, stride: int = 2, padding: int = 1) -> jnp.ndarray:
    """Square max-pooling (NHWC, padding with -inf) whose backward pass keeps an int8 argmax.

    Why hand-written: XLA lowers the gradient of ``nn.max_pool`` (``select_and_scatter``) on
    CPU to a variadic reduce-window that tracks the winning position through four int32 index
    maps of the padded input, then a scatter. For the ResNet stem's 3x3/2 pool of a
    (4, 256, 256, 64) map that is 454 MiB of temporaries and 194 ms forward + backward; this
    version stores the index of the winning tap (one byte per output) and writes the gradient
    as a sum of strided pads, one per tap: 65 MiB and 57 ms (2.3x faster at the demo's size;
    ``benchmarks/bench_max_pool.py``). The values are ``nn.max_pool``'s; ties go to the first tap in
    row-major order, as in XLA's and PyTorch's gradients, and a NaN wins as in PyTorch.

    Args:
        x: (N, H, W, C).
        window: window side (window * window <= 127 taps).
        stride: stride in both directions.
        padding: padding on every side.

    Returns:
        (N, (H + 2p - window) // stride + 1, (W + 2p - window) // stride + 1, C).
    """
    return nn.max_pool(
        x, (window, window), strides=(stride, stride), padding=((padding,) * 2, (padding,) * 2)
    )


def _window_taps(xp, window, strides, out_hw, axes):
    """Strided slices of a padded array, one per window tap in row-major order.

    Tap (i, j) holds ``xp[.., s_h * u + i, .., s_w * v + j, ..]`` for the ``out_hw`` output
    positions (u, v), ``axes`` being the two spatial axes of ``xp``.
    """
    for i in range(window[0]):
        for j in range(window[1]):
            start, end, step = [0] * xp.ndim, list(xp.shape), [1] * xp.ndim
            for axis, offset, stride, size in zip(axes, (i, j), strides, out_hw):
                start[axis], end[axis] = offset, offset + stride * (size - 1) + 1
                step[axis] = stride
            yield jax.lax.slice(xp, start, end, step)


def _max_pool_fwd(x, window, stride, padding):
    if window * window > 127:
        raise ValueError(f"max_pool keeps an int8 tap index; window {window} has too many taps")
    out_hw = [(size + 2 * padding - window) // stride + 1 for size in x.shape[1:3]]
    xp = jnp.pad(
        x, ((0, 0), (padding, padding), (padding, padding), (0, 0)), constant_values=-jnp.inf
    )
    taps = _window_taps(xp, (window, window), (stride, stride), out_hw, axes=(1, 2))
    best = index = None
    for k, tap in enumerate(taps):
        if best is None:
            best, index = tap, jnp.zeros(tap.shape, jnp.int8)
            continue
        take = (tap > best) | jnp.isnan(tap)
        best = jnp.where(take, tap, best)
        index = jnp.where(take, jnp.int8(k), index)
    # The input's height, width and dtype travel as an empty array (residuals are arrays).
    return best, (index, jnp.zeros((0, *x.shape[1:3]), x.dtype))


def _max_pool_bwd(window, stride, padding, residuals, g):
    index, like_x = residuals
    n, out_h, out_w, c = g.shape
    _, h, w = like_x.shape
    zero = jnp.zeros((), g.dtype)
    padded = None
    for k in range(window * window):
        di, dj = divmod(k, window)
        # Tap k of output (i, j) is padded input (stride * i + di, stride * j + dj).
        config = (
            (0, 0, 0),
            (di, h + 2 * padding - di - stride * (out_h - 1) - 1, stride - 1),
            (dj, w + 2 * padding - dj - stride * (out_w - 1) - 1, stride - 1),
            (0, 0, 0),
        )
        part = jax.lax.pad(jnp.where(index == k, g, zero), zero, config)
        padded = part if padded is None else padded + part
    d_x = jax.lax.slice(padded, (0, padding, padding, 0), (n, padding + h, padding + w, c))
    return (d_x.astype(like_x.dtype),)


max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)
