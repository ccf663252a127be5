"""The learning-rate schedule against the reference's rule written out by hand."""

import importlib

import numpy as np
import pytest

from pose2seg_jax.training import schedule


def reference_lr(step, base=2e-4, warmup=1000, factor=1 / 3, decays=(212_250, 283_000)):
    if step < warmup:
        alpha = step / warmup
        lr = base * (factor * (1 - alpha) + alpha)
    else:
        lr = base
    return lr * 0.1 ** sum(step >= d for d in decays)


@pytest.mark.parametrize("step", [0, 1, 500, 999, 1000, 1001, 212_249, 212_250, 283_000, 353_749])
def test_paper_schedule(step):
    config = importlib.import_module("configs.default").get_config()
    fn = schedule.create_schedule(config, num_train_images=56_600)
    np.testing.assert_allclose(float(fn(step)), reference_lr(step), rtol=1e-5)


def test_epoch_schedule_decays_at_epochs():
    config = importlib.import_module("configs.coco_persons").get_config()
    images = 14_150 * 4
    assert schedule.total_steps(config, images) == 353_750
    assert schedule.decay_boundaries(config, images) == (212_250, 283_000)


def reference_cosine_lr(step, base, warmup, factor, total):
    """The cosine schedule written out: linear warm-up, then half a cosine from base to 0."""
    if step < warmup:
        alpha = step / warmup
        return base * (factor * (1 - alpha) + alpha)
    progress = min(1.0, (step - warmup) / (total - warmup))
    return base * 0.5 * (1 + np.cos(np.pi * progress))


@pytest.mark.parametrize("step", [0, 1, 25, 49, 50, 51, 1000, 1945, 3000, 3839, 3840, 5000])
def test_cosine_schedule(step):
    config = importlib.import_module("configs.synthetic").get_config()
    config.train.schedule = "cosine"
    config.train.num_steps = 3840
    fn = schedule.create_schedule(config, num_train_images=1500)
    expected = reference_cosine_lr(
        step,
        config.train.learning_rate,
        config.train.warmup_steps,
        config.train.warmup_factor,
        3840,
    )
    np.testing.assert_allclose(float(fn(step)), expected, rtol=1e-5, atol=1e-9)


def test_cosine_schedule_follows_an_epoch_length():
    config = importlib.import_module("configs.ochuman").get_config()
    config.train.schedule = "cosine"
    images = 100 * config.train.batch_size
    fn = schedule.create_schedule(config, num_train_images=images)
    end = schedule.total_steps(config, images)
    assert float(fn(end)) == pytest.approx(0.0, abs=1e-12)
    assert float(fn(end // 2)) > 0.0


def test_unknown_schedule_names_the_field():
    config = importlib.import_module("configs.tiny").get_config()
    config.train.schedule = "linear"
    with pytest.raises(ValueError, match=r"config\.train\.schedule"):
        schedule.create_schedule(config, num_train_images=8)
