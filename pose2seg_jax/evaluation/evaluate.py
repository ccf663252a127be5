"""Evaluation: masks for every person of a COCO-format split, COCO segm AP, pictures.

``evaluate_state`` runs inside training; ``evaluate`` is ``eval.py``'s entry (latest checkpoint
of a workdir, or a checkpoint or PyTorch file). Ground-truth keypoints are the input by default
(the paper's "GT kpts" rows); ``config.eval.keypoints_file`` swaps in a pose estimator's COCO
keypoint results.
"""

import json
import os

import jax
import ml_collections
import numpy as np
from absl import logging
from tqdm.auto import tqdm

from pose2seg_jax import visualization
from pose2seg_jax.data import coco, images, pipeline
from pose2seg_jax.evaluation import coco_eval
from pose2seg_jax.ops import warps
from pose2seg_jax.training import parallel, steps


def load_eval_records(config: ml_collections.ConfigDict, split: str = "val"):
    """The evaluated images and people (every annotated person with usable keypoints)."""
    annotations = config.data[f"{split}_annotations"]
    image_dir = config.data[f"{split}_images"]
    if not annotations:
        raise ValueError(
            f"config.data.{split}_annotations is not set: pass "
            f"--config.data.{split}_annotations=PATH --config.data.{split}_images=DIR"
        )
    records, report = coco.load_coco_persons(
        annotations, image_dir, mode="eval", keep_empty_images=True
    )
    logging.info("%s data: %s", split, report.summary())
    if config.eval.keypoints_file:
        records = coco.replace_keypoints(
            records,
            config.eval.keypoints_file,
            min_person_score=config.eval.min_person_score,
            min_joint_score=config.eval.min_joint_score,
        )
    return records, annotations


def predict_records(
    records, variables, model, templates, mesh, config, *, desc="eval", predict=None
):
    """Masks for every person of ``records``, on every device of every process.

    Each process reads its own shard of the evaluation rows (``pipeline.eval_batches`` with
    this process's index) and feeds it into the global batch; the outputs and the rows' paste-back
    keys are then gathered so that process 0 can paste every mask. Other processes run the same
    collective steps and yield nothing.

    Args:
      records: the evaluated images (``coco.load_coco_persons(..., mode='eval')``).
      variables: {'params', 'batch_stats'}, replicated over ``mesh``.
      model: the network.
      templates: (T, 17, 3) pose templates.
      mesh: the data mesh.
      config: the full config (batch size, input size, people per row).
      desc: progress bar label.
      predict: a jitted ``predict_step`` from ``predict_function`` (made here when None); pass
        the same one to every evaluation of a run so that it compiles once.

    Yields:
      (record, masks (n, H, W) bool) per image, when its last row is done (process 0 only;
      with several processes the images of a batch come in process order).
    """
    predict = predict or predict_function(model, mesh)
    per_process = eval_batch_size(config, mesh) // jax.process_count()
    batches = pipeline.eval_batches(
        records,
        input_size=config.data.input_size,
        max_people=config.data.eval_max_people,
        batch_size=per_process,
        shard_index=jax.process_index(),
        shard_count=jax.process_count(),
    )
    is_main = jax.process_index() == 0
    pending: dict[int, list] = {}
    bar = tqdm(total=len(records), desc=desc, leave=False, disable=not is_main)
    for local in batches:
        device_batch = parallel.global_batch(
            mesh, {k: local[k] for k in ("image", "keypoints", "valid")}
        )
        out = predict(variables, device_batch, templates)
        keys = ("record_index", "person_index", "last_pass", "valid", "letterbox")
        batch = parallel.allgather_rows({k: np.asarray(local[k]) for k in keys})
        out = jax.device_get(parallel.allgather_rows(out))
        if not is_main:
            continue
        for b in range(len(batch["record_index"])):
            index = int(batch["record_index"][b])
            if index < 0:
                continue
            record = records[index]
            valid = batch["valid"][b]
            # Every row pastes all its P slots (padding included) so that paste_masks compiles
            # once per canvas bucket, not once per people count.
            image_to_align = out["input_to_align"][b] @ batch["letterbox"][b]
            masks = warps.paste_masks_image(
                out["probs"][b], image_to_align, record.height, record.width
            )[valid]
            pending.setdefault(index, []).append((batch["person_index"][b][valid], masks))
            if batch["last_pass"][b]:
                parts = pending.pop(index)
                order = np.concatenate([p for p, _ in parts])
                full = np.zeros((record.num_people, record.height, record.width), bool)
                if len(order):
                    full[order] = np.concatenate([m for _, m in parts])
                bar.update(1)
                yield record, full
    bar.close()


