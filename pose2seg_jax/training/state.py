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

    The kernel-gradient fields apply on the backends of ``config.model.custom_grad_backends``
    (CPU, where they were measured); elsewhere every convolution takes XLA's gradients.
    """
    m = config.model
    # Absent from configs saved before these fields existed.
    kernel_grads = {
        "backbone_stem_kernel_grad": m.get("backbone_stem_kernel_grad", "patches"),
        "seg_stem_kernel_grad": m.get("seg_stem_kernel_grad", "taps"),
        "conv_kernel_grad": m.get("conv_kernel_grad", "taps"),
    }
    if jax.default_backend() not in tuple(m.get("custom_grad_backends", ("cpu",))):
        kernel_grads = dict.fromkeys(kernel_grads, "xla")
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
        **kernel_grads,
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


def torch_variables(config: ml_collections.ConfigDict, path: str, *, backbone_only: bool) -> dict:
    """Flax variables of a PyTorch file, checked against the sizes of ``config.model``.

    Args:
      config: the full config.
      path: a ``.pth``/``.pkl`` state dict: a whole Pose2Seg model in the reference's names, or
        with ``backbone_only`` an ImageNet ResNet in torchvision's layout (``fc`` ignored).
      backbone_only: read only the ResNet.

    Returns:
      {'params': ..., 'batch_stats': ...} of NumPy float32 arrays.
    """
    from pose2seg_jax.conversion import convert

    m = config.model
    sizes = dict(
        backbone_depth=m.backbone_depth,
        backbone_layout=m.backbone_layout,
        backbone_width=m.backbone_width,
    )
    if not backbone_only:
        sizes.update(
            fpn_features=m.fpn_features,
            seg_units=m.seg_units,
            seg_width=m.seg_width,
            skeleton=m.skeleton,
        )
    return convert.torch_to_flax(
        convert.load_torch_file(path), backbone_only=backbone_only, source=path, **sizes
    )


def merge_variables(target: dict, loaded: dict, *, source: str = "loaded variables") -> dict:
    """``target`` with every leaf that ``loaded`` holds replaced by the loaded value.

    Args:
      target: {'params': ..., 'batch_stats': ...} of the model being trained.
      loaded: a subset of the same tree (e.g. only ``backbone``), same shapes.
      source: how to name ``loaded`` in errors.

    Returns:
      A new {'params', 'batch_stats'} tree (dtypes of ``target``).

    Raises:
      ValueError: a loaded leaf has no counterpart in ``target`` or another shape.
    """
    from flax import traverse_util

    merged = {}
    for collection in ("params", "batch_stats"):
        flat = dict(traverse_util.flatten_dict(dict(target.get(collection, {}))))
        for key, value in traverse_util.flatten_dict(dict(loaded.get(collection, {}))).items():
            name = "/".join((collection, *key))
            if key not in flat:
                raise ValueError(f"{source}: {name} is not a variable of the model")
            if tuple(flat[key].shape) != tuple(value.shape):
                raise ValueError(
                    f"{source}: {name} has shape {tuple(value.shape)}, the model "
                    f"{tuple(flat[key].shape)}; check config.model's sizes"
                )
            flat[key] = jnp.asarray(value, flat[key].dtype)
        merged[collection] = traverse_util.unflatten_dict(flat)
    return merged
