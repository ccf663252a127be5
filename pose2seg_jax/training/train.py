"""The training loop: ``train_and_evaluate(config, workdir)``.

Data parallel over all devices of all processes (``training/parallel.py``); each process reads
its own shard of the training file. Checkpoints go to ``workdir/checkpoints`` and a restart with
the same workdir resumes from the latest one, data order included.
"""

import json
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from tqdm.auto import tqdm

from pose2seg_jax.data import coco, pipeline
from pose2seg_jax.ops import templates as templates_lib
from pose2seg_jax.training import checkpoint, parallel, schedule, steps
from pose2seg_jax.training import state as state_lib


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def load_templates(config: ml_collections.ConfigDict) -> jax.Array:
    """The (2K, 17, 3) templates of ``config.templates`` (None: the packaged default)."""
    return jnp.asarray(templates_lib.load_templates(config.templates))


def ensure_synthetic_data(config: ml_collections.ConfigDict) -> None:
    """Generates the synthetic splits of ``config.data.root`` that are not on disk yet."""
    if config.data.kind != "synthetic" or not config.data.root:
        return
    from pose2seg_jax.data import synthetic

    for split, count in (
        ("train", config.data.synthetic_train_images),
        ("val", config.data.synthetic_val_images),
    ):
        if count and not os.path.exists(os.path.join(config.data.root, f"{split}.json")):
            if jax.process_index() == 0:
                summary = synthetic.write_dataset(config.data.root, split, count)
                logging.info("%s", summary.line())
                print(summary.line())
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("synthetic data written")


def load_train_records(config: ml_collections.ConfigDict):
    """Reads the training file; logs what was skipped and why."""
    if not config.data.train_annotations:
        raise ValueError(
            "config.data.train_annotations is not set: pass "
            "--config.data.train_annotations=PATH (and --config.data.train_images=DIR)"
        )
    records, report = coco.load_coco_persons(
        config.data.train_annotations, config.data.train_images, mode="train"
    )
    logging.info("training data: %s", report.summary())
    records = [r for r in records if r.num_people > 0]
    if not records:
        raise ValueError(f"no usable training people in {config.data.train_annotations}")
    return records


def initial_state(config, model, lr_schedule, templates, mesh):
    """Fresh parameters, or those of ``config.train.init_from`` (a PyTorch file), replicated.

    With ``config.train.init_backbone_only`` the file is an ImageNet ResNet (torchvision layout)
    and only the backbone is replaced; otherwise it is a whole Pose2Seg model (e.g. the released
    weights). The optimiser state starts fresh either way.
    """
    state = state_lib.create_train_state(
        config, model, lr_schedule, templates, jax.random.PRNGKey(config.seed)
    )
    if config.train.init_from:
        loaded = state_lib.torch_variables(
            config, config.train.init_from, backbone_only=config.train.init_backbone_only
        )
        merged = state_lib.merge_variables(
            {"params": state.params, "batch_stats": state.batch_stats},
            loaded,
            source=config.train.init_from,
        )
        state = state.replace(
            params=merged["params"],
            batch_stats=merged["batch_stats"],
            opt_state=state.tx.init(merged["params"]),
        )
        logging.info("initialised from %s", config.train.init_from)
    return parallel.replicate(mesh, state)


def data_checkpoint(data) -> dict:
    """The input iterators' states of ALL processes, for the checkpoint (a collective).

    orbax's ``JsonSave`` writes process 0's value only, so each process's state is gathered into
    it under ``processes``. In practice they are identical (``{'next_index': k}``: every process
    has consumed the same number of batches of its own shard), but nothing relies on that.
    """
    return {"processes": parallel.allgather_json(data.get_state())}


def restore_data(data, saved: dict) -> None:
    """Puts this process's iterator back to its checkpointed position."""
    states = saved.get("processes")
    if states is None:  # written by one process, before per-process states
        data.set_state(saved)
        return
    if len(states) != jax.process_count():
        raise ValueError(
            f"the checkpoint holds the input state of {len(states)} processes, this run has "
            f"{jax.process_count()}: resume with the same number of processes (the data order "
            "is per process), or start a new workdir with --config.train.init_from"
        )
    data.set_state(states[jax.process_index()])


def _close_iterator(data) -> None:
    """Stops grain's worker processes and frees their shared-memory batches (when it can)."""
    close = getattr(data, "close", None)
    if close is not None:
        close()


