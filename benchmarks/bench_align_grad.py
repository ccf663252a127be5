"""Affine-Align forward + backward: the hand-written feature gradient against autodiff.

``align.align_people`` differentiates the features with row scatters (``align._align_people``);
``align._sample_people`` is the same sampling left to ``jax.grad`` (per-element scatters). Both
are compiled here, checked to agree, and timed interleaved (median of ``--rounds``) at the
demo's sizes and the paper's, with XLA's temporary memory of each.

    .venv/bin/python benchmarks/bench_align_grad.py [--rounds 9]
"""

from __future__ import annotations

import argparse

import interleaved
import jax.numpy as jnp
import numpy as np

from pose2seg_jax.ops import align

SIZES = {  # name: (images, people per image, feature side, channels, align side)
    "demo (configs/synthetic.py)": (2, 4, 72, 16, 64),
    "paper (bench_train.py)": (4, 8, 128, 256, 64),
}


def _matrices(rng, count: int, side: int, align_size: int) -> np.ndarray:
    """Rotations and scales 0.5..3 of windows centred anywhere on the map."""
    out = []
    for _ in range(count):
        scale, angle = rng.uniform(0.5, 3.0), rng.uniform(-1.0, 1.0)
        linear = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        matrix = np.eye(3)
        matrix[:2, :2] = linear
        matrix[:2, 2] = align_size / 2 - linear @ rng.uniform(0, side, 2)
        out.append(matrix)
    return np.asarray(out, np.float32)


def measure(name: str, sizes: tuple[int, ...], rounds: int) -> None:
    images, people, side, channels, size = sizes
    rng = np.random.default_rng(0)
    features = jnp.asarray(rng.random((images, side, side, channels)), jnp.float32)
    matrices = jnp.asarray(
        _matrices(rng, images * people, side, size).reshape(images, people, 3, 3)
    )
    weights = jnp.asarray(rng.random((images, people, size, size, channels)), jnp.float32)

    compiled = lambda sample: interleaved.weighted_sum_gradient(sample, (features,), weights)
    result = interleaved.compare(
        {
            "autodiff": compiled(lambda f: align._sample_people(f, matrices, size, "reference")),
            "hand-written": compiled(lambda f: align.align_people(f, matrices, align_size=size)),
        },
        (features, weights),
        rounds,
    )
    print(
        interleaved.row(
            [name, f"{images}x{people} people, {side}x{side}x{channels} -> {size}x{size}"], result
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    columns = [
        "sizes",
        "shape",
        "autodiff ms",
        "hand-written ms",
        "speed-up",
        "autodiff temp MiB",
        "hand-written temp MiB",
        "max abs difference",
    ]
    interleaved.print_head(args.rounds, columns)
    for name, sizes in SIZES.items():
        measure(name, sizes, args.rounds)


if __name__ == "__main__":
    main()
