r"""Benchmark of the align stage (issue 2): jitted JAX against the reference's per-person stage.

The stage: fit every person against all templates, sample a 256-channel 128x128 feature map
into 64x64 per person (Affine-Align), and draw the 55 skeleton channels; 32 people in 4 images.

Baseline, measured in the same run: the reference's way, one person at a time: NumPy template
fitting (least squares per template, tests/ops/reference_fit.py), NumPy skeleton drawing (one
vectorised map per joint and limb) and PyTorch's ``grid_sample`` on a copy of the person's
feature map (what the reference does).

Memory bound: the sampling must read the feature map and write the aligned features; its
achieved bandwidth is compared with a large NumPy copy of the same number of bytes measured in
the same run, like for like: the sampling writing into an output buffer it already owns (a
donated buffer, which XLA writes in place) against ``np.copyto`` into a buffer it already owns,
and the sampling into a fresh output (what a plain ``jit`` call does) against a NumPy copy into
a fresh array. Also against a compiled XLA program that moves the same bytes without a gather
(the bandwidth XLA's CPU backend reaches with its own stores into a fresh output). Large fresh
buffers cost a page fault per 4 KB page on this machine (the kernel zeroes each page on first
touch); the run is repeated with transparent huge pages for malloc
(``GLIBC_TUNABLES=glibc.malloc.hugetlb=1``), which must be set before the process starts.

  .venv/bin/python benchmarks/bench_align.py            # both memory settings
  .venv/bin/python benchmarks/bench_align.py --single   # this process's setting only
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

B, P, C, F, A = 4, 8, 256, 128, 64
ROUNDS = 9  # interleaved sampling/copy rounds


def median_time(fn, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def make_inputs(seed: int = 0):
    """A random feature map and the keypoints of 8 synthetic people per 512x512 image.

    The poses come from the project's synthetic scenes (human proportions, varied sizes and
    poses, occluded joints), so the fitted matrices and sampled windows are realistic.
    """
    from pose2seg_jax.data.synthetic import generate_scene

    rng = np.random.default_rng(seed)
    features = rng.standard_normal((B, F, F, C)).astype(np.float32)
    keypoints = np.zeros((B, P, 17, 3), np.float32)
    for b in range(B):
        scene = generate_scene(rng, 512, 512, min_people=P, max_people=P)
        keypoints[b] = scene.keypoints[:P]
    return features, keypoints


def numpy_skeleton(points: np.ndarray, size: int = A, sigma: float = 3.0) -> np.ndarray:
    """The reference's drawing: one vectorised NumPy map per joint and per limb."""
    from pose2seg_jax.ops.keypoints import LIMBS

    maps = np.zeros((size, size, 55), np.float32)
    ys, xs = np.mgrid[0:size, 0:size]
    for k, (x, y, v) in enumerate(points):
        if v > 0:
            d = ((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma**2)
            maps[..., k] = np.where(d < 4.6025, np.exp(-d), 0) * (-1 if v == 1 else 1)
    for limb, (a, b) in enumerate(LIMBS):
        (xa, ya, va), (xb, yb, vb) = points[a], points[b]
        if va <= 0 or vb <= 0 or (xa == xb and ya == yb):
            continue
        n = np.hypot(xb - xa, yb - ya)
        ux, uy = (xb - xa) / n, (yb - ya) / n
        x0, x1 = max(round(min(xa, xb) - 1), 0), min(round(max(xa, xb) + 1), size)
        y0, y1 = max(round(min(ya, yb) - 1), 0), min(round(max(ya, yb) + 1), size)
        box = np.zeros((size, size), bool)
        box[y0:y1, x0:x1] = True
        on = box & (np.abs((xs - xa) * uy - (ys - ya) * ux) < 1)
        maps[..., 17 + 2 * limb][on] = ux
        maps[..., 18 + 2 * limb][on] = uy
    return maps


def reference_stage(features_nchw, keypoints, templates):
    """The per-person stage of the reference: NumPy fit + NumPy skeleton + grid_sample."""
    import torch

    from pose2seg_jax.conversion.torch_model import align_features
    from pose2seg_jax.ops.warps import scale_matrix, transform_keypoints
    from tests.ops.reference_fit import ref_select_matrix

    m2 = scale_matrix(0.25)
    out = []
    for b in range(B):
        for p in range(P):
            points = np.asarray(transform_keypoints(keypoints[b, p], m2))
            matrix = ref_select_matrix(points, templates)[0]
            person_map = features_nchw[b : b + 1].clone()  # the reference copies it per person
            aligned = align_features(person_map, torch.from_numpy(matrix[None, None]).float(), A)
            align_points = np.asarray(transform_keypoints(points, matrix))
            out.append((aligned, numpy_skeleton(align_points)))
    return out


def run_single() -> dict:
    import jax
    import jax.numpy as jnp
    import torch

    from pose2seg_jax.ops import align, stage
    from pose2seg_jax.ops import templates as templates_lib

    torch.set_num_threads(os.cpu_count() or 1)
    features, keypoints = make_inputs()
    templates = templates_lib.load_templates()
    valid = np.ones((B, P), bool)
    f, k, v, t = map(jnp.asarray, (features, keypoints, valid, templates))

    fitted = jax.jit(
        lambda k, t: stage.align_stage(jnp.zeros((B, F, F, 1)), k, jnp.ones((B, P), bool), t)[1][
            "template_index"
        ]
    )(k, t)
    stage_fn = jax.jit(
        lambda f, k, v, t: stage.align_stage(f, k, v, t, align_size=A, feature_stride=4)
    )
    matrices = stage_fn(f, k, v, t)[-1]["feature_to_align"]
    sample_fn = jax.jit(lambda f, m: align.align_people(f, m, align_size=A))

    # The same sampling written into an output buffer the caller already owns: the buffer is
    # donated and the result is written over all of it, so XLA aliases the output to it and
    # the fused sampling stores straight into mapped memory (the results are checked equal).
    def sample_into(f, m, out):
        return jax.lax.dynamic_update_slice(out, align.align_people(f, m, align_size=A), (0,) * 5)

    owned_fn = jax.jit(sample_into, donate_argnums=2)
    owned = {"out": owned_fn(f, matrices, jnp.zeros((B, P, A, A, C), jnp.float32))}
    if not bool(jnp.array_equal(owned["out"], sample_fn(f, matrices))):
        raise AssertionError("sampling into a donated buffer differs from the plain call")

    def run_stage():
        jax.block_until_ready(stage_fn(f, k, v, t))

    def run_sample():
        jax.block_until_ready(sample_fn(f, matrices))

    def run_sample_owned():
        owned["out"] = owned_fn(f, matrices, owned["out"])
        jax.block_until_ready(owned["out"])

    stage_s = median_time(run_stage, 15)
    sample_s = median_time(run_sample, 15)

    features_nchw = torch.from_numpy(np.ascontiguousarray(features.transpose(0, 3, 1, 2)))
    ref_s = median_time(lambda: reference_stage(features_nchw, keypoints, templates), 3, 1)

    sample_bytes = features.nbytes + B * P * A * A * C * 4
    src = np.random.default_rng(1).standard_normal(sample_bytes // 8).astype(np.float32)
    dst = np.empty_like(src)

    def run_copy():
        np.copyto(dst, src)

    def run_copy_fresh():
        src.copy()

    # XLA's own ceiling for these bytes: a compiled program that reads the feature map once and
    # writes an output of the aligned features' size with no gather (each image's four
    # 64x64 quadrants, twice), so plain streaming stores into a fresh buffer.
    def quadrants(features):
        q = features.reshape(B, 2, A, 2, A, C).transpose(0, 1, 3, 2, 4, 5).reshape(B, 4, A, A, C)
        return jnp.concatenate([q, q * 2.0], axis=1)

    stream_fn = jax.jit(quadrants)

    def run_stream():
        jax.block_until_ready(stream_fn(f))

    copy_s = median_time(run_copy, 15)
    copy_bw = 2 * src.nbytes / copy_s
    sample_bw = sample_bytes / sample_s
    # The same comparison interleaved: on a shared 2-core VM both figures drift by tens of
    # percent within a minute, so each round times the sampling, the copy and XLA's streaming
    # program back to back and the fractions are taken per round (median over the rounds, and
    # their range).
    fractions, owned_fractions, fresh_fractions, of_stream = [], [], [], []
    owned_ms = []
    for _ in range(ROUNDS):
        round_sample = median_time(run_sample, 5, warmup=1)
        round_owned = median_time(run_sample_owned, 5, warmup=1)
        round_copy = median_time(run_copy, 5, warmup=1)
        round_copy_fresh = median_time(run_copy_fresh, 5, warmup=1)
        round_stream = median_time(run_stream, 5, warmup=1)
        copy_bw_round = 2 * src.nbytes / round_copy
        fractions.append((sample_bytes / round_sample) / copy_bw_round)
        owned_fractions.append((sample_bytes / round_owned) / copy_bw_round)
        fresh_fractions.append((sample_bytes / round_sample) / (2 * src.nbytes / round_copy_fresh))
        of_stream.append(round_stream / round_sample)
        owned_ms.append(round_owned * 1e3)
    people = B * P
    return {
        "people": people,
        "jax_stage_ms": stage_s * 1e3,
        "jax_stage_ms_per_person": stage_s * 1e3 / people,
        "reference_stage_ms_per_person": ref_s * 1e3 / people,
        "speedup_per_person": ref_s / stage_s,
        "sampling_ms": sample_s * 1e3,
        "sampling_bytes_MB": sample_bytes / 1e6,
        "sampling_GBps": sample_bw / 1e9,
        "numpy_copy_GBps": copy_bw / 1e9,
        "sampling_fraction_of_copy": sample_bw / copy_bw,
        "interleaved_fraction_median": float(np.median(fractions)),
        "interleaved_fraction_min": float(np.min(fractions)),
        "interleaved_fraction_max": float(np.max(fractions)),
        "sampling_owned_ms": float(np.median(owned_ms)),
        "owned_fraction_median": float(np.median(owned_fractions)),
        "owned_fraction_min": float(np.min(owned_fractions)),
        "owned_fraction_max": float(np.max(owned_fractions)),
        "fresh_fraction_median": float(np.median(fresh_fractions)),
        "fresh_fraction_min": float(np.min(fresh_fractions)),
        "fresh_fraction_max": float(np.max(fresh_fractions)),
        "fraction_of_xla_stream_median": float(np.median(of_stream)),
        "fraction_of_xla_stream_min": float(np.min(of_stream)),
        "fraction_of_xla_stream_max": float(np.max(of_stream)),
        "people_on_default_matrix": int(np.sum(np.asarray(fitted) < 0)),
        "GLIBC_TUNABLES": os.environ.get("GLIBC_TUNABLES", ""),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--single", action="store_true", help="measure this process only")
    args = parser.parse_args()
    if args.single:
        print(json.dumps(run_single()))
        return
    results = []
    for tunables in ("", "glibc.malloc.hugetlb=1"):
        env = dict(os.environ, GLIBC_TUNABLES=tunables)
        out = subprocess.run(
            [sys.executable, __file__, "--single"], env=env, capture_output=True, text=True
        )
        if out.returncode:
            sys.exit(out.stderr)
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    for r in results:
        print(
            f"[GLIBC_TUNABLES={r['GLIBC_TUNABLES'] or '(unset)'}] stage {r['jax_stage_ms']:.1f} ms "
            f"for {r['people']} people = {r['jax_stage_ms_per_person']:.2f} ms/person; "
            f"reference {r['reference_stage_ms_per_person']:.2f} ms/person; "
            f"speed-up {r['speedup_per_person']:.1f}x; sampling {r['sampling_ms']:.1f} ms for "
            f"{r['sampling_bytes_MB']:.0f} MB = {r['sampling_GBps']:.1f} GB/s, "
            f"{100 * r['sampling_fraction_of_copy']:.0f}% of a NumPy copy "
            f"({r['numpy_copy_GBps']:.1f} GB/s), interleaved over {ROUNDS} rounds "
            f"{100 * r['interleaved_fraction_median']:.0f}% "
            f"({100 * r['interleaved_fraction_min']:.0f}-"
            f"{100 * r['interleaved_fraction_max']:.0f}%); like for like, interleaved: "
            f"into an owned output {r['sampling_owned_ms']:.1f} ms, "
            f"{100 * r['owned_fraction_median']:.0f}% "
            f"({100 * r['owned_fraction_min']:.0f}-{100 * r['owned_fraction_max']:.0f}%) "
            "of a copy into an owned buffer, into a fresh output "
            f"{100 * r['fresh_fraction_median']:.0f}% "
            f"({100 * r['fresh_fraction_min']:.0f}-{100 * r['fresh_fraction_max']:.0f}%) "
            "of a copy into a fresh array; "
            f"{100 * r['fraction_of_xla_stream_median']:.0f}% "
            f"({100 * r['fraction_of_xla_stream_min']:.0f}-"
            f"{100 * r['fraction_of_xla_stream_max']:.0f}%) of an XLA program streaming the "
            "same bytes without a gather; "
            f"{r['people_on_default_matrix']} people on the default matrix"
        )


if __name__ == "__main__":
    main()
