"""A training run killed with SIGKILL and restarted ends exactly where an uninterrupted run does.

Both runs are ``train.py`` subprocesses of the tiny config with a checkpoint every step and no
evaluation (``val_annotations`` unset, which must simply skip it). The killed run dies right
after its third checkpoint is committed, mid-run; the restart must restore parameters,
optimiser state, BatchNorm statistics, step, random key and the input iterator's position.
"""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from tests.training import helpers

pytestmark = pytest.mark.slow
NUM_STEPS = 12


def train_args(data: str, workdir: str) -> list[str]:
    return [
        "train.py",
        "--config=configs/tiny.py",
        f"--workdir={workdir}",
        f"--config.data.train_annotations={data}/train.json",
        f"--config.data.train_images={data}",
        f"--config.train.num_steps={NUM_STEPS}",
        "--config.train.checkpoint_every=1",
        "--config.train.keep_checkpoints=3",
        "--config.train.decay_steps=(8,)",
    ]


def final_state(workdir: str) -> dict:
    path = os.path.join(workdir, "checkpoints", str(NUM_STEPS), "state")
    return ocp.StandardCheckpointer().restore(path)


def committed(workdir: str, step: int) -> bool:
    return os.path.exists(os.path.join(workdir, "checkpoints", str(step), "commit_success.txt"))


def test_killed_run_resumes_exactly(tmp_path_factory, tmp_path):
    data = helpers.synthetic_data(tmp_path_factory)
    env = helpers.subprocess_env(helpers.compile_cache(tmp_path_factory))
    reference, killed = str(tmp_path / "reference"), str(tmp_path / "killed")
    helpers.run(train_args(data, reference), env)

    proc = subprocess.Popen(
        [sys.executable, *train_args(data, killed)],
        cwd=helpers.REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while not committed(killed, 3) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not committed(killed, NUM_STEPS)

    restart = helpers.run(train_args(data, killed), env)
    resumed = [line for line in restart.stdout.splitlines() if line.startswith("resumed from")]
    assert resumed and int(resumed[0].split()[3]) >= 3, helpers.tail(restart)

    a, b = final_state(reference), final_state(killed)
    leaves_a = jax.tree_util.tree_leaves_with_path(a)
    leaves_b = jax.tree_util.tree_leaves_with_path(b)
    assert [p for p, _ in leaves_a] == [p for p, _ in leaves_b]
    for (path, x), (_, y) in zip(leaves_a, leaves_b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=str(path))
    assert int(a["step"]) == NUM_STEPS
    assert {"params", "batch_stats", "opt_state", "rng", "step"} <= set(a)

    # The history of the resumed run has every step once, as the reference's.
    with open(os.path.join(killed, "history.json")) as f:
        steps = [h["step"] for h in json.load(f)["train"]]
    assert steps == list(range(1, NUM_STEPS + 1))
    assert not os.path.exists(os.path.join(killed, "eval"))
