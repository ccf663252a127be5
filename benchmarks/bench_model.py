"""Inference of the full default Pose2Seg (one 512x512 image, 8 people): JAX against PyTorch, CPU.

Each side runs in its own subprocess, so that its peak resident memory (``ru_maxrss``) is its
own: the JAX side runs the jitted ``Pose2Seg.apply`` (backbone, FPN, template fit, Affine-Align,
skeleton maps, SegModule); the PyTorch side runs ``TorchPose2Seg`` (backbone, FPN, grid_sample
align, SegModule) given matrices and skeleton maps, so JAX does slightly more work. Both use
randomly initialised weights of the released model's sizes. Times are medians after warm-up.
The achieved GFLOP/s use XLA's FLOP count of the compiled JAX program for both sides and are set
against a large float32 matmul measured in this run.

    .venv/bin/python benchmarks/bench_model.py [--runs 5] [--repeats 2]
        [--xla-flags= --xla-flags=--xla_cpu_use_onednn=true] [--results benchmarks/RESULTS.md]

Other jobs sharing the CPU lower the numbers: the script records the load average with them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

SIZE = 512
PEOPLE = 8


def _rss_mib() -> float:
    """Peak resident memory of this process (VmHWM: unlike ru_maxrss, not inherited on exec)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _median_time(fn, runs: int, warmup: int = 2) -> tuple[float, list[float]]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2], times


def _inputs():
    """One image and 8 people shaped like the packaged templates, deterministic."""
    import numpy as np

    from pose2seg_jax.ops.templates import load_templates

    rng = np.random.default_rng(0)
    image = rng.standard_normal((1, SIZE, SIZE, 3)).astype(np.float32)
    templates = load_templates()
    pick = templates[np.arange(PEOPLE) % len(templates)]
    scale = rng.uniform(120, 300, (PEOPLE, 1))
    centre = rng.uniform(150, 360, (PEOPLE, 1, 2))
    xy = centre + scale[..., None] * (pick[..., :2] - 0.5)
    v = np.where(pick[..., 2:] > 0, 2.0, 0.0)
    keypoints = np.concatenate([xy * (v > 0), v], -1)[None].astype(np.float32)
    return image, keypoints, np.ones((1, PEOPLE), bool), templates


def run_jax(runs: int) -> dict:
    """The JAX side (in a subprocess): returns timings, FLOPs and peak memory."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from pose2seg_jax.models.pose2seg import Pose2Seg

    base = _rss_mib()
    image, keypoints, valid, templates = _inputs()
    model = Pose2Seg()
    # Random weights built from the shapes, as a user would load converted ones: no init pass.
    shapes = jax.eval_shape(model.init, jax.random.key(0), image, keypoints, valid, templates)
    rng = np.random.default_rng(0)
    variables = jax.tree.map(
        lambda s: (
            jnp.asarray(rng.uniform(0.5, 1.5, s.shape).astype(np.float32))
            if len(s.shape) == 1
            else jnp.asarray(
                rng.standard_normal(s.shape, np.float32) * np.sqrt(2 / np.prod(s.shape[:-1]))
            )
        ),
        shapes,
    )
    apply = jax.jit(model.apply)
    start = time.perf_counter()
    compiled = apply.lower(variables, image, keypoints, valid, templates).compile()
    compile_s = time.perf_counter() - start
    # XLA counts a while loop's body once, so the FLOPs come from the one-pass program.
    one_pass = jax.jit(Pose2Seg(seg_chunk=0).apply).lower(
        shapes, image, keypoints, valid, templates
    )
    cost = one_pass.compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    args = [jnp.asarray(a) for a in (image, keypoints, valid, templates)]

    def once():
        jax.block_until_ready(compiled(variables, *args))

    median, times = _median_time(once, runs)
    return {
        "median_s": median,
        "times_s": times,
        "compile_s": compile_s,
        "flops": float(cost.get("flops", 0.0)),
        "peak_rss_mib": _rss_mib(),
        "rss_after_import_mib": base,
        "temp_mib": compiled.memory_analysis().temp_size_in_bytes / 2**20,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "jax": jax.__version__,
    }


def run_torch(runs: int) -> dict:
    """The PyTorch side (in a subprocess): returns timings and peak memory."""
    import numpy as np
    import torch

    from pose2seg_jax.conversion.torch_model import TorchPose2Seg

    base = _rss_mib()
    image, _, _, _ = _inputs()
    rng = np.random.default_rng(1)
    matrices = np.tile(np.diag([0.9, 0.9, 1.0]), (1, PEOPLE, 1, 1))
    matrices[..., :2, 2] = rng.uniform(-40, 10, (1, PEOPLE, 2))
    skeleton = (rng.uniform(size=(1, PEOPLE, 55, 64, 64)) < 0.1).astype(np.float32)
    model = TorchPose2Seg().eval()
    args = (
        torch.from_numpy(image.transpose(0, 3, 1, 2).copy()),
        torch.from_numpy(matrices).float(),
        torch.from_numpy(skeleton),
    )

    def once():
        with torch.inference_mode():
            model(*args)

    median, times = _median_time(once, runs)
    return {
        "median_s": median,
        "times_s": times,
        "peak_rss_mib": _rss_mib(),
        "rss_after_import_mib": base,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


def matmul_gflops(n: int = 4096, runs: int = 5) -> float:
    """float32 GFLOP/s of an n x n matmul in JAX (this process)."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    mm = jax.jit(lambda x: x @ x)
    median, _ = _median_time(lambda: jax.block_until_ready(mm(a)), runs)
    return 2 * n**3 / median / 1e9


