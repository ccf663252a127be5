"""ResNet trunk: parity with the PyTorch module through the converter, parameter counts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from pose2seg_jax.conversion import convert
from pose2seg_jax.conversion import torch_model as tm
from pose2seg_jax.models.resnet import ResNet, stage_channels


def _param_count(module, shape) -> int:
    variables = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros(shape))
    return sum(int(np.prod(a.shape)) for a in jax.tree.leaves(variables["params"]))


@pytest.mark.parametrize(
    ("depth", "expected"),
    # torchvision's ResNet counts without the 1000-way fc layer (fc: 513,000 / 2,049,000).
    [(18, 11_176_512), (34, 21_284_672), (50, 23_508_032), (101, 42_500_160)],
)
def test_parameter_count_matches_torchvision(depth: int, expected: int) -> None:
    assert _param_count(ResNet(depth=depth), (1, 64, 64, 3)) == expected
    torch_net = tm.TorchResNetFPN(depth)
    fpn = sum(p.numel() for n, p in torch_net.named_parameters() if n.startswith("fpn_"))
    assert sum(p.numel() for p in torch_net.parameters()) - fpn == expected


def _backbone_variables(torch_net: torch.nn.Module, **sizes) -> dict:
    state = {f"backbone.{k}": v for k, v in torch_net.state_dict().items()}
    state = {k: v for k, v in state.items() if ".fpn_" not in k}
    variables = convert.torch_to_flax(state, backbone_only=True, **sizes)
    return {c: v["backbone"] for c, v in variables.items()}


@pytest.mark.parametrize(
    ("depth", "layout", "width"),
    [(18, "reference", 16), (50, "reference", 8), (50, "torchvision", 8)],
)
def test_stages_match_pytorch(depth: int, layout: str, width: int) -> None:
    torch.manual_seed(depth)
    torch_net = tm.randomize_batch_norm(tm.TorchResNetFPN(depth, layout, width), seed=1).eval()
    sizes = dict(backbone_depth=depth, backbone_layout=layout, backbone_width=width)
    variables = _backbone_variables(torch_net, **sizes)
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 96)).astype(np.float32)
    with torch.no_grad():
        want = [t.numpy().transpose(0, 2, 3, 1) for t in torch_net.stages(torch.from_numpy(x))]
    model = ResNet(depth=depth, layout=layout, width=width)
    got = jax.jit(model.apply)(variables, jnp.asarray(x.transpose(0, 2, 3, 1)))
    channels = stage_channels(depth, width)
    for k, (g, w) in enumerate(zip(got, want)):
        assert g.shape == w.shape == (2, 16 // 2**k, 24 // 2**k, channels[k])
        scale = np.abs(w).max()
        np.testing.assert_allclose(np.asarray(g), w, atol=1e-5 * scale, rtol=0)


def test_layouts_differ() -> None:
    """The stride position matters: same weights, different layout, different features."""
    torch.manual_seed(0)
    torch_net = tm.randomize_batch_norm(tm.TorchResNetFPN(50, "reference", 8)).eval()
    variables = _backbone_variables(torch_net, backbone_depth=50, backbone_width=8)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((1, 64, 64, 3)), jnp.float32)
    a = jax.jit(ResNet(depth=50, layout="reference", width=8).apply)(variables, x)[3]
    b = jax.jit(ResNet(depth=50, layout="torchvision", width=8).apply)(variables, x)[3]
    assert float(jnp.abs(a - b).max()) > 1e-3 * float(jnp.abs(a).max())


def test_train_mode_matches_pytorch_and_updates_stats() -> None:
    torch.manual_seed(3)
    torch_net = tm.randomize_batch_norm(tm.TorchResNetFPN(18, "reference", 8), seed=2).train()
    variables = _backbone_variables(torch_net, backbone_depth=18, backbone_width=8)
    x = np.random.default_rng(1).standard_normal((2, 3, 64, 64)).astype(np.float32)
    with torch.no_grad():
        want = torch_net.stages(torch.from_numpy(x))[3].numpy().transpose(0, 2, 3, 1)
    apply = jax.jit(ResNet(depth=18, width=8).apply, static_argnames=("train", "mutable"))
    got, updates = apply(
        variables, jnp.asarray(x.transpose(0, 2, 3, 1)), train=True, mutable=("batch_stats",)
    )
    np.testing.assert_allclose(np.asarray(got[3]), want, atol=1e-4 * np.abs(want).max(), rtol=0)
    # Running means follow PyTorch's momentum-0.1 update exactly (variances differ by n/(n-1)).
    new_mean = np.asarray(updates["batch_stats"]["layer2_0"]["bn4"]["mean"])
    torch_mean = torch_net.layer2[0].bn4.running_mean.numpy()
    np.testing.assert_allclose(new_mean, torch_mean, atol=1e-5, rtol=1e-4)


def test_bad_depth_is_rejected() -> None:
    with pytest.raises(ValueError, match="depth 20"):
        ResNet(depth=20).init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
