"""Affine-Align's bilinear sampling on the CPU as a compiled XLA FFI kernel (``cpu_sampler.cc``).

Why by hand: on the CPU, XLA fuses ``map_coordinates`` into a vectorised four-corner gather, but
it writes the (B, P, A, A, C) output with ordinary stores, so every output cache line is first
read from memory; a program with no gather at all, moving the same bytes, reaches only 39-61%
of a ``memcpy`` (benchmarks/RESULTS.md). The kernel computes the same function as
``map_coordinates(order=1, mode="constant", cval=0)`` (its weights and order of summation) and
writes whole channel rows with non-temporal stores. No library offers this sampling.

The kernel is compiled from source with the system's C++ compiler on first use (a few seconds,
``-O3 -march=native``) and cached under ``$POSE2SEG_JAX_CACHE`` (default
``~/.cache/pose2seg_jax``), keyed by the source, the jax version and the CPU. Where there is no
compiler, or ``POSE2SEG_JAX_CPU_SAMPLER=0`` is set, ``available()`` is False and Affine-Align uses
``map_coordinates`` (with one warning when a build failed). Only the CPU backend uses it
(``jax.lax.platform_dependent``); GPUs and TPUs keep XLA's gather.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp

TARGET = "pose2seg_bilinear_sample"
SOURCE = Path(__file__).with_suffix(".cc")
FLAGS = ("-O3", "-march=native", "-ffp-contract=off", "-std=c++17", "-shared", "-fPIC")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "flags")):
                return line
    except OSError:
        pass
    return platform.processor()


def _cache_dir() -> Path:
    root = os.environ.get("POSE2SEG_JAX_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "pose2seg_jax"
    )
    return Path(root) / "cpu_sampler"


def library_path() -> Path:
    """Where the compiled kernel for this source, jax version, compiler flags and CPU lives."""
    key = hashlib.sha256()
    for part in (SOURCE.read_bytes(), jax.__version__, " ".join(FLAGS), _cpu_model()):
        key.update(part if isinstance(part, bytes) else part.encode())
    return _cache_dir() / f"cpu_sampler-{key.hexdigest()[:16]}.so"


def build(path: Path) -> None:
    """Compiles ``cpu_sampler.cc`` into ``path`` (atomically: concurrent builds are safe).

    Raises:
      RuntimeError: no C++ compiler, or the compilation failed (with the compiler's message).
    """
    compiler = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if not compiler:
        raise RuntimeError("no C++ compiler found (set CXX or install g++)")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        out = Path(tmp) / path.name
        command = [compiler, *FLAGS, f"-I{jax.ffi.include_dir()}", str(SOURCE), "-o", str(out)]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
        os.replace(out, path)


@functools.cache
def available() -> bool:
    """Builds (once, cached on disk) and registers the kernel; False where it cannot be used."""
    if os.environ.get("POSE2SEG_JAX_CPU_SAMPLER", "1") == "0":
        return False
    path = library_path()
    try:
        if not path.exists():
            build(path)
        library = ctypes.cdll.LoadLibrary(str(path))
        jax.ffi.register_ffi_target(
            TARGET, jax.ffi.pycapsule(library.Pose2SegBilinearSample), platform="cpu"
        )
    except (OSError, RuntimeError, AttributeError) as error:
        warnings.warn(
            f"pose2seg_jax: the CPU sampling kernel is not available ({error}); Affine-Align "
            "uses jax.scipy.ndimage.map_coordinates instead (slower on CPU, same results). "
            "Set POSE2SEG_JAX_CPU_SAMPLER=0 to silence this.",
            RuntimeWarning,
            stacklevel=2,
        )
        return False
    return True


def sample(features: jax.Array, src_x: jax.Array, src_y: jax.Array) -> jax.Array:
    """Bilinear samples of each image's map at each person's coordinates, zero outside.

    Call only where ``available()`` and on the CPU backend (no autodiff rule: Affine-Align's
    custom VJP supplies the gradient).

    Args:
      features: (B, H, W, C) float32 maps.
      src_x, src_y: (B, P, A, A) float32 sampling coordinates (column, row).

    Returns:
      (B, P, A, A, C) float32, equal to ``map_coordinates(order=1, mode="constant")`` per channel.
    """
    shape = (*src_x.shape, features.shape[-1])
    call = jax.ffi.ffi_call(
        TARGET, jax.ShapeDtypeStruct(shape, jnp.float32), vmap_method="sequential"
    )
    out = call(features.astype(jnp.float32), src_x.astype(jnp.float32), src_y.astype(jnp.float32))
    # Inside shard_map the result varies over the mesh axes its inputs vary over; ffi_call
    # returns the type as declared, without them.
    axis_type = getattr(jax.typeof(features), "manual_axis_type", None)
    varying = tuple(sorted(axis_type.varying)) if axis_type is not None else ()
    return jax.lax.pcast(out, varying, to="varying") if varying else out
