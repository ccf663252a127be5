"""Converter: exact round trips, accepted spellings, the CLI, and refusal of bad files."""

import io
import os
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from pose2seg_jax.conversion import convert
from pose2seg_jax.conversion import torch_model as tm
from pose2seg_jax.models.resnet import ResNet

TINY = dict(backbone_depth=18, backbone_width=8, fpn_features=16, seg_units=2, seg_width=16)
TINY_FLAGS = ["--depth", "18", "--width", "8", "--fpn-features", "16"]
TINY_FLAGS += ["--seg-units", "2", "--seg-width", "16"]


def _tiny_state(seed: int = 0) -> dict:
    torch.manual_seed(seed)
    return tm.randomize_batch_norm(tm.TorchPose2Seg(**TINY), seed=seed).state_dict()


def _assert_same_floats(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for name in a:
        if not name.endswith("num_batches_tracked"):
            assert a[name].dtype == b[name].dtype == torch.float32, name
            assert torch.equal(a[name], b[name]), name


def test_default_round_trip_is_exact() -> None:
    torch.manual_seed(0)
    net = tm.randomize_batch_norm(tm.TorchPose2Seg())
    state = net.state_dict()
    variables = convert.torch_to_flax(state)
    assert sorted(variables["params"]) == ["backbone", "fpn", "segnet"]
    kernel = variables["params"]["backbone"]["layer1_0"]["conv2"]["kernel"]
    np.testing.assert_array_equal(
        kernel, state["backbone.layer1.0.conv2.weight"].permute(2, 3, 1, 0)
    )
    back = convert.flax_to_torch(variables)
    _assert_same_floats(state, back)
    assert int(back["segnet.bn1.num_batches_tracked"]) == 0
    tm.TorchPose2Seg().load_state_dict(back, strict=True)


def test_accepted_spellings_give_the_same_variables() -> None:
    state = _tiny_state()
    want = convert.torch_to_flax(state, **TINY)
    renamed = {k.replace("segnet.", "pose2seg.seg_branch.", 1): v for k, v in state.items()}
    for spelling in (renamed, {f"module.{k}": v for k, v in state.items()}):
        got = convert.torch_to_flax(spelling, **TINY)
        jax.tree.map(np.testing.assert_array_equal, got, want)


def test_wrong_keys_and_shapes_are_listed() -> None:
    state = _tiny_state()
    state["backbone.layer9.0.conv1.weight"] = torch.zeros(1)
    del state["segnet.pred_small.bias"]
    state["segnet.conv1.weight"] = torch.zeros(16, 3, 7, 7)
    with pytest.raises(ValueError) as info:
        convert.torch_to_flax(state, source="my.pth", **TINY)
    message = str(info.value)
    assert "my.pth" in message
    assert "1 unexpected tensors: backbone.layer9.0.conv1.weight" in message
    assert "1 missing tensors (Flax names): params/segnet/pred_small/bias" in message
    assert "segnet.conv1.weight (7, 7, 3, 16) (expected (7, 7, 71, 16)" in message


def test_model_size_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="missing tensors"):
        convert.torch_to_flax(_tiny_state(), **{**TINY, "seg_units": 3})


def test_torchvision_backbone_file_via_cli(tmp_path) -> None:
    torch.manual_seed(1)
    trunk = tm.randomize_batch_norm(tm.TorchResNetFPN(50, "torchvision", 8), seed=1).eval()
    state = {}
    for name, value in trunk.state_dict().items():
        if not name.startswith("fpn_"):
            name = name.replace(".conv4.", ".downsample.0.").replace(".bn4.", ".downsample.1.")
            state[name] = value
    state["fc.weight"], state["fc.bias"] = torch.zeros(1000, 256), torch.zeros(1000)
    path = tmp_path / "resnet50_imagenet.pth"
    torch.save(state, path)
    out = tmp_path / "ckpt"
    flags = ["--backbone-only", "--layout", "torchvision", "--width", "8"]
    assert convert.main(["from-torch", str(path), str(out), *flags]) == 0
    variables = convert.load_variables(out)
    assert sorted(variables["params"]) == ["backbone"]
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    with torch.no_grad():
        want = trunk.stages(torch.from_numpy(x))[3].numpy().transpose(0, 2, 3, 1)
    backbone = {c: v["backbone"] for c, v in variables.items()}
    model = ResNet(depth=50, layout="torchvision", width=8)
    got = jax.jit(model.apply)(backbone, jnp.asarray(x.transpose(0, 2, 3, 1)))[3]
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-5 * np.abs(want).max())


def test_cli_round_trip(tmp_path) -> None:
    state = _tiny_state(2)
    source = tmp_path / "model.pkl"
    torch.save(state, source)
    assert convert.main(["from-torch", str(source), str(tmp_path / "ckpt"), *TINY_FLAGS]) == 0
    assert convert.main(["to-torch", str(tmp_path / "ckpt"), str(tmp_path / "back.pth")]) == 0
    back = torch.load(tmp_path / "back.pth", weights_only=True)
    _assert_same_floats(state, back)
    tm.TorchPose2Seg(**TINY).load_state_dict(back, strict=True)


class _Payload:
    """Unpickling this calls open(path, 'w'): a file appears if the pickle's code runs."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("container", ["torch.save", "plain pickle"])
def test_pickle_with_code_is_refused_without_running_it(tmp_path, container: str) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    payload = {"backbone.conv1.weight": torch.zeros(1), "x": _Payload(str(marker))}
    if container == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(ValueError, match="refused by the safe loader"):
        convert.load_torch_file(path)
    assert convert.main(["from-torch", str(path), str(tmp_path / "out")]) == 1
    assert not marker.exists()
    assert not (tmp_path / "out").exists()
    if container == "plain pickle":
        # Control: the payload is live, so the absence of the marker above means something.
        pickle.loads(path.read_bytes()).pop("x").close()
        assert marker.exists()


def test_truncated_file_is_a_clear_error(tmp_path) -> None:
    buffer = io.BytesIO()
    torch.save(_tiny_state(), buffer)
    path = tmp_path / "truncated.pth"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(ValueError, match=r"truncated\.pth is not a readable PyTorch weights file"):
        convert.load_torch_file(path)


def test_non_state_dict_and_missing_file(tmp_path) -> None:
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(2)], path)
    with pytest.raises(ValueError, match="does not hold a state dict"):
        convert.load_torch_file(path)
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {"a": torch.ones(1)}, "epoch": 3}, wrapped)
    assert list(convert.load_torch_file(wrapped)) == ["a"]
    with pytest.raises(FileNotFoundError):
        convert.load_torch_file(os.fspath(tmp_path / "nope.pth"))