def eval_batch_size(config: ml_collections.ConfigDict, mesh) -> int:
    """The global evaluation batch: ``config.eval.batch_size`` rounded up to the devices."""
    return -(-max(config.eval.batch_size, 1) // mesh.size) * mesh.size


def predict_function(model, mesh):
    """``predict_step`` of ``model`` jitted over ``mesh`` (make it once per run)."""
    return parallel.shard_predict(steps.predict_step, mesh, apply_fn=model.apply)


def evaluate_variables(
    config, workdir, model, variables, templates, mesh, *, split="val", step=None, predict=None
) -> dict:
    """Evaluates ``variables`` on a split; writes metrics, results and overlays to workdir/eval.

    Every process must call it (the prediction steps are collective); process 0 pastes the
    masks, runs COCOeval and writes the files, and every process returns its metrics.

    Args:
      config: the full config.
      workdir: output folder (files go to ``workdir/eval``).
      model: the network.
      variables: {'params', 'batch_stats'} replicated over ``mesh``.
      templates: (T, 17, 3) pose templates.
      mesh: the data mesh.
      split: 'val' or 'train' (``config.data.<split>_annotations``).
      step: the training step, recorded in the metrics.
      predict: see ``predict_records``.

    Returns:
      COCO segm metrics (AP, AP50, ..., occlusion subsets), image and people counts, step.
    """
    records, annotation_file = load_eval_records(config, split)
    results, overlays = [], []
    for record, masks in predict_records(
        records, variables, model, templates, mesh, config, desc=f"eval {split}", predict=predict
    ):
        for person in range(record.num_people):
            results.append(
                coco_eval.segm_result(
                    record.image_id, masks[person], int(record.annotation_ids[person])
                )
            )
        if len(overlays) < config.eval.num_overlays and record.num_people:
            image = images.read_image(record.file_name)
            overlays.append(visualization.overlay(image, masks, record.keypoints))
    metrics = {}
    if jax.process_index() == 0:
        # The same file whatever the number of processes: results in record order.
        position = {r.image_id: i for i, r in enumerate(records)}
        results.sort(key=lambda r: (position[r["image_id"]], r["annotation_id"]))
        gt = coco_eval.load_ground_truth(annotation_file)
        metrics, text = coco_eval.evaluate_segm(
            gt, results, image_ids=[r.image_id for r in records]
        )
        metrics["num_images"] = len(records)
        metrics["num_people"] = sum(r.num_people for r in records)
        if step is not None:
            metrics["step"] = int(step)
        logging.info("%s segm:\n%s", split, text)
        out_dir = os.path.join(workdir, "eval")
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, f"{split}_metrics.json"), "w") as f:
            json.dump(metrics, f, indent=2)
        with open(os.path.join(out_dir, f"{split}_segm_results.json"), "w") as f:
            json.dump(results, f)
        if overlays:
            visualization.save_png(
                visualization.grid(overlays), os.path.join(out_dir, f"{split}_overlays.png")
            )
    return parallel.allgather_json(metrics)[0]


def evaluate_state(
    config, workdir, model, state, templates, mesh, *, split="val", step=None, predict=None
):
    """Evaluates a training state (its params and BatchNorm statistics)."""
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    return evaluate_variables(
        config, workdir, model, variables, templates, mesh, split=split, step=step, predict=predict
    )


def load_variables(
    path: str, config: ml_collections.ConfigDict | None = None, sharding=None
) -> dict:
    """Variables from our checkpoint (workdir, checkpoints folder, step) or a PyTorch file.

    Args:
      path: a workdir, its ``checkpoints`` folder, one step folder, an orbax folder written by
        ``pose2seg-convert from-torch``, or a PyTorch ``.pth``/``.pkl``/``.pt`` state dict of the
        whole model (reference names).
      config: the config whose model sizes a PyTorch file is checked against (needed for one).
      sharding: placement of the restored arrays (see ``checkpoint.restore_variables``).
    """
    if os.path.isfile(path):
        if config is None:
            raise ValueError(f"reading the PyTorch file {path} needs the config's model sizes")
        from pose2seg_jax.training import state as state_lib

        return state_lib.torch_variables(config, path, backbone_only=False)
    from pose2seg_jax.training import checkpoint

    if os.path.isdir(os.path.join(path, "checkpoints")):
        path = os.path.join(path, "checkpoints")
    return checkpoint.restore_variables(path, sharding)


def evaluate(
    config: ml_collections.ConfigDict,
    workdir: str,
    checkpoint_path: str | None = None,
    split: str = "val",
) -> dict:
    """``eval.py``: evaluates the latest checkpoint of ``workdir`` (or ``checkpoint_path``)."""
    from pose2seg_jax.training import state as state_lib
    from pose2seg_jax.training.train import load_templates

    mesh = parallel.data_mesh()
    variables = load_variables(checkpoint_path or workdir, config, parallel.replicated(mesh))
    variables = {k: variables[k] for k in ("params", "batch_stats")}
    model = state_lib.create_model(config)
    templates = load_templates(config)
    return evaluate_variables(
        config, workdir, model, parallel.replicate(mesh, variables), templates, mesh, split=split
    )
