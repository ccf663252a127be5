"""SegModule: aligned person features (64x64x311) to 2-class logits (REFERENCE.md section 7).

Layer names mirror the reference: ``conv1``/``bn1``, ``layer1_{i}`` with ``conv1..3``/``bn1..3``
and ``downsample_0`` (conv) / ``downsample_1`` (BN) on block 0, ``decoder1_0``, ``pred_small``.
"""

from collections.abc import Sequence
from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from pose2seg_jax.models.layers import (
    GroupedInputConv,
    PointwiseConv,
    conv_init,
    cotangent_like,
    reference_batch_norm,
)


def align_corners_matrix(size_in: int, size_out: int) -> np.ndarray:
    """Linear interpolation weights with corner-aligned sampling (``align_corners=True``).

    Output sample ``o`` reads input position ``o * (size_in - 1) / (size_out - 1)``.

    Args:
        size_in: input length.
        size_out: output length.

    Returns:
        (size_out, size_in) float64 matrix whose rows sum to 1.
    """
    lo, hi, frac = _lerp_taps(size_in, size_out)
    weights = np.zeros((size_out, size_in), np.float64)
    rows = np.arange(size_out)
    np.add.at(weights, (rows, lo), 1.0 - frac)
    np.add.at(weights, (rows, hi), frac)
    return weights


