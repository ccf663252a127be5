"""Shared by the training, evaluation and entry-point tests: data, subprocess environment."""

import os
import socket
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_CACHE: dict[str, str] = {}


def synthetic_data(tmp_path_factory, *, min_people: int = 1, train: int = 8, val: int = 4) -> str:
    """A small synthetic COCO-format dataset (96 px images), made once per session.

    ``min_people=3`` makes every training image fill the tiny config's 3 people slots, so that
    every device of a data-parallel step sees the same number of real people (the SegModule's
    cross-device BatchNorm weighs devices equally, ``models/pose2seg.py``).
    """
    key = f"{min_people}-{train}-{val}"
    if key not in _CACHE:
        from pose2seg_jax.data import synthetic

        root = str(tmp_path_factory.mktemp(f"synthetic{key}"))
        common = dict(size=96, min_people=min_people, max_people=max(4, min_people), progress=False)
        synthetic.write_dataset(root, "train", train, seed=0, **common)
        synthetic.write_dataset(root, "val", val, seed=1, **common)
        _CACHE[key] = root
    return _CACHE[key]


def compile_cache(tmp_path_factory) -> str:
    """One persistent XLA compilation cache for every subprocess of the session.

    The tiny model's training step takes 20-50 s to compile on 2 busy cores and each training
    or evaluation subprocess would compile it again; with the cache only the first does.
    """
    if "cache" not in _CACHE:
        _CACHE["cache"] = str(tmp_path_factory.mktemp("xla_cache"))
    return _CACHE["cache"]


def subprocess_env(cache_dir: str, **extra: str) -> dict:
    env = dict(os.environ)
    env.update(
        JAX_PLATFORMS="cpu",
        PYTHONPATH=REPO + os.pathsep + env.get("PYTHONPATH", ""),
        JAX_COMPILATION_CACHE_DIR=cache_dir,
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
    )
    env.pop("XLA_FLAGS", None)
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(args, env, *, timeout=600, check=True) -> subprocess.CompletedProcess:
    """Runs ``python ARGS`` in the repository; on failure the assertion shows the output tail."""
    proc = subprocess.run(
        [sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )
    if check:
        assert proc.returncode == 0, f"{args} failed ({proc.returncode}):\n{tail(proc)}"
    return proc


def tail(proc, n: int = 4000) -> str:
    text = (proc.stdout or "") + (proc.stderr or "")
    return text.replace("\r", "\n")[-n:]
