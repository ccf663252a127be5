"""The ResNet stem's 3x3/2 max-pool, forward + backward: ``layers.max_pool`` against flax's.

``layers.max_pool`` keeps a one-byte argmax and writes the gradient as strided pads;
``nn.max_pool`` is left to ``jax.grad`` (XLA's select-and-scatter, which tracks the winner
through int32 index maps). Both are compiled here, checked to agree, and timed interleaved
(median of ``--rounds``) at the demo's and the paper's stem sizes, with XLA's temporary memory.

    GLIBC_TUNABLES=glibc.malloc.hugetlb=1 .venv/bin/python benchmarks/bench_max_pool.py
"""

from __future__ import annotations

import argparse

import flax.linen as nn
import interleaved
import jax.numpy as jnp
import numpy as np

from pose2seg_jax.models import layers

SIZES = {  # name: the stem's BatchNorm + ReLU output (N, H, W, C)
    "demo (configs/synthetic.py)": (2, 144, 144, 16),
    "paper (bench_train.py)": (4, 256, 256, 64),
}


def measure(name: str, shape: tuple[int, ...], rounds: int) -> None:
    rng = np.random.default_rng(0)
    x = jnp.asarray(np.maximum(rng.normal(size=shape), 0), jnp.float32)
    out_shape = (shape[0], shape[1] // 2, shape[2] // 2, shape[3])
    weights = jnp.asarray(rng.normal(size=out_shape), jnp.float32)

    compiled = lambda pool: interleaved.weighted_sum_gradient(pool, (x,), weights)
    result = interleaved.compare(
        {
            "xla": compiled(lambda t: nn.max_pool(t, (3, 3), (2, 2), ((1, 1), (1, 1)))),
            "ours": compiled(lambda t: layers.max_pool(t, 3, 2, 1)),
        },
        (x, weights),
        rounds,
    )
    print(interleaved.row([name, f"{shape}"], result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    columns = [
        "sizes",
        "input",
        "nn.max_pool + autodiff ms",
        "layers.max_pool ms",
        "speed-up",
        "autodiff temp MiB",
        "layers.max_pool temp MiB",
        "max abs difference",
    ]
    interleaved.print_head(args.rounds, columns)
    for name, shape in SIZES.items():
        measure(name, shape, args.rounds)


if __name__ == "__main__":
    main()
