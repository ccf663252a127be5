"""SegModule: corner-aligned upsample, logits parity with PyTorch, masked BatchNorm statistics."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pose2seg_jax.conversion import convert
from pose2seg_jax.conversion import torch_model as tm
from pose2seg_jax.models.seg_module import SegModule, upsample_align_corners

SIZES = dict(backbone_depth=18, backbone_width=8, fpn_features=16, seg_units=2, seg_width=16)


@pytest.mark.parametrize(("h", "w", "factor"), [(32, 32, 2), (3, 5, 2), (1, 4, 2), (4, 6, 3)])
def test_upsample_matches_torch_align_corners(h: int, w: int, factor: int) -> None:
    """Values and (hand-written) input gradient against PyTorch's bilinear interpolate."""
    rng = np.random.default_rng(h + w)
    x = rng.standard_normal((2, 3, h, w)).astype(np.float32)
    weights = rng.standard_normal((2, 3, factor * h, factor * w)).astype(np.float32)
    x_torch = torch.from_numpy(x).requires_grad_(True)
    want = F.interpolate(x_torch, scale_factor=factor, mode="bilinear", align_corners=True)
    (want * torch.from_numpy(weights)).sum().backward()

    def loss(t):
        y = upsample_align_corners(t, factor)
        return jnp.sum(y * jnp.asarray(weights.transpose(0, 2, 3, 1))), y

    grad, got = jax.grad(loss, has_aux=True)(jnp.asarray(x.transpose(0, 2, 3, 1)))
    np.testing.assert_allclose(
        np.asarray(got).transpose(0, 3, 1, 2), want.detach().numpy(), atol=1e-5, rtol=0
    )
    np.testing.assert_allclose(
        np.asarray(grad).transpose(0, 3, 1, 2), x_torch.grad.numpy(), atol=1e-5, rtol=1e-5
    )


def _segnet_pair(seed: int) -> tuple[torch.nn.Module, dict]:
    torch.manual_seed(seed)
    net = tm.randomize_batch_norm(tm.TorchPose2Seg(**SIZES), seed=seed)
    variables = convert.torch_to_flax(net.state_dict(), **SIZES)
    return net.segnet, {c: v["segnet"] for c, v in variables.items()}


def test_logits_match_pytorch() -> None:
    torch_seg, variables = _segnet_pair(0)
    x = np.random.default_rng(0).standard_normal((3, 16 + 55, 64, 64)).astype(np.float32)
    with torch.no_grad():
        want = torch_seg.eval()(torch.from_numpy(x)).numpy().transpose(0, 2, 3, 1)
    model = SegModule(num_units=2, width=16)
    got = jax.jit(model.apply)(variables, jnp.asarray(x.transpose(0, 2, 3, 1)))
    assert got.shape == (3, 64, 64, 2)
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-4 * np.abs(want).max(), rtol=0)


def test_train_mode_matches_pytorch() -> None:
    torch_seg, variables = _segnet_pair(1)
    x = np.random.default_rng(1).standard_normal((2, 71, 16, 16)).astype(np.float32)
    with torch.no_grad():
        want = torch_seg.train()(torch.from_numpy(x)).numpy().transpose(0, 2, 3, 1)
    got, _ = SegModule(num_units=2, width=16).apply(
        variables, jnp.asarray(x.transpose(0, 2, 3, 1)), train=True, mutable=["batch_stats"]
    )
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-4 * np.abs(want).max(), rtol=0)


def test_mask_excludes_padded_people_from_batch_statistics() -> None:
    _, variables = _segnet_pair(2)
    model = SegModule(num_units=2, width=16)
    x = jnp.asarray(np.random.default_rng(2).standard_normal((4, 16, 16, 71)), jnp.float32)
    mask = jnp.array([True, False, True, False])
    real = x[jnp.array([0, 2])]
    padded_junk = x.at[1].set(100.0).at[3].set(-50.0)
    apply = jax.jit(model.apply, static_argnames=("train", "mutable"))
    want, want_stats = apply(variables, real, train=True, mutable=("batch_stats",))
    got, got_stats = apply(variables, padded_junk, train=True, mask=mask, mutable=("batch_stats",))
    np.testing.assert_allclose(np.asarray(got)[np.array([0, 2])], np.asarray(want), atol=1e-4)
    for a, b in zip(jax.tree.leaves(got_stats), jax.tree.leaves(want_stats)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-4, rtol=1e-4)
    # Without the mask, the junk changes the statistics and thus the real people's logits.
    unmasked, _ = apply(variables, padded_junk, train=True, mutable=("batch_stats",))
    assert float(jnp.abs(unmasked[jnp.array([0, 2])] - want).max()) > 1e-2


def test_all_padded_batch_stays_finite() -> None:
    _, variables = _segnet_pair(3)
    x = jnp.asarray(np.random.default_rng(3).standard_normal((2, 16, 16, 71)), jnp.float32)
    out, stats = SegModule(num_units=2, width=16).apply(
        variables, x, True, jnp.zeros(2, bool), mutable=["batch_stats"]
    )
    assert bool(jnp.all(jnp.isfinite(out)))
    assert all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree.leaves(stats))
