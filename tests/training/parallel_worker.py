"""Runs two training steps of the tiny config in a fresh process, for tests/training/test_parallel.py.

It is a script, not a test: device counts and jax.distributed must be set before jax starts, so
every configuration runs in its own process.

  python parallel_worker.py single DATA OUT        # 1 device (no shard_map) and 4 devices
  python parallel_worker.py multi DATA OUT PID PORT  # one of two processes of 2 devices each

Both modes feed the same two global batches of 4 images (made by the input pipeline with a fixed
seed, augmentation off) and write the flattened parameters and BatchNorm statistics as .npz.
"""

import os
import sys

MODE = sys.argv[1]
DEVICES = 4 if MODE == "single" else 2
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={DEVICES}"
os.environ["JAX_PLATFORMS"] = "cpu"

import functools  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import traverse_util  # noqa: E402

from configs import tiny  # noqa: E402
from pose2seg_jax.data import coco, pipeline  # noqa: E402
from pose2seg_jax.training import parallel, schedule, steps  # noqa: E402
from pose2seg_jax.training import state as state_lib  # noqa: E402
from pose2seg_jax.training.train import load_templates  # noqa: E402

GLOBAL_BATCH = 4
NUM_STEPS = 2
# Plain SGD: Adam's first steps are lr * sign(g) for every parameter, so parameters whose true
# gradient is 0 (the SegModule's conv biases in front of BatchNorm) move by +-lr on rounding
# noise of 1e-9, and the runs differ by ~lr however exact the gradients. SGD moves each
# parameter by lr * g: the comparison then measures the gradients themselves.
SGD_LR = 0.002


def config_for_test():
    config = tiny.get_config()
    config.train.sync_batch_norm = True
    config.train.augment = False
    config.train.batch_size = GLOBAL_BATCH
    return config


def global_batches(config, data_dir):
    records, _ = coco.load_coco_persons(
        os.path.join(data_dir, "train.json"), data_dir, mode="train"
    )
    it = pipeline.train_iterator(
        records,
        input_size=config.data.input_size,
        max_people=config.data.max_people,
        batch_size=GLOBAL_BATCH,
        seed=config.seed,
        shard_index=0,
        shard_count=1,
    )
    return [next(it) for _ in range(NUM_STEPS)], len(records)


def flat(tree, prefix):
    return {
        prefix + "/".join(k): np.asarray(v) for k, v in traverse_util.flatten_dict(tree).items()
    }


def snapshot(state, tag):
    out = flat(jax.device_get(state.params), f"{tag}/params/")
    out.update(flat(jax.device_get(state.batch_stats), f"{tag}/batch_stats/"))
    return out


def fresh_state(config, num_records, templates):
    """The initial state on the host (NumPy leaves), so that donation cannot consume it."""
    lr = schedule.create_schedule(config, num_records)
    model = state_lib.create_model(config)
    state = state_lib.create_train_state(config, model, lr, templates, jax.random.PRNGKey(0))
    tx = optax.sgd(SGD_LR)
    state = state.replace(tx=tx, opt_state=tx.init(state.params))
    return jax.device_get(state), lr


def single_step(config, lr):
    """The reference: plain jit, no mesh axis, one device, the whole batch."""
    step = jax.jit(
        functools.partial(
            steps.train_step, align_size=config.model.align_size, augment=False, learning_rate_fn=lr
        )
    )

    def run(state, batch, templates):
        state = jax.device_put(state, jax.devices()[0])
        new, metrics = step(state, batch, templates)
        return jax.device_get(new), float(metrics["loss"])

    return run


def sharded_step(config, lr, mesh, rows):
    """shard_map over ``mesh``; this process feeds ``rows`` of each global batch."""
    synced = state_lib.create_model(config, bn_axis_name=parallel.AXIS)
    step = parallel.shard_step(
        steps.train_step,
        mesh,
        align_size=config.model.align_size,
        augment=False,
        learning_rate_fn=lr,
    )

    def run(state, batch, templates):
        state = parallel.replicate(mesh, state.replace(apply_fn=synced.apply))
        local = {k: v[rows] for k, v in batch.items()}
        new, metrics = step(state, parallel.global_batch(mesh, local), templates)
        return jax.device_get(new).replace(apply_fn=state.apply_fn), float(metrics["loss"])

    return run


def with_variables(state, arrays, tag):
    """``state`` with the params and batch stats saved under ``tag`` by ``snapshot``."""
    out = {}
    for collection in ("params", "batch_stats"):
        prefix = f"{tag}/{collection}/"
        tree = {
            tuple(k[len(prefix) :].split("/")): arrays[k] for k in arrays if k.startswith(prefix)
        }
        out[collection] = traverse_util.unflatten_dict(tree)
    return state.replace(**out)


def main():
    data_dir, out = sys.argv[2], sys.argv[3]
    if MODE == "multi":
        pid, port, reference = int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
        jax.distributed.initialize(
            coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=pid
        )
        assert jax.device_count() == 4 and jax.local_device_count() == 2
    config = config_for_test()
    (b1, b2), num_records = global_batches(config, data_dir)
    templates = load_templates(config)
    init, lr = fresh_state(config, num_records, templates)
    mesh = parallel.data_mesh()
    arrays = snapshot(init, "init")
    results = {}
    if MODE == "single":
        assert jax.device_count() == 4
        single = single_step(config, lr)
        sharded = sharded_step(config, lr, mesh, slice(None))
        results["single1"] = single(init, b1, templates)
        results["single2"] = single(results["single1"][0], b2, templates)
        results["sharded1"] = sharded(init, b1, templates)
        # Step 2 from the reference's step-1 state, and from its own (end to end).
        results["forced2"] = sharded(results["single1"][0], b2, templates)
        results["sharded2"] = sharded(results["sharded1"][0], b2, templates)
    else:
        half = GLOBAL_BATCH // 2
        multi = sharded_step(config, lr, mesh, slice(pid * half, (pid + 1) * half))
        saved = dict(np.load(reference))
        results["multi1"] = multi(init, b1, templates)
        # Step 2 from the single process's step-1 state: the same inputs as its "sharded2".
        step1 = with_variables(init, saved, "sharded1").replace(step=1)
        results["multi2"] = multi(step1, b2, templates)
    for tag, (state, loss) in results.items():
        arrays.update(snapshot(state, tag))
        arrays[f"{tag}/loss"] = np.asarray(loss)
    # The replicated state is fully addressable on every process: both processes write their
    # copy and the test compares them with each other and with the single process's run.
    np.savez(out, **arrays)


if __name__ == "__main__":
    main()