def _lerp_taps(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each output's two input taps ``lo``, ``hi`` and the weight ``frac`` of ``hi``."""
    pos = np.arange(size_out) * ((size_in - 1) / (size_out - 1) if size_out > 1 else 0.0)
    lo = np.clip(np.floor(pos).astype(np.int32), 0, size_in - 1)
    hi = np.minimum(lo + 1, size_in - 1)
    return lo, hi, pos - lo


def _transposed_bands(size_in: int, factor: int) -> tuple[int, np.ndarray]:
    """The transpose of the x``factor`` interpolation as a band around output ``factor * i``.

    Returns (first, weight): input ``i`` receives ``sum_k weight[i, k] * g[factor * i + first
    + k]`` (taps outside the output, or not feeding ``i``, have weight 0).
    """
    weights = align_corners_matrix(size_in, factor * size_in).T  # (size_in, size_out)
    inputs, outputs = np.nonzero(weights)
    offsets = outputs - factor * inputs
    first = int(offsets.min())
    weight = np.zeros((size_in, int(offsets.max()) - first + 1), np.float64)
    weight[inputs, offsets - first] = weights[inputs, outputs]
    return first, weight


def _upsample_transpose_axis(g: jnp.ndarray, axis: int, size_in: int, factor: int):
    """``g`` (output-sized along ``axis``) through the transposed interpolation to ``size_in``.

    Strided slices of the zero-padded ``g``, one per band offset, summed: XLA fuses them into
    one pass (gathers of the same operand it materialised one by one).
    """
    first, weight = _transposed_bands(size_in, factor)
    size_out = factor * size_in
    before = max(0, -first)
    after = max(0, factor * (size_in - 1) + first + weight.shape[1] - size_out)
    pads = [(0, 0)] * g.ndim
    pads[axis] = (before, after)
    padded = jnp.pad(g, pads)
    shape = [1] * g.ndim
    shape[axis] = size_in
    total = None
    for k in range(weight.shape[1]):
        start = before + first + k
        tap = jax.lax.slice_in_dim(padded, start, start + factor * (size_in - 1) + 1, factor, axis)
        term = tap * jnp.asarray(weight[:, k].reshape(shape), g.dtype)
        total = term if total is None else total + term
    return total


def _lerp_axis(x: jnp.ndarray, axis: int, size_out: int) -> jnp.ndarray:
    """Two-tap ``align_corners=True`` interpolation of ``x`` along ``axis`` to ``size_out``."""
    lo, hi, frac = _lerp_taps(x.shape[axis], size_out)
    shape = [1] * x.ndim
    shape[axis] = size_out
    frac = jnp.asarray(frac.reshape(shape), x.dtype)
    a = jnp.take(x, jnp.asarray(lo), axis=axis)
    b = jnp.take(x, jnp.asarray(hi), axis=axis)
    return a + (b - a) * frac


@partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _upsample(x: jnp.ndarray, height: int, width: int) -> jnp.ndarray:
    """``x`` (N, h, w, C) interpolated to (N, height, width, C), with a hand-written VJP.

    Why: the transpose of the constant-index gathers is scatter-adds into zero-filled buffers,
    which XLA's CPU backend runs element by element and whose zero fills it schedules at the
    start of the backward pass (four such buffers, 384 MiB, were in the paper-size training
    step's peak; benchmarks/RESULTS.md). The transpose is written here per axis as a sum of
    strided slices: each input sums the few outputs (a band around ``factor * i``) it feeds.
    ``height`` and ``width`` must be integer multiples of ``h`` and ``w``.
    """
    return _lerp_axis(_lerp_axis(x, 1, height), 2, width)


def _upsample_fwd(x, height, width):
    # Backward needs only the input's size, dtype and mesh-axis type: a zero-size slice.
    return _upsample(x, height, width), x[:, :, :, :0]


def _upsample_bwd(height, width, x_like, g):
    _, h, w, _ = x_like.shape
    d_x = _upsample_transpose_axis(g, 2, w, width // w)
    d_x = _upsample_transpose_axis(d_x, 1, h, height // h)
    return (cotangent_like(d_x.astype(x_like.dtype), x_like),)


_upsample.defvjp(_upsample_fwd, _upsample_bwd)


def upsample_align_corners(x: jnp.ndarray, factor: int = 2) -> jnp.ndarray:
    """Bilinear upsampling by an integer factor with ``align_corners=True`` (PyTorch semantics).

    ``jax.image.resize`` samples at half-pixel centres, so this is written as a two-tap
    interpolation along each axis with constant indices, which XLA fuses into one pass without
    transposes (an interpolation-matrix einsum materialised several transposed copies).

    Args:
        x: (N, H, W, C).
        factor: integer scale.

    Returns:
        (N, factor * H, factor * W, C) in x's dtype.
    """
    _, h, w, _ = x.shape
    return _upsample(x, factor * h, factor * w)


class SegBottleneck(nn.Module):
    """Bottleneck of the SegModule: bias on every conv, stride on the 3x3 conv.

    Attributes:
        width: inner width; the output has ``4 * width`` channels.
        stride: stride of the 3x3 conv and of the projection.
        projection: add the ``downsample_0`` (1x1 conv with bias) + ``downsample_1`` (BN)
            shortcut.
        upsample: take a half-resolution input and upsample it x2 (``align_corners=True``)
            first. The block's first layers on the input are 1x1 convs, which commute exactly
            with an interpolation whose weights sum to one (bias included), so they run at
            the low resolution and only their narrower outputs are upsampled: the same
            function as upsampling the input, with 4x fewer FLOPs there and without
            materialising the wide upsampled tensor.
        bn_axis_name: mesh axis for cross-device BatchNorm statistics, or None.
        kernel_grad: the 3x3 conv's kernel gradient (``layers.conv_custom_grads``).
    """

    width: int
    stride: int = 1
    projection: bool = False
    upsample: bool = False
    bn_axis_name: str | None = None
    kernel_grad: str = "taps"
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self, x: jnp.ndarray, train: bool = False, mask: jnp.ndarray | None = None
    ) -> jnp.ndarray:
        """Args: x (N, H, W, C); mask (N, 1, 1, 1) bool, the samples in BN statistics.

        Returns: (N, H/stride, W/stride, 4 * width).
        """

        def norm(y: jnp.ndarray, name: str, **kw):
            bn = reference_batch_norm(train, self.bn_axis_name, self.dtype, self.param_dtype, name)
            return bn(y, mask=mask, **kw)

        pointwise = partial(
            PointwiseConv,
            use_bias=True,
            kernel_init=conv_init,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )
        if self.upsample and self.stride != 1:
            raise ValueError("SegBottleneck: upsample=True needs stride 1")
        up = upsample_align_corners if self.upsample else (lambda t: t)
        # Every conv here feeds a BatchNorm, which absorbs its bias (``shift``); the x2
        # upsampling commutes with adding a per-channel constant.
        y, b = pointwise(self.width, name="conv1")(x, split_bias=True)
        # The two inner BatchNorm outputs go to their convolution pending (``lazy``): recomputed
        # in the backward pass instead of stored (``layers.normalize_into``).
        y = norm(up(y), "bn1", relu=True, shift=b, lazy=True)
        y, b = GroupedInputConv(
            self.width,
            (3, 3),
            strides=self.stride,
            padding=1,
            kernel_grad=self.kernel_grad,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="conv2",
        )(y, split_bias=True)
        y = norm(y, "bn2", relu=True, shift=b, lazy=True)
        y, b3 = pointwise(4 * self.width, name="conv3")(y, split_bias=True)
        if self.projection:
            shortcut, b = pointwise(4 * self.width, strides=self.stride, name="downsample_0")(
                x, split_bias=True
            )
            shortcut = norm(up(shortcut), "downsample_1", shift=b)
        else:
            shortcut = up(x)
        return norm(y, "bn3", add=shortcut, relu=True, shift=b3)


class SegModule(nn.Module):
    """7x7/2 conv -> ``num_units`` bottlenecks (1024) -> x2 upsample -> decoder (512) -> 1x1 to 2.

    Attributes:
        num_units: residual units at 1/2 resolution (10 in the reference).
        width: bottleneck width of the units (256 in the reference; outputs 4 * width); the
            stem has ``width`` channels and the decoder ``width / 2`` (output 2 * width).
        num_classes: output channels (2: background, person).
        bn_axis_name: mesh axis for cross-device BatchNorm statistics, or None.
        stem_kernel_grad: how the 7x7/2 stem's kernel gradient is computed on XLA's CPU
            backend (``layers.conv_custom_grads``): "taps" (fastest at the paper's widths)
            or "xla" (fastest at the demo's 16 channels).
        conv_kernel_grad: the same for the units' 3x3 convs: "taps" (10x faster than XLA's at
            the paper's width) or "xla".
        dtype: computation dtype.
        param_dtype: parameter dtype.
    """

    num_units: int = 10
    width: int = 256
    num_classes: int = 2
    bn_axis_name: str | None = None
    stem_kernel_grad: str = "taps"
    conv_kernel_grad: str = "taps"
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self,
        x: jnp.ndarray | Sequence[jnp.ndarray],
        train: bool = False,
        mask: jnp.ndarray | None = None,
    ) -> jnp.ndarray:
        """Segments aligned people.

        Args:
            x: (N, 64, 64, 311) aligned features with skeleton maps (any even size and
                channel count), or the channel groups whose concatenation that is, e.g.
                ((N, 64, 64, 256) features, (N, 64, 64, 55) skeleton maps): the first conv
                then never materialises the concatenation.
            train: BatchNorm uses batch statistics (and updates ``batch_stats``) when True.
            mask: optional (N,) bool; when given and training, only these samples enter the
                BatchNorm batch statistics (padded people are excluded). If no sample is
                selected, all are used, so the statistics stay finite.

        Returns:
            logits (N, 64, 64, num_classes) in ``dtype``.
        """
        bn_mask = None
        if mask is not None:
            mask = jnp.asarray(mask, bool)
            mask = mask | ~jnp.any(mask)
            bn_mask = mask[:, None, None, None]
        x, shift = GroupedInputConv(
            self.width,
            (7, 7),
            strides=2,
            padding=3,
            kernel_grad=self.stem_kernel_grad,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="conv1",
        )(x, split_bias=True)
        x = reference_batch_norm(train, self.bn_axis_name, self.dtype, self.param_dtype, "bn1")(
            x, mask=bn_mask, relu=True, shift=shift
        )
        common = dict(
            bn_axis_name=self.bn_axis_name,
            kernel_grad=self.conv_kernel_grad,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )
        for i in range(self.num_units):
            x = SegBottleneck(self.width, projection=i == 0, name=f"layer1_{i}", **common)(
                x, train, bn_mask
            )
        # The x2 upsample (align_corners=True) is folded into the decoder's first 1x1 convs.
        x = SegBottleneck(
            self.width // 2, projection=True, upsample=True, name="decoder1_0", **common
        )(x, train, bn_mask)
        return PointwiseConv(
            self.num_classes,
            kernel_init=conv_init,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="pred_small",
        )(x)
