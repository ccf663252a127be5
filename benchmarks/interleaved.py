"""Shared by the kernel benchmarks: two compiled variants of one computation, timed interleaved.

Timing the variants round by round in one process (rather than one after the other, or in two
processes) is what resolves differences of a few tens of percent on a shared 2-core host.
"""

from __future__ import annotations

import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np


def header(rounds: int) -> str:
    """The machine line printed above a results table."""
    return (
        f"- date: {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}; machine: "
        f"{platform.machine()}, {os.cpu_count()} CPUs; jax {jax.__version__}; "
        f"load average before: {os.getloadavg()[0]:.2f}; median of {rounds} interleaved rounds"
    )


def weighted_sum_gradient(fn, args: tuple, seed, argnum: int = 0):
    """Compiled ``d/d args[argnum] sum(fn(*args) * seed)``, called as ``(*args, seed)``.

    The seed (the output's cotangent) is an argument: closed over, it would be a constant that
    XLA may fold into the program at compile time, which changed one variant's timing 4x.
    """
    loss = lambda *a: jnp.sum(fn(*a[:-1]) * a[-1])
    return jax.jit(jax.grad(loss, argnums=argnum)).lower(*args, seed).compile()


def compare(variants: dict, args: tuple, rounds: int, relative: bool = False) -> dict:
    """Checks that compiled ``variants`` agree on ``args``, then times them interleaved.

    Args:
        variants: {label: compiled function}; the first is the reference of the difference.
        args: the arguments of every variant.
        rounds: timed calls of each variant, alternating.
        relative: report the difference relative to the reference's largest magnitude.

    Returns:
        {"ms": {label: median ms}, "temp_mib": {label: XLA temporaries}, "difference": float}.
    """
    (_, reference), *others = variants.items()
    expected = reference(*args)
    difference = max(float(jnp.max(jnp.abs(fn(*args) - expected))) for _, fn in others)
    if relative:
        difference /= float(jnp.max(jnp.abs(expected)))
    times = {label: [] for label in variants}
    for _ in range(rounds):
        for label, fn in variants.items():
            start = time.perf_counter()
            jax.block_until_ready(fn(*args))
            times[label].append(time.perf_counter() - start)
    return {
        "ms": {label: float(np.median(v)) * 1e3 for label, v in times.items()},
        "temp_mib": {
            label: fn.memory_analysis().temp_size_in_bytes / 2**20 for label, fn in variants.items()
        },
        "difference": difference,
    }


def row(cells: list[str], result: dict) -> str:
    """A results-table row: ``cells``, then the reference's and the other variant's median ms,
    the speed-up, both variants' XLA temporaries and the difference (``compare``'s order)."""
    (base, other), (base_temp, other_temp) = result["ms"].values(), result["temp_mib"].values()
    numbers = [
        f"{base:.1f}",
        f"{other:.1f}",
        f"{base / other:.1f}x",
        f"{base_temp:.0f}",
        f"{other_temp:.0f}",
        f"{result['difference']:.1e}",
    ]
    return "| " + " | ".join([*cells, *numbers]) + " |"


def print_head(rounds: int, columns: list[str]) -> None:
    """Prints the machine line and the head of a results table with ``columns``."""
    print(header(rounds))
    print()
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
