"""Training state: parameters, BatchNorm statistics, optimiser state, step and random key."""

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax.training import train_state

from pose2seg_jax.models.pose2seg import Pose2Seg


class TrainState(train_state.TrainState):
    """flax's TrainState plus BatchNorm statistics and the run's base random key."""

    batch_stats: Any
    rng: jax.Array


def create_model(config: ml_collections.ConfigDict, *, bn_axis_name: str | None = None) -> Pose2Seg:
    """The Pose2Seg network of ``config.model``.

    Args:
      config: the full config.
      bn_axis_name: mapped axis over which BatchNorm averages its statistics (None: per device).
    """
    m = config.model
    return Pose2Seg(
        backbone_depth=m.backbone_depth,
        backbone_layout=m.backbone_layout,
        backbone_width=m.backbone_width,
        fpn_features=m.fpn_features,
        seg_units=m.seg_units,
        seg_width=m.seg_width,
        align_size=m.align_size,
        feature_stride=m.feature_stride,
        alignment=m.alignment,
        skeleton=m.skeleton,
        mapping=m.mapping,
        bn_axis_name=bn_axis_name,
        dtype=jnp.dtype(m.dtype),
    )


def create_optimizer(schedule: optax.Schedule) -> optax.GradientTransformation:
    """Adam without weight decay (REFERENCE.md section 9)."""
    return optax.adam(schedule)


def create_train_state(
    config: ml_collections.ConfigDict,
    model: Pose2Seg,
    schedule: optax.Schedule,
    templates: jax.Array,
    rng: jax.Array,
) -> TrainState:
    """Initialises parameters and optimiser on dummy inputs of the configured sizes.

    Args:
      config: the full config.
      model: the network.
      schedule: learning-rate schedule.
      templates: (T, 17, 3) pose templates.
      rng: PRNG key; split into initialisation and the run's base key.
    """
    init_rng, run_rng = jax.random.split(rng)
    size = config.data.input_size
    images = jnp.zeros((1, size, size, 3), jnp.float32)
    keypoints = jnp.zeros((1, 1, 17, 3), jnp.float32)
    valid = jnp.ones((1, 1), bool)

    @jax.jit
    def init(key):
        return model.init({"params": key}, images, keypoints, valid, templates, train=False)

    variables = init(init_rng)
    return TrainState.create(
        apply_fn=model.apply,
        params=variables["params"],
        batch_stats=variables.get("batch_stats", {}),
        tx=create_optimizer(schedule),
        rng=run_rng,
    )