def _write_scalars(writer, step, scalars):
    if writer is None:
        return
    for name, value in scalars.items():
        writer.add_scalar(name, value, step)
    writer.flush()


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains ``config`` in ``workdir`` (resuming if it holds a checkpoint), evaluating on the way.

    Args:
      config: the full config (configs/*.py).
      workdir: output folder: checkpoints, TensorBoard events, metrics, pictures.

    Returns:
      The last evaluation's metrics (empty if no evaluation ran).
    """
    from pose2seg_jax.evaluation import evaluate as evaluate_lib

    os.makedirs(workdir, exist_ok=True)
    mesh = parallel.data_mesh()
    num_devices = mesh.size
    if config.train.batch_size % num_devices:
        raise ValueError(
            f"config.train.batch_size={config.train.batch_size} is not divisible by the "
            f"{num_devices} devices; pass --config.train.batch_size={num_devices * 1} or a multiple"
        )
    local_batch = config.train.batch_size // jax.process_count()

    ensure_synthetic_data(config)
    records = load_train_records(config)
    num_steps = schedule.total_steps(config, len(records))
    lr_schedule = schedule.create_schedule(config, len(records))
    templates = load_templates(config)
    model = state_lib.create_model(
        config, bn_axis_name=parallel.AXIS if config.train.sync_batch_norm else None
    )
    state = initial_state(config, model, lr_schedule, templates, mesh)

    data = pipeline.train_iterator(
        records,
        input_size=config.data.input_size,
        max_people=config.data.max_people,
        batch_size=local_batch,
        seed=config.seed,
        shard_index=jax.process_index(),
        shard_count=jax.process_count(),
        num_workers=config.data.num_workers,
    )
    ckpt = checkpoint.Checkpointer(
        os.path.join(workdir, "checkpoints"), keep=config.train.keep_checkpoints
    )
    start = ckpt.latest_step()
    if start is not None:
        state, data_state = ckpt.restore(state)
        if data_state is not None:
            restore_data(data, data_state)
        logging.info("resumed from step %d", start)
        if jax.process_index() == 0:
            print(f"resumed from step {start} of {ckpt.directory}", flush=True)
    start = int(jax.device_get(state.step))

    train_step = parallel.shard_step(
        steps.train_step,
        mesh,
        align_size=config.model.align_size,
        augment=config.train.augment,
        learning_rate_fn=lr_schedule,
    )
    predict = evaluate_lib.predict_function(model, mesh)
    writer = None
    if jax.process_index() == 0:
        from tensorboardX import SummaryWriter

        writer = SummaryWriter(os.path.join(workdir, "tensorboard"))
    history_path = os.path.join(workdir, "history.json")
    history = {"train": [], "eval": []}
    if start and os.path.exists(history_path):
        with open(history_path) as f:
            history = json.load(f)
        history["train"] = [h for h in history["train"] if h["step"] <= start]
        history["eval"] = [h for h in history["eval"] if h["step"] <= start]

    metrics_eval: dict = {}
    bar = tqdm(total=num_steps, initial=start, desc="train", disable=jax.process_index() != 0)
    window_start, window_images = time.perf_counter(), 0
    for step in range(start + 1, num_steps + 1):
        batch = parallel.global_batch(mesh, next(data))
        if step == start + 1:
            # Compiled once, for the shapes of the first batch: a later batch of other
            # shapes is an error rather than a silent recompilation.
            train_step = parallel.compile_ahead(train_step, state, batch, templates)
        state, metrics = train_step(state, batch, templates)
        window_images += config.train.batch_size
        loss = float(metrics["loss"])
        if not np.isfinite(loss):
            ckpt.close()
            _close_iterator(data)
            raise NonFiniteLossError(
                f"loss is {loss} at step {step}; stopped. The last good checkpoint is step "
                f"{ckpt.latest_step()} in {ckpt.directory}. Lower --config.train.learning_rate "
                "or check the data (keypoints, masks) of this step."
            )
        if step % config.train.log_every == 0 or step == num_steps:
            elapsed = time.perf_counter() - window_start
            scalars = {
                "train/loss": loss,
                "train/learning_rate": float(metrics["learning_rate"]),
                "train/images_per_second": window_images / max(elapsed, 1e-9),
            }
            _write_scalars(writer, step, scalars)
            history["train"].append({"step": step, **scalars})
            bar.set_postfix(
                loss=f"{loss:.4f}",
                lr=f"{scalars['train/learning_rate']:.2e}",
                img_s=f"{scalars['train/images_per_second']:.1f}",
            )
            window_start, window_images = time.perf_counter(), 0
        bar.update(1)
        last = step == num_steps
        if step % config.train.checkpoint_every == 0 or last:
            ckpt.save(step, state, data_checkpoint(data), force=last)
        if config.data.val_annotations and (
            (config.train.eval_every and step % config.train.eval_every == 0) or last
        ):
            metrics_eval = evaluate_lib.evaluate_state(
                config,
                workdir,
                model,
                state,
                templates,
                mesh,
                split="val",
                step=step,
                predict=predict,
            )
            history["eval"].append({"step": step, **metrics_eval})
            _write_scalars(
                writer, step, {f"eval/{k}": v for k, v in metrics_eval.items() if k[:2] == "AP"}
            )
        if jax.process_index() == 0 and (step % config.train.log_every == 0 or last):
            with open(history_path, "w") as f:
                json.dump(history, f)
    bar.close()
    ckpt.close()
    _close_iterator(data)
    if jax.process_index() == 0:
        from pose2seg_jax.visualization import plot_curves

        plot_curves(history, os.path.join(workdir, "curves.png"))
    return metrics_eval