def _child(side: str, runs: int, xla_flags: str) -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    if xla_flags:
        env["XLA_FLAGS"] = xla_flags
    out = subprocess.run(
        [sys.executable, __file__, "--side", side, "--runs", str(runs)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{side} side failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _pool(results: list[dict]) -> dict:
    """Merges repeated runs of one side: pooled median time, largest peak memory."""
    pooled = dict(results[0])
    times = sorted(t for r in results for t in r["times_s"])
    pooled["times_s"] = times
    pooled["median_s"] = times[len(times) // 2]
    pooled["peak_rss_mib"] = max(r["peak_rss_mib"] for r in results)
    return pooled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs per subprocess")
    parser.add_argument("--repeats", type=int, default=2, help="subprocesses per side")
    parser.add_argument("--side", choices=("jax", "torch"), help=argparse.SUPPRESS)
    parser.add_argument(
        "--xla-flags", action="append", default=None, help="XLA_FLAGS of a JAX variant (repeat)"
    )
    parser.add_argument("--results", default=None, help="append a Markdown section here")
    args = parser.parse_args()
    if args.side:
        result = run_jax(args.runs) if args.side == "jax" else run_torch(args.runs)
        print(json.dumps(result))
        return

    variants = args.xla_flags or [""]
    load_before = os.getloadavg()
    peaks = [matmul_gflops()]
    # Sides alternate over the repeats and their timings are pooled, so that load from other
    # jobs falls on both sides alike.
    torch_runs, jax_runs = [], {flags: [] for flags in variants}
    for _ in range(args.repeats):
        torch_runs.append(_child("torch", args.runs, ""))
        for flags in variants:
            jax_runs[flags].append(_child("jax", args.runs, flags))
    peaks.append(matmul_gflops())
    peak = max(peaks)
    load_after = os.getloadavg()
    torch_result = _pool(torch_runs)
    jax_results = [(flags, _pool(runs)) for flags, runs in jax_runs.items()]
    flops = jax_results[0][1]["flops"]

    lines = [
        f"## bench_model.py: full default model, 1 x {SIZE}^2 image, {PEOPLE} people, CPU inference",
        "",
        f"- date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; machine: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, {platform.platform()}",
        f"- load average before/after: {load_before[0]:.2f} / {load_after[0]:.2f} "
        "(other jobs may have shared the CPU)",
        f"- large matmul (4096^2 fp32, JAX): {peak:.1f} GFLOP/s (best of before/after: "
        f"{peaks[0]:.1f} / {peaks[1]:.1f}); model: {flops / 1e9:.1f} GFLOP (XLA count of the "
        "one-pass JAX program, used for both sides)",
        f"- {args.repeats} subprocesses per side, alternating, each {args.runs} timed runs after "
        f"2 warm-up runs, pooled median; torch threads {torch_result['threads']}",
        "",
        "| side | XLA_FLAGS | median s | GFLOP/s | % of matmul | peak RSS MiB | RSS after import MiB | JAX/torch speed ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def row(name: str, flags: str, r: dict, ratio: str) -> str:
        gflops = flops / r["median_s"] / 1e9
        return (
            f"| {name} | {flags or '-'} | {r['median_s']:.3f} | {gflops:.1f} | {100 * gflops / peak:.0f}% "
            f"| {r['peak_rss_mib']:.0f} | {r['rss_after_import_mib']:.0f} | {ratio} |"
        )

    lines.append(row(f"PyTorch {torch_result['torch']}", "", torch_result, "1.00"))
    for flags, r in jax_results:
        ratio = torch_result["median_s"] / r["median_s"]
        name = f"JAX {r['jax']} (compile {r['compile_s']:.0f} s)"
        lines.append(row(name, flags, r, f"{ratio:.2f}"))
    text = "\n".join(lines) + "\n"
    print(text)
    print(json.dumps({"torch": torch_result, "jax": dict(jax_results)}, indent=1))
    if args.results:
        with open(args.results, "a") as f:
            f.write("\n" + text)


if __name__ == "__main__":
    main()
