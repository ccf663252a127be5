"""No recompilation inside the training or evaluation loops.

A tiny run of 3 steps evaluates after every step (3 evaluations of 2 batches each, the batches
holding different images and people counts); every jitted function of the loops must have
compiled exactly once. The counts come from jax.monitoring's backend-compile events (a cache
hit of the persistent compilation cache still counts: a retrace would show).
"""

import json
import os

import pytest

from tests.training import helpers

pytestmark = pytest.mark.slow
WORKER = os.path.join(os.path.dirname(__file__), "compile_worker.py")


def test_each_loop_function_compiles_once(tmp_path_factory, tmp_path):
    data = helpers.synthetic_data(tmp_path_factory)
    env = helpers.subprocess_env(helpers.compile_cache(tmp_path_factory))
    out = tmp_path / "counts.json"
    args = [WORKER, f"{data}/train.json", data, f"{data}/val.json", str(tmp_path / "w"), str(out)]
    helpers.run(args, env)
    counts = json.loads(out.read_text())
    loop_functions = {
        name: n for name, n in counts.items() if "train_step" in name or "predict_step" in name
    }
    assert any("train_step" in name for name in loop_functions), counts
    assert any("predict_step" in name for name in loop_functions), counts
    assert all(n == 1 for n in loop_functions.values()), loop_functions
    # Pasting compiles once per canvas bucket (all val images share one), not per people count.
    assert counts.get("jit(_paste_masks)", 0) == 1, counts
    history = json.loads((tmp_path / "w" / "history.json").read_text())
    assert [e["step"] for e in history["eval"]] == [1, 2, 3]
    assert (tmp_path / "w" / "curves.png").stat().st_size > 0
    assert os.listdir(tmp_path / "w" / "tensorboard")
