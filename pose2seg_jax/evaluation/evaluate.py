"""Evaluation: masks for every person of a COCO-format split, COCO segm AP, pictures.

``evaluate_state`` runs inside training; ``evaluate`` is ``eval.py``'s entry (latest checkpoint
of a workdir, or a checkpoint or PyTorch file). Ground-truth keypoints are the input by default
(the paper's "GT kpts" rows); ``config.eval.keypoints_file`` swaps in a pose estimator's COCO
keypoint results.
"""

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from pycocotools.coco import COCO
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


def predict_records(records, variables, model, templates, mesh, config, *, desc="eval"):
    """Masks for every person of ``records``.

    Yields:
      (record, masks (n, H, W) bool, keypoints (n, 17, 3)) per image, in record order.
    """
    predict = parallel.shard_predict(steps.predict_step, mesh, apply_fn=model.apply)
    batch_size = max(config.eval.batch_size, mesh.size)
    batch_size -= batch_size % mesh.size
    batches = pipeline.eval_batches(
        records,
        input_size=config.data.input_size,
        max_people=config.data.eval_max_people,
        batch_size=batch_size,
    )
    pending: dict[int, list] = {}
    by_index = dict(enumerate(records))
    done = 0
    bar = tqdm(total=len(records), desc=desc, leave=False)
    for batch in batches:
        device_batch = {k: batch[k] for k in ("image", "keypoints", "valid")}
        out = jax.device_get(predict(variables, device_batch, templates))
        for b in range(len(batch["record_index"])):
            index = int(batch["record_index"][b])
            if index < 0:
                continue
            record = by_index[index]
            valid = batch["valid"][b]
            image_to_align = out["input_to_align"][b][valid] @ batch["letterbox"][b]
            masks = warps.paste_masks_image(
                out["probs"][b][valid], image_to_align, record.height, record.width
            )
            pending.setdefault(index, []).append((batch["person_index"][b][valid], masks))
            if batch["last_pass"][b]:
                parts = pending.pop(index)
                order = np.concatenate([p for p, _ in parts])
                stacked = np.concatenate([m for _, m in parts]) if parts else None
                full = np.zeros((record.num_people, record.height, record.width), bool)
                if stacked is not None and len(order):
                    full[order] = stacked
                done += 1
                bar.update(1)
                yield record, full
    bar.close()


def evaluate_variables(
    config, workdir, model, variables, templates, mesh, *, split="val", step=None
) -> dict:
    """Evaluates ``variables`` on a split; writes metrics, results and overlays to workdir/eval."""
    records, annotation_file = load_eval_records(config, split)
    results, overlays = [], []
    for record, masks in predict_records(
        records, variables, model, templates, mesh, config, desc=f"eval {split}"
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
    gt = COCO(annotation_file)
    metrics, text = coco_eval.evaluate_segm(gt, results, image_ids=[r.image_id for r in records])
    metrics["num_images"] = len(records)
    metrics["num_people"] = sum(r.num_people for r in records)
    if step is not None:
        metrics["step"] = int(step)
    logging.info("%s segm:\n%s", split, text)
    if jax.process_index() == 0:
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
    return metrics


def evaluate_state(config, workdir, model, state, templates, mesh, *, split="val", step=None):
    """Evaluates a training state (its params and BatchNorm statistics)."""
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    return evaluate_variables(
        config, workdir, model, variables, templates, mesh, split=split, step=step
    )


def load_variables(path: str) -> dict:
    """Variables from our checkpoint (workdir, checkpoints folder, step) or a PyTorch file."""
    if os.path.isfile(path) and path.endswith((".pth", ".pkl", ".pt")):
        from pose2seg_jax.conversion import convert

        return convert.load_torch_file(path)
    from pose2seg_jax.training import checkpoint

    if os.path.isdir(os.path.join(path, "checkpoints")):
        path = os.path.join(path, "checkpoints")
    return checkpoint.restore_variables(path)


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
    variables = load_variables(checkpoint_path or workdir)
    variables = jax.tree.map(jnp.asarray, variables)
    model = state_lib.create_model(config)
    templates = load_templates(config)
    return evaluate_variables(
        config, workdir, model, parallel.replicate(mesh, variables), templates, mesh, split=split
    )
