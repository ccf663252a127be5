"""The ResNet stem's kernel gradient: a matrix product over patches against XLA's convolution.

``layers.conv_patches_kernel_grad`` computes the 7x7/2 stem's kernel gradient as the
(49 * 3, N * H' * W') patch matrix times the output gradient; the other side is the plain
convolution left to ``jax.vjp`` (XLA's window-dilated convolution). Both are compiled here,
checked to agree, and timed interleaved (median of ``--rounds``) at the demo's and the paper's
stem sizes, with XLA's temporary memory of each.

    GLIBC_TUNABLES=glibc.malloc.hugetlb=1 .venv/bin/python benchmarks/bench_stem_grad.py
"""

from __future__ import annotations

import argparse

import interleaved
import jax.numpy as jnp
import numpy as np

from pose2seg_jax.models import layers

SIZES = {  # name: (input images (N, H, W, 3), stem channels)
    "demo (configs/synthetic.py)": ((2, 288, 288, 3), 16),
    "paper (bench_train.py)": ((4, 512, 512, 3), 64),
}
STRIDES, PADDING = (2, 2), ((3, 3), (3, 3))


def measure(name: str, shape: tuple[int, ...], features: int, rounds: int) -> None:
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=shape), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(7, 7, shape[-1], features)), jnp.float32)
    g = jnp.asarray(rng.normal(size=(shape[0], shape[1] // 2, shape[2] // 2, features)))

    def compiled(conv):
        convolve = lambda t, k: conv(t, k, STRIDES, PADDING)
        return interleaved.weighted_sum_gradient(convolve, (x, kernel), g, argnum=1)

    result = interleaved.compare(
        {"xla": compiled(layers._conv_nhwc), "ours": compiled(layers.conv_patches_kernel_grad)},
        (x, kernel, g),
        rounds,
        relative=True,
    )
    print(interleaved.row([name, f"{shape} -> {features}"], result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    columns = [
        "sizes",
        "stem",
        "XLA convolution ms",
        "patches x gradient ms",
        "speed-up",
        "XLA temp MiB",
        "patches temp MiB",
        "max difference (relative to max)",
    ]
    interleaved.print_head(args.rounds, columns)
    for name, (shape, features) in SIZES.items():
        measure(name, shape, features, args.rounds)


if __name__ == "__main__":
    main()
