r"""One training step at the paper's sizes, JAX against PyTorch, on CPU (issue 5).

The step: ResNet-50-FPN (reference layout) on a batch of 512x512 images, Affine-Align of 8 people
per image, skeleton maps, SegModule, 2-class cross-entropy against the warped GT masks, backward
pass and Adam update, with BatchNorm in training mode and the align-space augmentation on.

- JAX: the project's ``training.steps.train_step`` through ``training.parallel.shard_step`` on a
  one-device mesh (state donated), with the model and state of ``configs/default.py``
  (``training.state.create_model`` / ``create_train_state``); uint8 images, keypoints, validity
  and the input-size masks go in, everything else (fitting, skeleton maps, target warps) runs
  inside the jitted step.
- PyTorch: the same network (``conversion.torch_model.TorchPose2Seg``) with the reference's
  per-person host preprocessing in every step: NumPy least-squares template fitting against all
  templates (``tests/ops/reference_fit.py``), a NumPy random augmentation matrix, NumPy skeleton
  drawing (``benchmarks/bench_align.numpy_skeleton``) and a NumPy bilinear warp of the GT mask to
  64x64, one person at a time; then forward, ``F.cross_entropy``, backward and ``torch.optim.Adam``.
  The preprocessing is timed inside the step and also reported on its own.

Each side runs in its own subprocess, so that its peak resident memory (VmHWM, as ``ru_maxrss``
but not inherited on exec) is its own; it includes the weights, the optimiser state, the inputs
and, for JAX, the compilation. Times are medians of ``--runs`` steps after ``--warmup`` steps.
Variants of the JAX side (XLA flags, ``GLIBC_TUNABLES``, bfloat16, remat, no donation) are
picked with ``--variants`` (names in ``VARIANTS``); each is its own subprocess and its own row.
The achieved GFLOP/s use XLA's FLOP count of the compiled float32 JAX step for every row and
are set against a large float32 matmul measured in the same run.

    .venv/bin/python benchmarks/bench_train.py [--size 512 --batch 4 --people 8]
        [--warmup 1 --runs 3] [--variants base,onednn,...] [--results benchmarks/RESULTS.md]

Smaller ``--size/--batch/--people`` (and ``--tiny``: a ResNet-18 trunk with a 1-unit,
64-wide SegModule) make a quick smoke test. Other jobs sharing the CPU lower the numbers: the
script records the load average with them.
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

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

ALIGN = 64
STRIDE = 4

# name -> how the JAX side differs from the plain float32 step.
VARIANTS: dict[str, dict] = {
    "base": {},
    "onednn": {"xla": "--xla_cpu_use_onednn=true"},
    "fastmath": {"xla": "--xla_cpu_enable_fast_math=true"},
    "vec512": {"xla": "--xla_cpu_prefer_vector_width=512"},
    "onednn_fusion": {
        "xla": "--xla_cpu_experimental_onednn_fusion_type=dot,eltwise,reduce,individual_dot,"
        "individual_convolution"
    },
    "xnn_fusion": {
        "xla": "--xla_cpu_experimental_xnn_fusion_type=dot,eltwise,reduce,individual_dot,"
        "individual_convolution"
    },
    "ynn_fusion": {
        "xla": "--xla_cpu_experimental_ynn_fusion_type=dot,eltwise,reduce,individual_dot,"
        "individual_convolution"
    },
    "xnnpack": {"xla": "--xla_cpu_use_xnnpack=true"},
    "hugetlb": {"glibc": "glibc.malloc.hugetlb=1"},
    "onednn_hugetlb": {"xla": "--xla_cpu_use_onednn=true", "glibc": "glibc.malloc.hugetlb=1"},
    "nodonate": {"donate": False},
    "remat": {"remat": True},
    "bf16": {"dtype": "bfloat16"},
    "onednn_bf16": {"xla": "--xla_cpu_use_onednn=true", "dtype": "bfloat16"},
    "tapgrad": {"tap_weight_grad": True},
    "torch_hugetlb": {"side": "torch", "glibc": "glibc.malloc.hugetlb=1"},
}


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


def _median(times: list[float]) -> float:
    return sorted(times)[len(times) // 2]


def _time_steps(fn, warmup: int, runs: int) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def make_batch(size: int, batch: int, people: int, seed: int = 0) -> dict:
    """uint8 images, keypoints, validity and uint8 masks of synthetic scenes (NumPy)."""
    import numpy as np

    from pose2seg_jax.data.synthetic import generate_scene

    rng = np.random.default_rng(seed)
    images = np.zeros((batch, size, size, 3), np.uint8)
    keypoints = np.zeros((batch, people, 17, 3), np.float32)
    masks = np.zeros((batch, people, size, size), np.uint8)
    for b in range(batch):
        scene = generate_scene(rng, size, size, min_people=people, max_people=people)
        images[b] = scene.image
        keypoints[b] = scene.keypoints[:people]
        masks[b] = scene.masks[:people] > 0
    return {
        "image": images,
        "keypoints": keypoints,
        "valid": np.ones((batch, people), bool),
        "masks": masks,
    }


def _config(args, dtype: str = "float32"):
    from configs.default import get_config

    cfg = get_config()
    cfg.data.input_size = args.size
    cfg.data.max_people = args.people
    cfg.train.batch_size = args.batch
    cfg.model.dtype = dtype
    if args.tiny:
        cfg.model.backbone_depth = 18
        cfg.model.seg_units = 1
        cfg.model.seg_width = 64
    return cfg


def patch_convolutions() -> None:
    """Replaces ``jax.lax.conv_general_dilated`` (which flax's ``nn.Conv`` and the SegModule call)
    with the same function computed another way, for variant ``tapgrad``.

    Convolutions larger than 1x1 keep XLA's forward and input gradient, and get a custom
    weight gradient: one ``dot_general`` per kernel tap over the strided slice of the padded
    input that tap reads (no patch matrix is materialised).

    (1x1 convolutions are ``dot_general`` in the models themselves: ``models/layers.py``. An
    earlier ``dot_1x1`` variant of this patch measured that change before it was made.)

    Only NHWC/HWIO convolutions without dilation or groups are rewritten; others pass through.
    """
    import jax
    import jax.numpy as jnp
    from jax import lax

    original = lax.conv_general_dilated
    nhwc = ("NHWC", "HWIO", "NHWC")

    def plain(lhs, rhs, strides, padding, kw) -> bool:
        if lhs.ndim != 4 or kw.get("feature_group_count", 1) != 1:
            return False
        if kw.get("batch_group_count", 1) != 1:
            return False
        for name in ("lhs_dilation", "rhs_dilation"):
            if kw.get(name) is not None and tuple(kw[name]) != (1, 1):
                return False
        dn = lax.conv_dimension_numbers(lhs.shape, rhs.shape, kw.get("dimension_numbers"))
        return dn == lax.conv_dimension_numbers(lhs.shape, rhs.shape, nhwc)

    def pads_of(lhs, rhs, strides, padding):
        if isinstance(padding, str):
            return lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], strides, padding)
        return [tuple(p) for p in padding]

    def tap_slices(x, kh, kw_, strides, out_hw):
        sh, sw = strides
        ho, wo = out_hw
        for i in range(kh):
            for j in range(kw_):
                yield i, j, x[:, i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw]

    def tap_conv(lhs, rhs, strides, pads, precision):
        @jax.custom_vjp
        def conv(x, w):
            return original(x, w, strides, pads, dimension_numbers=nhwc, precision=precision)

        def fwd(x, w):
            return conv(x, w), (x, w)

        def bwd(res, g):
            x, w = res
            _, input_vjp = jax.vjp(lambda t: conv_plain(t, w), x)
            xp = jnp.pad(x, [(0, 0), pads[0], pads[1], (0, 0)])
            taps = {}
            for i, j, xs in tap_slices(xp, w.shape[0], w.shape[1], strides, g.shape[1:3]):
                taps[i, j] = jnp.einsum("nhwc,nhwd->cd", xs, g, precision=precision)
            rows = [jnp.stack([taps[i, j] for j in range(w.shape[1])]) for i in range(w.shape[0])]
            return input_vjp(g)[0], jnp.stack(rows).astype(w.dtype)

        def conv_plain(x, w):
            return original(x, w, strides, pads, dimension_numbers=nhwc, precision=precision)

        conv.defvjp(fwd, bwd)
        return conv(lhs, rhs)

    def patched(lhs, rhs, window_strides, padding, **kw):
        strides = tuple(window_strides)
        if not plain(lhs, rhs, strides, padding, kw) or kw.get("preferred_element_type"):
            return original(lhs, rhs, window_strides, padding, **kw)
        pads = pads_of(lhs, rhs, strides, padding)
        precision = kw.get("precision")
        if rhs.shape[:2] != (1, 1):
            return tap_conv(lhs, rhs, strides, pads, precision)
        return original(lhs, rhs, window_strides, padding, **kw)

    lax.conv_general_dilated = patched
    jax.lax.conv_general_dilated = patched


def run_jax(args, variant: dict) -> dict:
    """The JAX side (in a subprocess): timings, FLOPs, compile time and peak memory."""
    import jax
    import jax.numpy as jnp

    from pose2seg_jax.ops.templates import load_templates
    from pose2seg_jax.training import parallel, schedule, state, steps

    base_rss = _rss_mib()
    if variant.get("tap_weight_grad"):
        patch_convolutions()
    cfg = _config(args, variant.get("dtype", "float32"))
    templates = jnp.asarray(load_templates())
    model = state.create_model(cfg)
    lr = schedule.create_schedule(cfg, 14_150 * cfg.train.batch_size)
    train_state = state.create_train_state(cfg, model, lr, templates, jax.random.key(0))
    if variant.get("remat"):
        # Recompute the forward pass in the backward pass instead of keeping its activations.
        def apply_fn(variables, *inputs, rngs, **kwargs):
            body = jax.checkpoint(lambda v, r, *x: model.apply(v, *x, rngs=r, **kwargs))
            return body(variables, rngs, *inputs)

        train_state = train_state.replace(apply_fn=apply_fn)
    mesh = parallel.data_mesh()
    train_state = parallel.replicate(mesh, train_state)
    step = parallel.shard_step(
        steps.train_step,
        mesh,
        donate_state=variant.get("donate", True),
        align_size=cfg.model.align_size,
        augment=cfg.train.augment,
        learning_rate_fn=lr,
    )
    batch = parallel.global_batch(mesh, make_batch(args.size, args.batch, args.people))
    start = time.perf_counter()
    # As train.py: compiled ahead, then the compiler's freed heap handed back to the OS.
    compiled = parallel.compile_ahead(step, train_state, batch, templates)
    compile_s = time.perf_counter() - start
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    memory = compiled.memory_analysis()
    holder = [train_state]
    losses = []

    def once():
        new_state, metrics = compiled(holder[0], batch, templates)
        holder[0] = new_state
        losses.append(float(jax.block_until_ready(metrics)["loss"]))

    times = _time_steps(once, args.warmup, args.runs)
    return {
        "median_s": _median(times),
        "times_s": times,
        "compile_s": compile_s,
        "flops": float(cost.get("flops", 0.0)),
        "temp_mib": memory.temp_size_in_bytes / 2**20,
        "peak_rss_mib": _rss_mib(),
        "rss_after_import_mib": base_rss,
        "losses": losses,
        "jax": jax.__version__,
    }


def _numpy_warp_mask(mask, dst_to_src, size: int):
    """Bilinear warp of one (H, W) float mask to (size, size), zero outside (NumPy)."""
    import numpy as np

    h, w = mask.shape
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    sx = dst_to_src[0, 0] * xs + dst_to_src[0, 1] * ys + dst_to_src[0, 2]
    sy = dst_to_src[1, 0] * xs + dst_to_src[1, 1] * ys + dst_to_src[1, 2]
    x0, y0 = np.floor(sx).astype(np.int64), np.floor(sy).astype(np.int64)
    fx, fy = sx - x0, sy - y0
    out = np.zeros((size, size))
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            xi, yi = x0 + dx, y0 + dy
            inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
            values = mask[np.clip(yi, 0, h - 1), np.clip(xi, 0, w - 1)]
            out += np.where(inside, values, 0.0) * wx * wy
    return out


def _numpy_augmentation(rng, size: int):
    """A random similarity about the align frame's centre (REFERENCE.md section 6), NumPy."""
    import numpy as np

    angle = np.deg2rad(rng.uniform(-30.0, 30.0))
    scale = rng.uniform(0.8, 1.2)
    shift = rng.uniform(-0.1 * size, 0.1 * size, 2)
    a, b, c = scale * np.cos(angle), scale * np.sin(angle), size / 2
    return np.array(
        [
            [a, b, (1 - a) * c - b * c + shift[0]],
            [-b, a, b * c + (1 - a) * c + shift[1]],
            [0.0, 0.0, 1.0],
        ]
    )


def reference_preprocess(batch: dict, templates, rng) -> tuple:
    """The reference's host work, one person at a time: fit, augment, skeleton, target warp.

    Returns (feature_to_align (B, P, 3, 3), skeleton (B, P, 55, A, A), targets (B, P, A, A)).
    """
    import numpy as np

    from benchmarks.bench_align import numpy_skeleton
    from tests.ops.reference_fit import ref_select_matrix

    keypoints, masks = batch["keypoints"], batch["masks"]
    b_count, p_count = keypoints.shape[:2]
    input_to_feature = np.diag([1.0 / STRIDE, 1.0 / STRIDE, 1.0])
    matrices = np.zeros((b_count, p_count, 3, 3))
    skeleton = np.zeros((b_count, p_count, 55, ALIGN, ALIGN), np.float32)
    targets = np.zeros((b_count, p_count, ALIGN, ALIGN), np.int64)
    for b in range(b_count):
        for p in range(p_count):
            kp = keypoints[b, p].astype(np.float64)
            points = kp.copy()
            points[:, :2] = kp[:, :2] / STRIDE
            matrix = _numpy_augmentation(rng, ALIGN) @ ref_select_matrix(points, templates)[0]
            matrices[b, p] = matrix
            align_points = points.copy()
            align_points[:, :2] = points[:, :2] @ matrix[:2, :2].T + matrix[:2, 2]
            skeleton[b, p] = numpy_skeleton(align_points, ALIGN).transpose(2, 0, 1)
            to_source = np.linalg.inv(matrix @ input_to_feature)
            warped = _numpy_warp_mask(masks[b, p].astype(np.float64), to_source, ALIGN)
            targets[b, p] = warped >= 0.5
    return matrices, skeleton, targets


def run_torch(args, variant: dict) -> dict:
    """The PyTorch side (in a subprocess): timings and peak memory."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from pose2seg_jax.conversion.torch_model import TorchPose2Seg
    from pose2seg_jax.ops.image import IMAGENET_MEAN, IMAGENET_STD
    from pose2seg_jax.ops.templates import load_templates

    torch.set_num_threads(os.cpu_count() or 1)
    base_rss = _rss_mib()
    cfg = _config(args)
    m = cfg.model
    model = TorchPose2Seg(
        m.backbone_depth,
        m.backbone_layout,
        m.backbone_width,
        m.fpn_features,
        m.seg_units,
        m.seg_width,
        m.align_size,
    ).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.train.learning_rate)
    batch = make_batch(args.size, args.batch, args.people)
    templates = load_templates()
    images_u8 = torch.from_numpy(batch["image"])
    mean = torch.from_numpy(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.from_numpy(IMAGENET_STD).view(1, 3, 1, 1)
    rng = np.random.default_rng(0)
    prep_times, losses = [], []

    def once():
        start = time.perf_counter()
        matrices, skeleton, targets = reference_preprocess(batch, templates, rng)
        prep_times.append(time.perf_counter() - start)
        images = (images_u8.permute(0, 3, 1, 2).float() / 255.0 - mean) / std
        logits = model(images, torch.from_numpy(matrices).float(), torch.from_numpy(skeleton))
        loss = F.cross_entropy(logits.flatten(0, 1), torch.from_numpy(targets).flatten(0, 1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())

    times = _time_steps(once, args.warmup, args.runs)
    return {
        "median_s": _median(times),
        "times_s": times,
        "preprocess_s": _median(prep_times[args.warmup :]),
        "peak_rss_mib": _rss_mib(),
        "rss_after_import_mib": base_rss,
        "losses": losses,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


def matmul_gflops(n: int = 4096, runs: int = 5) -> float:
    """float32 GFLOP/s of an n x n matmul in JAX (this process)."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    mm = jax.jit(lambda x: x @ x)
    times = _time_steps(lambda: jax.block_until_ready(mm(a)), 2, runs)
    return 2 * n**3 / _median(times) / 1e9


def _child(args, side: str, name: str) -> dict:
    variant = VARIANTS.get(name, {})
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    env.pop("GLIBC_TUNABLES", None)
    if variant.get("xla"):
        env["XLA_FLAGS"] = variant["xla"]
    if variant.get("glibc"):
        env["GLIBC_TUNABLES"] = variant["glibc"]
    command = [sys.executable, __file__, "--side", side, "--variant", name]
    command += ["--size", str(args.size), "--batch", str(args.batch)]
    command += ["--people", str(args.people), "--warmup", str(args.warmup)]
    command += ["--runs", str(args.runs)] + (["--tiny"] if args.tiny else [])
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        return {"error": f"exit {out.returncode}: {out.stderr.strip().splitlines()[-1:]}"}
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"[{side} {name}] {json.dumps(result)}", file=sys.stderr, flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=512, help="input side (pixels)")
    parser.add_argument("--batch", type=int, default=4, help="images per step")
    parser.add_argument("--people", type=int, default=8, help="people per image")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--runs", type=int, default=3, help="timed steps per subprocess")
    parser.add_argument("--tiny", action="store_true", help="small network (smoke test)")
    parser.add_argument(
        "--variants",
        default="base,onednn",
        help=f"comma-separated JAX variants, of: {', '.join(VARIANTS)}",
    )
    parser.add_argument(
        "--baseline-once",
        action="store_true",
        help="run the PyTorch baseline only first (default: first and last)",
    )
    parser.add_argument("--side", choices=("jax", "torch"), help=argparse.SUPPRESS)
    parser.add_argument("--variant", default="base", help=argparse.SUPPRESS)
    parser.add_argument("--results", default=None, help="append a Markdown section here")
    args = parser.parse_args()
    if args.side:
        variant = VARIANTS.get(args.variant, {})
        run = run_jax if args.side == "jax" else run_torch
        print(json.dumps(run(args, variant)))
        return

    names = [n for n in args.variants.split(",") if n]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {list(VARIANTS)}")
    load_before = os.getloadavg()
    date = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    peaks = [matmul_gflops()]
    torch_result = _child(args, "torch", "torch")
    rows = []
    for name in names:
        side = VARIANTS[name].get("side", "jax")
        rows.append((name, side, _child(args, side, name)))
    torch_again = torch_result if args.baseline_once else _child(args, "torch", "torch")
    peaks.append(matmul_gflops())
    peak = max(peaks)
    load_after = os.getloadavg()
    if "error" in torch_result or "error" in torch_again:
        sys.exit(f"PyTorch side failed: {torch_result} {torch_again}")
    # The PyTorch baseline runs first and last; its figure is the median of both runs' steps.
    torch_times = torch_result["times_s"] + (
        [] if torch_again is torch_result else torch_again["times_s"]
    )
    torch_median = _median(torch_times)
    torch_peak = max(torch_result["peak_rss_mib"], torch_again["peak_rss_mib"])
    flops = next((r["flops"] for n, s, r in rows if s == "jax" and "flops" in r), 0.0)
    people = args.batch * args.people

    lines = [
        f"## bench_train.py: training step, {args.batch} x {args.size}^2 images, "
        f"{args.people} people each{' (tiny network)' if args.tiny else ''}, CPU",
        "",
        f"- date: {date}; machine: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, {platform.platform()}; no GPU in this task",
        f"- load average before/after: {load_before[0]:.2f} / {load_after[0]:.2f} "
        "(other jobs may have shared the CPU)",
        f"- large matmul (4096^2 fp32, JAX): {peak:.1f} GFLOP/s (before/after: "
        f"{peaks[0]:.1f} / {peaks[1]:.1f}); step: {flops / 1e9:.0f} GFLOP (XLA count of the "
        "float32 JAX step, used for every row)",
        f"- each row one subprocess: {args.warmup} warm-up step(s), median of {args.runs} timed "
        f"steps; PyTorch ran {'first' if args.baseline_once else 'first and last'} "
        f"({len(torch_times)} steps pooled, "
        f"{torch_result['threads']} threads); its per-person NumPy preprocessing took "
        f"{torch_result['preprocess_s']:.2f} s of each step ({people} people)",
        "",
        "| side | variant | setting | median s | steps s | GFLOP/s | % of matmul | peak RSS MiB "
        "| XLA temp MiB | compile s | JAX/torch speed ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def setting(name: str) -> str:
        v = VARIANTS.get(name, {})
        parts = [f"`XLA_FLAGS={v['xla']}`"] if v.get("xla") else []
        parts += [f"`GLIBC_TUNABLES={v['glibc']}`"] if v.get("glibc") else []
        parts += [f"dtype {v['dtype']}"] if v.get("dtype") else []
        parts += ["jax.checkpoint on the model"] if v.get("remat") else []
        parts += ["state not donated"] if v.get("donate") is False else []
        parts += ["per-tap dot weight gradients"] if v.get("tap_weight_grad") else []
        return ", ".join(parts) or "-"

    def row(label: str, name: str, r: dict, median: float, peak_rss: float, ratio: str) -> str:
        gflops = flops / median / 1e9
        steps_s = " ".join(f"{t:.1f}" for t in r["times_s"])
        temp = f"{r['temp_mib']:.0f}" if "temp_mib" in r else "-"
        compile_s = f"{r['compile_s']:.0f}" if "compile_s" in r else "-"
        return (
            f"| {label} | {name} | {setting(name)} | {median:.2f} | {steps_s} | {gflops:.1f} "
            f"| {100 * gflops / peak:.0f}% | {peak_rss:.0f} | {temp} | {compile_s} | {ratio} |"
        )

    lines.append(
        row(
            f"PyTorch {torch_result['torch']}",
            "torch",
            torch_result,
            torch_median,
            torch_peak,
            "1.00",
        )
    )
    for name, side, r in rows:
        if "error" in r:
            lines.append(f"| {side} | {name} | {setting(name)} | failed: {r['error']} |")
            continue
        ratio = torch_median / r["median_s"]
        label = f"JAX {r['jax']}" if side == "jax" else f"PyTorch {r['torch']}"
        lines.append(row(label, name, r, r["median_s"], r["peak_rss_mib"], f"{ratio:.2f}"))
    text = "\n".join(lines) + "\n"
    print(text)
    print(json.dumps({"torch": [torch_result, torch_again], "rows": rows}, indent=1))
    if args.results:
        with open(args.results, "a") as f:
            f.write("\n" + text)


if __name__ == "__main__":
    main()
