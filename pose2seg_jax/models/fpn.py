"""Feature pyramid on the four ResNet stages (REFERENCE.md section 7), returning P1.

Layer names mirror the reference (``fpn_c4p4`` ... ``fpn_c1p1`` laterals, ``fpn_p4`` ...
``fpn_p1`` output convs).
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from pose2seg_jax.models.layers import PointwiseConv


def upsample_to(x: jnp.ndarray, height: int, width: int) -> jnp.ndarray:
    """Bilinear resize with half-pixel centres (PyTorch's ``align_corners=False``).

    For upsampling this equals ``F.interpolate(mode='bilinear', align_corners=False)``,
    including the edge rows, which both clamp to the border pixel.

    Args:
        x: (N, h, w, C).
        height: output height.
        width: output width.

    Returns:
        (N, height, width, C) in x's dtype.
    """
    shape = (x.shape[0], height, width, x.shape[3])
    return jax.image.resize(x, shape, method="bilinear", antialias=False).astype(x.dtype)


class FPN(nn.Module):
    """Top-down pyramid: P4 = lat(C4), Pk = up(Pk+1) + lat(Ck), then a 3x3 conv on each.

    All four output convs are built so the reference's weights load; only P1 is returned, and
    under ``jit`` the unused P2..P4 convs are dropped by XLA.

    Attributes:
        features: channels of every pyramid level (256).
        dtype: computation dtype.
        param_dtype: parameter dtype.
    """

    features: int = 256
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, stages: Sequence[jnp.ndarray]) -> jnp.ndarray:
        """Builds the pyramid.

        Args:
            stages: (C1, C2, C3, C4), e.g. (N, 128, 128, 256) ... (N, 16, 16, 2048).

        Returns:
            P1: (N, H1, W1, features), the stride-4 level.
        """

        def conv(kernel: int, name: str) -> nn.Module:
            if kernel == 1:
                return PointwiseConv(
                    self.features, dtype=self.dtype, param_dtype=self.param_dtype, name=name
                )
            pad = (kernel - 1) // 2
            return nn.Conv(
                self.features,
                (kernel, kernel),
                padding=((pad, pad), (pad, pad)),
                use_bias=True,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name=name,
            )

        c1, c2, c3, c4 = stages
        p4 = conv(1, "fpn_c4p4")(c4)
        p3 = upsample_to(p4, c3.shape[1], c3.shape[2]) + conv(1, "fpn_c3p3")(c3)
        p2 = upsample_to(p3, c2.shape[1], c2.shape[2]) + conv(1, "fpn_c2p2")(c2)
        p1 = upsample_to(p2, c1.shape[1], c1.shape[2]) + conv(1, "fpn_c1p1")(c1)
        conv(3, "fpn_p4")(p4)
        conv(3, "fpn_p3")(p3)
        conv(3, "fpn_p2")(p2)
        return conv(3, "fpn_p1")(p1)
