"""Every config loads, locks, and keeps the paper's recipe where it should."""

import importlib

import pytest

CONFIGS = ["default", "ochuman", "coco_persons", "synthetic", "tiny"]


@pytest.mark.parametrize("name", CONFIGS)
def test_config_loads_and_locks(name):
    config = importlib.import_module(f"configs.{name}").get_config()
    config.lock()
    with pytest.raises(AttributeError):
        config.train.no_such_field = 1
    assert config.model.alignment in ("affine", "box")
    assert config.train.batch_size > 0


def test_default_is_the_papers_recipe():
    config = importlib.import_module("configs.default").get_config()
    assert config.model.backbone_depth == 50
    assert config.model.backbone_layout == "reference"
    assert config.model.seg_units == 10
    assert config.model.align_size == 64
    assert config.data.input_size == 512
    assert config.data.max_people == 8
    assert config.train.batch_size == 4
    assert config.train.learning_rate == 2e-4
    assert config.train.warmup_steps == 1000
    assert tuple(config.train.decay_steps) == (212_250, 283_000)
    assert config.train.num_steps == 353_750


def test_every_default_field_has_a_comment():
    import inspect

    source = inspect.getsource(importlib.import_module("configs.default"))
    lines = source.splitlines()
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith("config.") and "=" in stripped and "ConfigDict()" not in stripped:
            above = lines[i - 1].strip()
            assert above.startswith("#") or lines[i - 2].strip().startswith("#"), line
