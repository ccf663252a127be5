"""ResNet backbone (REFERENCE.md section 7), NHWC, returning the four stage outputs.

Layer names mirror the reference's PyTorch state dict (section 11): the stem is ``conv1``/``bn1``,
block ``i`` of stage ``s`` is ``layer{s}_{i}`` with ``conv1..3``/``bn1..3``, and a projection
shortcut is ``conv4``/``bn4``, so weight conversion is a name map.
"""

from collections.abc import Sequence
from functools import partial
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from pose2seg_jax.models.layers import (
    GroupedInputConv,
    PointwiseConv,
    conv_init,
    max_pool,
    reference_batch_norm,
)

# Blocks per stage for each supported depth.
STAGE_SIZES: dict[int, tuple[int, int, int, int]] = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
}
STAGE_WIDTHS = (64, 128, 256, 512)
LAYOUTS = ("reference", "torchvision")


def is_bottleneck(depth: int) -> bool:
    """Whether a ResNet of this depth uses bottleneck blocks (expansion 4) or basic blocks."""
    return depth >= 50


def stage_widths(width: int = 64) -> tuple[int, int, int, int]:
    """Inner widths of the four stages for base width ``width``: (64, 128, 256, 512) at 64."""
    return tuple(w * width // 64 for w in STAGE_WIDTHS)


def stage_channels(depth: int, width: int = 64) -> tuple[int, int, int, int]:
    """Output channels of the four stages: (256, 512, 1024, 2048) or (64, 128, 256, 512)."""
    expansion = 4 if is_bottleneck(depth) else 1
    return tuple(w * expansion for w in stage_widths(width))


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1 bottleneck without conv biases; output ``4 * width`` channels.

    ``stride_on_3x3=False`` is the reference's layout (stride on the first 1x1 conv).
    ``kernel_grad``: the 3x3 conv's kernel gradient (``layers.conv_custom_grads``).
    """

    width: int
    stride: int = 1
    projection: bool = False
    stride_on_3x3: bool = False
    bn_axis_name: str | None = None
    kernel_grad: str = "taps"
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        """Args: x (N, H, W, C). Returns: (N, H/stride, W/stride, 4 * width)."""
        pointwise = partial(
            PointwiseConv,
            use_bias=False,
            kernel_init=conv_init,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )
        norm = partial(reference_batch_norm, train, self.bn_axis_name, self.dtype, self.param_dtype)
        s1, s2 = (1, self.stride) if self.stride_on_3x3 else (self.stride, 1)
        y = pointwise(self.width, strides=s1, name="conv1")(x)
        # The two inner BatchNorm outputs go to their convolution pending (``lazy``): recomputed
        # in the backward pass instead of stored (``layers.normalize_into``).
        y = norm("bn1")(y, relu=True, lazy=True)
        y = GroupedInputConv(
            self.width,
            (3, 3),
            strides=s2,
            padding=1,
            use_bias=False,
            input_grad_chunk=None,
            kernel_grad=self.kernel_grad,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="conv2",
        )(y)
        y = norm("bn2")(y, relu=True, lazy=True)
        y = pointwise(4 * self.width, name="conv3")(y)
        shortcut = x
        if self.projection:
            shortcut = pointwise(4 * self.width, strides=self.stride, name="conv4")(x)
            shortcut = norm("bn4")(shortcut)
        return norm("bn3")(y, add=shortcut, relu=True)


class BasicBlock(nn.Module):
    """3x3 -> 3x3 residual block (ResNet-18/34) without conv biases; output ``width`` channels.

    ``kernel_grad``: the 3x3 convs' kernel gradient (``layers.conv_custom_grads``).
    """

    width: int
    stride: int = 1
    projection: bool = False
    bn_axis_name: str | None = None
    kernel_grad: str = "taps"
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        """Args: x (N, H, W, C). Returns: (N, H/stride, W/stride, width)."""
        # The parameters of nn.Conv (kernel, no bias, the same initialisation).
        conv = partial(
            GroupedInputConv,
            use_bias=False,
            input_grad_chunk=None,
            kernel_grad=self.kernel_grad,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )
        norm = partial(reference_batch_norm, train, self.bn_axis_name, self.dtype, self.param_dtype)
        y = conv(self.width, (3, 3), strides=self.stride, padding=1, name="conv1")(x)
        y = norm("bn1")(y, relu=True)
        y = conv(self.width, (3, 3), padding=1, name="conv2")(y)
        shortcut = x
        if self.projection:
            shortcut = PointwiseConv(
                self.width,
                strides=self.stride,
                use_bias=False,
                kernel_init=conv_init,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name="conv4",
            )(x)
            shortcut = norm("bn4")(shortcut)
        return norm("bn2")(y, add=shortcut, relu=True)


class ResNet(nn.Module):
    """ResNet trunk: stem (7x7/2 conv, BN, ReLU, 3x3/2 max-pool) and four stages.

    Attributes:
        depth: 18, 34, 50 or 101.
        layout: 'reference' (bottleneck stride on the first 1x1 conv, the reference's
            Caffe-style layout) or 'torchvision' (stride on the 3x3 conv).
        width: base width (64 in the paper): stem channels and first stage width; the
            stages use width * (1, 2, 4, 8). Smaller values are for tests and CPU demos.
        bn_axis_name: mesh axis for cross-device BatchNorm statistics, or None.
        stem_kernel_grad: how the 7x7/2 stem's kernel gradient is computed on XLA's CPU
            backend (``layers.conv_custom_grads``): "patches" (fastest at the paper's sizes),
            "taps" (fastest at the demo's) or "xla".
        conv_kernel_grad: the same for the 3x3 convs: "taps" (fastest at all sizes measured)
            or "xla".
        dtype: computation dtype.
        param_dtype: parameter dtype.
    """

    depth: int = 50
    layout: str = "reference"
    width: int = 64
    bn_axis_name: str | None = None
    stem_kernel_grad: str = "patches"
    conv_kernel_grad: str = "taps"
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> Sequence[jnp.ndarray]:
        """Runs the trunk.

        Args:
            x: normalised images (N, H, W, 3).
            train: BatchNorm uses batch statistics (and updates ``batch_stats``) when True.

        Returns:
            (C1, C2, C3, C4) of strides 4, 8, 16, 32 with ``stage_channels(depth, width)``
            channels,
            e.g. (N, H/4, W/4, 256) ... (N, H/32, W/32, 2048) for depth 50.
        """
        if self.depth not in STAGE_SIZES:
            raise ValueError(
                f"ResNet depth {self.depth} is not supported; use one of 18, 34, 50, 101"
            )
        if self.layout not in LAYOUTS:
            raise ValueError(f"ResNet layout {self.layout!r} is unknown; use one of {LAYOUTS}")
        x = GroupedInputConv(
            self.width,
            (7, 7),
            strides=2,
            padding=3,
            use_bias=False,
            input_grad_chunk=None,
            kernel_grad=self.stem_kernel_grad,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="conv1",
        )(x)
        x = reference_batch_norm(train, self.bn_axis_name, self.dtype, self.param_dtype, "bn1")(
            x, relu=True
        )
        x = max_pool(x, 3, 2, 1)
        bottleneck = is_bottleneck(self.depth)
        in_channels = self.width
        outputs = []
        for s, (blocks, width) in enumerate(zip(STAGE_SIZES[self.depth], stage_widths(self.width))):
            out_channels = 4 * width if bottleneck else width
            for i in range(blocks):
                stride = 2 if (i == 0 and s > 0) else 1
                projection = i == 0 and (stride != 1 or in_channels != out_channels)
                common = dict(
                    width=width,
                    stride=stride,
                    projection=projection,
                    bn_axis_name=self.bn_axis_name,
                    kernel_grad=self.conv_kernel_grad,
                    dtype=self.dtype,
                    param_dtype=self.param_dtype,
                    name=f"layer{s + 1}_{i}",
                )
                if bottleneck:
                    block = Bottleneck(stride_on_3x3=self.layout == "torchvision", **common)
                else:
                    block = BasicBlock(**common)
                x = block(x, train)
                in_channels = out_channels
            outputs.append(x)
        return tuple(outputs)
