"""FPN: the half-pixel upsample against F.interpolate, and P1 parity with PyTorch."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pose2seg_jax.conversion import convert
from pose2seg_jax.conversion import torch_model as tm
from pose2seg_jax.models.fpn import FPN, upsample_to


@pytest.mark.parametrize(
    ("h", "w", "out_h", "out_w"), [(4, 4, 8, 8), (3, 5, 6, 10), (16, 16, 32, 32)]
)
def test_upsample_matches_torch_interpolate(h: int, w: int, out_h: int, out_w: int) -> None:
    x = np.random.default_rng(h * w).standard_normal((2, 3, h, w)).astype(np.float32)
    want = F.interpolate(
        torch.from_numpy(x), size=(out_h, out_w), mode="bilinear", align_corners=False
    ).numpy()
    got = upsample_to(jnp.asarray(x.transpose(0, 2, 3, 1)), out_h, out_w)
    np.testing.assert_allclose(np.asarray(got).transpose(0, 3, 1, 2), want, atol=1e-6, rtol=0)


def test_p1_matches_pytorch() -> None:
    torch.manual_seed(0)
    sizes = dict(backbone_depth=18, backbone_width=8, fpn_features=16, seg_units=1, seg_width=8)
    torch_net = tm.TorchResNetFPN(18, "reference", 8, 16).eval()
    stages = [
        torch.from_numpy(np.random.default_rng(k).standard_normal((2, c, 32 >> k, 48 >> k))).float()
        for k, c in enumerate((8, 16, 32, 64))
    ]
    with torch.no_grad():
        want = torch_net.pyramid(tuple(stages))[0].numpy().transpose(0, 2, 3, 1)
    state = {f"backbone.{k}": v for k, v in torch_net.state_dict().items() if "fpn_" in k}
    flat = convert.torch_to_flax({**_other_tensors(sizes), **state}, **sizes)
    variables = {"params": flat["params"]["fpn"]}
    got = FPN(features=16).apply(
        variables, [jnp.asarray(s.numpy().transpose(0, 2, 3, 1)) for s in stages]
    )
    assert got.shape == (2, 32, 48, 16)
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-5 * np.abs(want).max(), rtol=0)


def _other_tensors(sizes: dict) -> dict:
    """The non-FPN tensors of a model of these sizes, so the converter sees a complete file."""
    net = tm.TorchPose2Seg(**sizes)
    return {k: v for k, v in net.state_dict().items() if "fpn_" not in k}


def test_output_convs_all_have_parameters() -> None:
    """P2..P4's 3x3 convs exist (the released weights carry them) though only P1 is returned."""
    stages = [jnp.zeros((1, 16 >> k, 16 >> k, 4)) for k in range(4)]
    params = jax.eval_shape(FPN(features=8).init, jax.random.key(0), stages)["params"]
    assert sorted(params) == sorted(
        [f"fpn_c{k}p{k}" for k in range(1, 5)] + [f"fpn_p{k}" for k in range(1, 5)]
    )
