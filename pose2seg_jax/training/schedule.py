"""Learning-rate schedules built from optax pieces.

``config.train.schedule = "step"`` is the reference's (REFERENCE.md section 9): linear warm-up,
then the rate multiplied by ``decay_factor`` at each of ``decay_steps``. ``"cosine"`` keeps the
same warm-up, then follows a half cosine from the base rate to zero at the run's last step
(``decay_steps`` unused), a common choice when the run length is all one wants to set. It did
not pay on the synthetic demo: 3840 cosine steps gave segm AP 0.427 where the 4800-step
reference-style schedule gives 0.486-0.510 (benchmarks/RESULTS.md, demo schedule).
"""

from collections.abc import Sequence

import ml_collections
import optax


def learning_rate_schedule(
    *,
    base: float,
    warmup_steps: int,
    warmup_factor: float,
    decay_steps: Sequence[int],
    decay_factor: float,
) -> optax.Schedule:
    """Linear warm-up from ``base * warmup_factor`` to ``base``, then steps of ``decay_factor``.

    Args:
      base: learning rate after warm-up.
      warmup_steps: warm-up length in steps (0: none).
      warmup_factor: starting fraction of ``base``.
      decay_steps: steps at which the rate is multiplied by ``decay_factor``.
      decay_factor: multiplier applied at each decay step.

    Returns:
      An optax schedule: step -> learning rate.
    """
    warmup_steps = max(0, int(warmup_steps))
    # join_schedules restarts the count at the warm-up's end; optax scales from the boundary on
    # (count >= boundary), as the reference decays from the decay step itself.
    boundaries = {int(s) - warmup_steps: decay_factor for s in decay_steps if s > 0}
    steps = optax.piecewise_constant_schedule(base, boundaries)
    if warmup_steps == 0:
        return steps
    warmup = optax.linear_schedule(base * warmup_factor, base, warmup_steps)
    return optax.join_schedules([warmup, steps], [warmup_steps])


def cosine_schedule(
    *, base: float, warmup_steps: int, warmup_factor: float, total_steps: int
) -> optax.Schedule:
    """Linear warm-up from ``base * warmup_factor`` to ``base``, then a cosine to 0 at ``total_steps``.

    Args:
      base: learning rate after warm-up.
      warmup_steps: warm-up length in steps (0: none).
      warmup_factor: starting fraction of ``base``.
      total_steps: the run length; the rate reaches 0 there.

    Returns:
      An optax schedule: step -> learning rate.
    """
    warmup_steps = max(0, int(warmup_steps))
    if total_steps <= warmup_steps:
        raise ValueError(
            f"a cosine schedule needs more steps ({total_steps}) than its warm-up "
            f"({warmup_steps}); lower config.train.warmup_steps"
        )
    return optax.warmup_cosine_decay_schedule(
        init_value=base * warmup_factor if warmup_steps else base,
        peak_value=base,
        warmup_steps=warmup_steps,
        decay_steps=int(total_steps),
        end_value=0.0,
    )


SCHEDULES = ("step", "cosine")


def total_steps(config: ml_collections.ConfigDict, num_train_images: int) -> int:
    """The run length in steps: ``num_epochs`` of the training file when set, else ``num_steps``."""
    if config.train.num_epochs > 0:
        per_epoch = max(1, num_train_images // config.train.batch_size)
        return int(config.train.num_epochs * per_epoch)
    return int(config.train.num_steps)


def decay_boundaries(config: ml_collections.ConfigDict, num_train_images: int) -> tuple[int, ...]:
    """The decay steps: from ``decay_epochs`` when the run is in epochs, else ``decay_steps``."""
    if config.train.num_epochs > 0:
        per_epoch = max(1, num_train_images // config.train.batch_size)
        return tuple(int(e * per_epoch) for e in config.train.decay_epochs)
    return tuple(int(s) for s in config.train.decay_steps)


def create_schedule(config: ml_collections.ConfigDict, num_train_images: int) -> optax.Schedule:
    """The schedule of ``config.train`` for a training file of ``num_train_images`` images."""
    kind = config.train.get("schedule", "step")
    if kind not in SCHEDULES:
        raise ValueError(
            f"config.train.schedule={kind!r} is not one of {SCHEDULES}; "
            "pass --config.train.schedule=step (the reference's) or cosine"
        )
    if kind == "cosine":
        return cosine_schedule(
            base=config.train.learning_rate,
            warmup_steps=config.train.warmup_steps,
            warmup_factor=config.train.warmup_factor,
            total_steps=total_steps(config, num_train_images),
        )
    return learning_rate_schedule(
        base=config.train.learning_rate,
        warmup_steps=config.train.warmup_steps,
        warmup_factor=config.train.warmup_factor,
        decay_steps=decay_boundaries(config, num_train_images),
        decay_factor=config.train.decay_factor,
    )
