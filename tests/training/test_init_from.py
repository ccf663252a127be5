"""config.train.init_from: PyTorch files merged into the model's variables (training/state.py)."""

import jax
import numpy as np
import pytest
import torch
from flax import traverse_util

from configs import tiny
from pose2seg_jax.conversion import convert
from pose2seg_jax.training import state as state_lib


def sizes(config):
    m = config.model
    return dict(
        backbone_depth=m.backbone_depth,
        backbone_layout=m.backbone_layout,
        backbone_width=m.backbone_width,
        fpn_features=m.fpn_features,
        seg_units=m.seg_units,
        seg_width=m.seg_width,
        skeleton=m.skeleton,
    )


def random_variables(shapes, seed):
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(np.float32), shapes)


def flat(tree):
    return {(c, *k): v for c in tree for k, v in traverse_util.flatten_dict(dict(tree[c])).items()}


@pytest.fixture
def config():
    return tiny.get_config()


@pytest.fixture
def model_variables(config):
    """Stands in for a freshly initialised model's variables."""
    return random_variables(convert.expected_shapes(**sizes(config)), seed=0)


def test_imagenet_backbone_in_torchvision_layout_replaces_only_the_backbone(
    config, model_variables, tmp_path
):
    backbone = random_variables(
        convert.expected_shapes(**sizes(config), backbone_only=True), seed=1
    )
    state_dict = {}
    for name, tensor in convert.flax_to_torch(backbone).items():
        name = name.removeprefix("backbone.")
        name = name.replace(".conv4.", ".downsample.0.").replace(".bn4.", ".downsample.1.")
        state_dict[name] = tensor
    state_dict["fc.weight"] = torch.zeros(10, 64)
    state_dict["fc.bias"] = torch.zeros(10)
    path = tmp_path / "resnet18_imagenet.pth"
    torch.save(state_dict, path)

    loaded = state_lib.torch_variables(config, str(path), backbone_only=True)
    merged = flat(state_lib.merge_variables(model_variables, loaded, source=str(path)))
    before, wanted = flat(model_variables), flat(backbone)
    assert merged.keys() == before.keys()
    for key, value in merged.items():
        if key[1] == "backbone":
            np.testing.assert_array_equal(value, wanted[key], err_msg=str(key))
        else:
            np.testing.assert_array_equal(value, before[key], err_msg=str(key))
    assert any(k[1] == "backbone" and k[0] == "batch_stats" for k in merged)


def test_whole_released_model_replaces_everything(config, model_variables, tmp_path):
    released = random_variables(convert.expected_shapes(**sizes(config)), seed=2)
    state_dict = {
        k.replace("segnet.", "pose2seg.seg_branch.", 1): v
        for k, v in convert.flax_to_torch(released).items()
    }
    path = tmp_path / "pose2seg_release.pth"
    torch.save(state_dict, path)
    loaded = state_lib.torch_variables(config, str(path), backbone_only=False)
    merged = flat(state_lib.merge_variables(model_variables, loaded))
    wanted = flat(released)
    assert merged.keys() == wanted.keys()
    for key in merged:
        np.testing.assert_array_equal(merged[key], wanted[key], err_msg=str(key))


def test_mismatched_sizes_are_refused_with_the_variable_named(config, model_variables):
    wider = tiny.get_config()
    wider.model.backbone_width = 16
    other = random_variables(convert.expected_shapes(**sizes(wider), backbone_only=True), seed=3)
    with pytest.raises(
        ValueError, match=r"x.pth: params/backbone/\S+ has shape \(16,?.*config.model"
    ):
        state_lib.merge_variables(model_variables, other, source="x.pth")
    with pytest.raises(ValueError, match="not a variable of the model"):
        state_lib.merge_variables(model_variables, {"params": {"extra": {"w": np.zeros(2)}}})
