"""Pure training and evaluation steps: ``state, batch -> state, metrics``.

The steps are written for one device's shard of the batch. With ``axis_name`` set they run
inside ``jax.shard_map`` over a ``data`` mesh axis (see ``training/parallel.py``): gradients
are summed over the axis of a loss divided by the GLOBAL pixel count, so any split of the
global batch over devices gives the gradient of the global mean loss.
"""

from typing import Any

import jax
import jax.numpy as jnp

from pose2seg_jax.ops import warps
from pose2seg_jax.ops.image import normalize_images
from pose2seg_jax.training.loss import segmentation_loss_sum
from pose2seg_jax.training.state import TrainState

Batch = dict[str, jax.Array]


def _psum(x, axis_name):
    return jax.lax.psum(x, axis_name) if axis_name else x


def mask_targets(masks: jax.Array, input_to_align: jax.Array, size: int) -> jax.Array:
    """(B, P, S, S) input-size masks -> (B, P, A, A) 0/1 targets through each person's matrix."""
    return jax.vmap(lambda m, t: warps.mask_targets(m, t, size=size))(masks, input_to_align)


def train_step(
    state: TrainState,
    batch: Batch,
    templates: jax.Array,
    *,
    align_size: int,
    augment: bool,
    learning_rate_fn=None,
    axis_name: str | None = None,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimiser step on a (per-device) batch.

    Args:
      state: the training state (replicated).
      batch: 'image' (B, S, S, 3) uint8, 'keypoints' (B, P, 17, 3), 'valid' (B, P),
        'masks' (B, P, S, S) uint8.
      templates: (T, 17, 3) pose templates.
      align_size: side of the align frame (and of the targets).
      augment: apply the align-space augmentation.
      learning_rate_fn: the schedule, for the logged learning rate.
      axis_name: the data-parallel mesh axis, or None on one device.

    Returns:
      The new state and metrics {'loss', 'people', 'learning_rate'} (global values).
    """
    rng = jax.random.fold_in(state.rng, state.step)
    if axis_name:
        rng = jax.random.fold_in(rng, jax.lax.axis_index(axis_name))
    images = normalize_images(batch["image"])
    valid = batch["valid"]

    def loss_fn(params):
        variables = {"params": params, "batch_stats": state.batch_stats}
        (logits, aux), updates = state.apply_fn(
            variables,
            images,
            batch["keypoints"],
            valid,
            templates,
            train=True,
            augment=augment,
            rngs={"augment": rng},
            mutable=["batch_stats"],
        )
        targets = mask_targets(batch["masks"], aux["input_to_align"], align_size)
        loss_sum, count = segmentation_loss_sum(logits, targets, valid)
        total = jnp.maximum(_psum(jax.lax.stop_gradient(count), axis_name), 1.0)
        return loss_sum / total, (updates["batch_stats"], loss_sum, total)

    params = state.params
    if axis_name:
        # Mark the replicated parameters as varying over the axis: otherwise shard_map's
        # check_vma sums their gradients implicitly and the psum below doubles it (ECOSYSTEM.md 1).
        params = jax.tree.map(lambda p: jax.lax.pcast(p, axis_name, to="varying"), params)
    grads, (batch_stats, loss_sum, total) = jax.grad(loss_fn, has_aux=True)(params)
    if axis_name:
        grads = jax.lax.psum(grads, axis_name)
        batch_stats = jax.lax.pmean(batch_stats, axis_name)
    metrics = {
        "loss": _psum(loss_sum, axis_name) / total,
        "people": _psum(jnp.sum(valid).astype(jnp.float32), axis_name),
        "learning_rate": learning_rate_fn(state.step) if learning_rate_fn else jnp.float32(0),
    }
    new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
    return new_state, metrics


def predict_step(
    variables: dict[str, Any],
    batch: Batch,
    templates: jax.Array,
    *,
    apply_fn,
) -> dict[str, jax.Array]:
    """Inference on a (per-device) batch: person probabilities and the matrices to paste them.

    Returns:
      {'probs': (B, P, A, A) person probability, 'input_to_align': (B, P, 3, 3)}.
    """
    images = normalize_images(batch["image"])
    logits, aux = apply_fn(
        variables, images, batch["keypoints"], batch["valid"], templates, train=False
    )
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)[..., 1]
    return {"probs": probs, "input_to_align": aux["input_to_align"]}
