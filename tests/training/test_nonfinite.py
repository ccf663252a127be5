"""A non-finite loss stops training with NonFiniteLossError; the last good checkpoint stays."""

import os

import pytest

from tests.training import helpers

pytestmark = pytest.mark.slow


def test_exploding_learning_rate_stops_with_clear_error(tmp_path_factory, tmp_path):
    data = helpers.synthetic_data(tmp_path_factory)
    env = helpers.subprocess_env(helpers.compile_cache(tmp_path_factory))
    workdir = tmp_path / "w"
    proc = helpers.run(
        [
            "train.py",
            "--config=configs/tiny.py",
            f"--workdir={workdir}",
            f"--config.data.train_annotations={data}/train.json",
            f"--config.data.train_images={data}",
            "--config.train.learning_rate=1e30",
            "--config.train.num_steps=4",
            "--config.train.checkpoint_every=1",
        ],
        env,
        check=False,
    )
    output = helpers.tail(proc, 20000)
    assert proc.returncode != 0, output
    assert "NonFiniteLossError" in output, output
    assert "Lower --config.train.learning_rate" in output
    # Step 1's loss (initial parameters) is finite and its checkpoint is written; step 2's
    # loss is not, and nothing is saved from then on.
    assert "at step 2" in output and "last good checkpoint is step 1" in output, output
    steps = sorted(int(d) for d in os.listdir(workdir / "checkpoints") if d.isdigit())
    assert steps == [1]
    assert (workdir / "checkpoints" / "1" / "commit_success.txt").exists()
