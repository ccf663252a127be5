"""The 7x7/2 stems' kernel gradients: XLA's convolution, the patch matrix, one product per tap.

``layers.conv_custom_grads`` computes a convolution's kernel gradient as XLA does ("xla": a
convolution whose window is the output gradient, dilated by the stride), as one matrix product
over the (kh * kw * C_in, N * H' * W') patch matrix ("patches") or as one (C_in, N * H' * W')
x (N * H' * W', C_out) product per kernel tap ("taps"). All three are compiled here for the
ResNet stem (3 input channels) and the SegModule stem (aligned features + 55 skeleton
channels, as one group) at the demo's and the paper's sizes, checked to agree, and timed
interleaved (median of the rounds), with XLA's temporary memory of each. The configs pick the
fastest of each row (``config.model.backbone_stem_kernel_grad``, ``seg_stem_kernel_grad``).

    GLIBC_TUNABLES=glibc.malloc.hugetlb=1 .venv/bin/python benchmarks/bench_stem_grad.py
"""

from __future__ import annotations

import argparse
from functools import partial

import interleaved
import jax.numpy as jnp
import numpy as np

from pose2seg_jax.models import layers

SIZES = {  # name: (input (N, H, W, C_in), stem channels)
    "ResNet stem, demo (configs/synthetic.py)": ((2, 288, 288, 3), 16),
    "ResNet stem, paper (bench_train.py)": ((4, 512, 512, 3), 64),
    "SegModule stem, demo": ((8, 64, 64, 16 + 55), 16),
    "SegModule stem, paper": ((32, 64, 64, 256 + 55), 256),
}
METHODS = ("xla", "patches", "taps")
STRIDES, PADDING = (2, 2), ((3, 3), (3, 3))


def measure(name: str, shape: tuple[int, ...], features: int, rounds: int) -> str:
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=shape), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(7, 7, shape[-1], features)), jnp.float32)
    g = jnp.asarray(rng.normal(size=(shape[0], shape[1] // 2, shape[2] // 2, features)))
    variants = {
        method: interleaved.weighted_sum_gradient(
            partial(layers.conv_custom_grads, strides=STRIDES, padding=PADDING, kernel_grad=method),
            (x, kernel),
            g,
            argnum=1,
        )
        for method in METHODS
    }
    result = interleaved.compare(variants, (x, kernel, g), rounds, relative=True)
    ms, temp = result["ms"], result["temp_mib"]
    best = min(ms, key=ms.get)
    cells = [
        name,
        f"{shape} -> {features}",
        *(f"{ms[m]:.1f}" for m in METHODS),
        f"{best} ({ms['xla'] / ms[best]:.1f}x)",
        *(f"{temp[m]:.0f}" for m in METHODS),
        f"{result['difference']:.1e}",
    ]
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--paper-rounds", type=int, default=3, help="rounds at the paper's sizes")
    args = parser.parse_args()
    columns = [
        "stem",
        "input -> channels",
        *(f"{m} ms" for m in METHODS),
        "fastest (vs xla)",
        *(f"{m} temp MiB" for m in METHODS),
        "max difference (relative to max)",
    ]
    interleaved.print_head(args.rounds, columns)
    for name, (shape, features) in SIZES.items():
        rounds = args.paper_rounds if "paper" in name else args.rounds
        print(measure(name, shape, features, rounds), flush=True)
    print(f"\n(rounds at the paper's sizes: {args.paper_rounds})")


if __name__ == "__main__":
    main()
