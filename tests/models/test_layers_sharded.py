"""Our BatchNorm and chunked convolution under shard_map on 2 simulated devices.

Their backward passes are hand-written (custom VJPs); inside ``shard_map`` such a rule must
return cotangents of its inputs' mesh-axis types (a ``psum`` for an invariant input, e.g. a
``pmean``-ed statistic). The worker compares them with flax's BatchNorm and a plain
convolution there; it needs its own process for the device count.
"""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("sharded_layers_worker.py")


def test_custom_vjps_match_under_shard_map() -> None:
    env = dict(os.environ)
    env.update(
        JAX_PLATFORMS="cpu",
        XLA_FLAGS="--xla_force_host_platform_device_count=2",
        PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
    )
    result = subprocess.run(
        [sys.executable, str(WORKER)], env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert result.stdout.strip().endswith("ok")
