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
