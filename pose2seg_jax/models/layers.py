"""Layers shared by the networks: a 1x1 convolution computed as a matrix product.

Why not ``nn.Conv`` for 1x1 kernels: XLA's CPU backend computes the weight gradient of a 1x1
convolution as a convolution whose window is the whole feature map (seen in the optimised HLO),
which ran 1.65x slower forward + backward than the same layer written as a ``dot_general``
(benchmarks/RESULTS.md, bench_train). The dot form is the same function with the same
parameters (``kernel`` of shape (1, 1, C_in, C_out) and ``bias``, initialised as ``nn.Conv``
would), so checkpoints and the PyTorch conversion do not see the difference; on GPU and TPU
both forms lower to the same matrix units.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


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
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        """Args: x (N, H, W, C_in). Returns: (N, ceil(H / s), ceil(W / s), features)."""
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
        if self.use_bias:
            bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype)
            y = y + bias.astype(self.dtype)
        return y
