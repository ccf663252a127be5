"""train.py then eval.py as a user runs them: one step of the tiny config, then evaluation of
its checkpoint by workdir, by step folder and as a PyTorch file made by pose2seg-convert."""

import json
import subprocess
import sys

import pytest

from tests.training import helpers

pytestmark = pytest.mark.slow


def eval_args(data, workdir, *extra):
    return [
        "eval.py",
        "--config=configs/tiny.py",
        f"--workdir={workdir}",
        f"--config.data.val_annotations={data}/val.json",
        f"--config.data.val_images={data}",
        *extra,
    ]


def read_eval(workdir):
    metrics = json.loads((workdir / "eval" / "val_metrics.json").read_text())
    results = json.loads((workdir / "eval" / "val_segm_results.json").read_text())
    return metrics, results


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One training step of the tiny config, without a val split."""
    data = helpers.synthetic_data(tmp_path_factory)
    env = helpers.subprocess_env(helpers.compile_cache(tmp_path_factory))
    run = tmp_path_factory.mktemp("entry") / "run"
    helpers.run(
        [
            "train.py",
            "--config=configs/tiny.py",
            f"--workdir={run}",
            f"--config.data.train_annotations={data}/train.json",
            f"--config.data.train_images={data}",
            "--config.train.num_steps=1",
        ],
        env,
    )
    return data, env, run


def test_one_step_then_eval_by_workdir_step_folder_and_pth(trained, tmp_path):
    data, env, run = trained
    assert (run / "checkpoints" / "1" / "commit_success.txt").exists()
    assert not (run / "eval").exists()  # no val split configured: evaluation is skipped

    helpers.run(eval_args(data, run), env)
    metrics, results = read_eval(run)
    val = json.loads(open(f"{data}/val.json").read())
    people = [a for a in val["annotations"] if a.get("num_keypoints", 1) > 0]
    assert metrics["num_people"] == len(people) == len(results)
    assert sorted(r["image_id"] for r in results) == sorted(a["image_id"] for a in people)
    assert all(r["score"] == 1.0 for r in results)
    assert 0.0 <= metrics["AP"] <= 1.0

    by_step = tmp_path / "by_step"
    helpers.run(eval_args(data, by_step, f"--checkpoint={run}/checkpoints/1"), env)
    assert read_eval(by_step) == (metrics, results)

    pth = tmp_path / "model.pth"
    helpers.run(
        [
            "-m",
            "pose2seg_jax.conversion.convert",
            "to-torch",
            f"{run}/checkpoints/1/state",
            str(pth),
        ],
        env,
    )
    by_pth = tmp_path / "by_pth"
    helpers.run(eval_args(data, by_pth, f"--checkpoint={pth}"), env)
    metrics_pth, results_pth = read_eval(by_pth)
    assert metrics_pth == metrics
    assert len(results_pth) == len(results)


def test_eval_on_two_processes_writes_what_one_process_does(trained, tmp_path):
    """Each process feeds its shard of every eval batch; process 0 alone writes the files."""
    data, env, run = trained
    one = tmp_path / "one"
    helpers.run(eval_args(data, one, f"--checkpoint={run}/checkpoints"), env)
    port = helpers.free_port()
    two = tmp_path / "two"
    multi_env = dict(env, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                *eval_args(data, two, f"--checkpoint={run}/checkpoints"),
                f"--coordinator=127.0.0.1:{port}",
                "--num_processes=2",
                f"--process_id={i}",
            ],
            cwd=helpers.REPO,
            env=multi_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    for p, text in zip(procs, outputs):
        assert p.returncode == 0, text.replace("\r", "\n")[-4000:]
    assert read_eval(two) == read_eval(one)
