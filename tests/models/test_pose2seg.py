"""The full model: parity with the PyTorch twin through the converter, counts, train mode."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from pose2seg_jax.conversion import convert
from pose2seg_jax.conversion import torch_model as tm
from pose2seg_jax.models.pose2seg import Pose2Seg, count_params
from pose2seg_jax.ops.templates import load_templates

TINY = dict(backbone_depth=18, backbone_width=8, fpn_features=16, seg_units=2, seg_width=16)
TINY_PARAMS = 257_114
DEFAULT_PARAMS = 42_883_394


def _inputs(seed: int, batch: int, people: int, size: int):
    """Random images and people posed like jittered, rotated, scaled templates (so they fit)."""
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((batch, size, size, 3)).astype(np.float32)
    templates = load_templates()
    pick = templates[rng.integers(0, len(templates), (batch, people))]
    angle = rng.uniform(-0.4, 0.4, (batch, people, 1))
    scale = rng.uniform(0.3, 0.6, (batch, people, 1)) * size
    u, w = pick[..., 0] - 0.5, pick[..., 1] - 0.5
    x = scale * (np.cos(angle) * u - np.sin(angle) * w) + rng.uniform(0.35, 0.65) * size
    y = scale * (np.sin(angle) * u + np.cos(angle) * w) + rng.uniform(0.35, 0.65) * size
    xy = np.stack([x, y], -1) + rng.normal(0, 0.01 * size, (batch, people, 17, 2))
    v = np.where(pick[..., 2:] > 0, rng.choice([1, 2], (batch, people, 17, 1)), 0)
    keypoints = np.concatenate([xy * (v > 0), v], axis=-1).astype(np.float32)
    valid = np.ones((batch, people), bool)
    valid[-1, -1] = False
    return images, keypoints, valid


def _pair(sizes: dict, seed: int, **fields):
    torch.manual_seed(seed)
    torch_fields = {k: v for k, v in fields.items() if k in ("align_size", "skeleton", "mapping")}
    net = tm.randomize_batch_norm(tm.TorchPose2Seg(**sizes, **torch_fields), seed=seed).eval()
    skeleton = fields.get("skeleton", True)
    variables = convert.torch_to_flax(net.state_dict(), skeleton=skeleton, **sizes)
    return net, variables, Pose2Seg(**sizes, **fields)


def _check_parity(sizes: dict, size: int, seed: int, **fields) -> None:
    net, variables, model = _pair(sizes, seed, **fields)
    images, keypoints, valid = _inputs(seed, 2, 3, size)
    templates = jnp.asarray(load_templates())
    logits, aux = jax.jit(model.apply)(variables, images, keypoints, valid, templates)
    with torch.no_grad():
        skeleton = None
        if model.skeleton:
            skeleton = torch.from_numpy(np.array(aux["skeleton"]).transpose(0, 1, 4, 2, 3))
        want = net(
            torch.from_numpy(images.transpose(0, 3, 1, 2)),
            torch.from_numpy(np.array(aux["feature_to_align"])),
            skeleton,
        ).numpy()
    want = want.transpose(0, 1, 3, 4, 2)
    align = model.align_size
    assert logits.shape == want.shape == (2, 3, align, align, 2)
    np.testing.assert_allclose(np.asarray(logits), want, atol=1e-4 * np.abs(want).max(), rtol=0)
    # The test is not vacuous: people were fitted to templates and drew skeletons.
    assert int(jnp.sum(aux["template_index"] >= 0)) >= 1 or fields.get("alignment") == "box"


@pytest.mark.parametrize(
    "fields",
    [
        dict(align_size=32),
        dict(align_size=32, mapping="clean", alignment="box"),
        dict(align_size=32, skeleton=False),
    ],
)
def test_tiny_logits_match_pytorch(fields: dict) -> None:
    _check_parity(TINY, 128, 0, **fields)


@pytest.mark.slow
def test_default_logits_match_pytorch() -> None:
    """The released model's sizes (ResNet-50, 10 units, 64x64) at a 256 input."""
    _check_parity({}, 256, 1)


def test_parameter_counts() -> None:
    images, keypoints, valid = _inputs(0, 1, 1, 64)
    templates = jnp.asarray(load_templates())
    for sizes, expected in ((TINY, TINY_PARAMS), ({}, DEFAULT_PARAMS)):
        variables = jax.eval_shape(
            Pose2Seg(**sizes).init, jax.random.key(0), images, keypoints, valid, templates
        )
        assert count_params(variables) == expected
        assert sum(p.numel() for p in tm.TorchPose2Seg(**sizes).parameters()) == expected


def test_train_mode_augments_and_updates_stats() -> None:
    _, variables, model = _pair(TINY, 2, align_size=32)
    images, keypoints, valid = _inputs(2, 2, 3, 128)
    templates = jnp.asarray(load_templates())

    @jax.jit
    def train_apply(variables, key):
        return model.apply(
            variables,
            images,
            keypoints,
            valid,
            templates,
            train=True,
            rngs={"augment": key},
            mutable=["batch_stats"],
        )

    (logits, aux), updates = train_apply(variables, jax.random.key(0))
    (_, aux_other), _ = train_apply(variables, jax.random.key(1))
    _, aux_eval = jax.jit(model.apply)(variables, images, keypoints, valid, templates)
    assert logits.shape == (2, 3, 32, 32, 2) and bool(jnp.all(jnp.isfinite(logits)))
    real = jnp.asarray(valid)
    moved = jnp.abs(aux["feature_to_align"] - aux_eval["feature_to_align"]).max(axis=(-1, -2))
    assert bool(jnp.all(moved[real] > 1e-4))
    assert not np.allclose(aux["feature_to_align"], aux_other["feature_to_align"])
    old = variables["batch_stats"]["segnet"]["bn1"]["mean"]
    assert not np.allclose(updates["batch_stats"]["segnet"]["bn1"]["mean"], old)


@pytest.mark.slow
def test_bfloat16_compute() -> None:
    _, variables, model = _pair(TINY, 3, align_size=32)
    images, keypoints, valid = _inputs(3, 1, 2, 128)
    templates = jnp.asarray(load_templates())
    want, _ = jax.jit(model.apply)(variables, images, keypoints, valid, templates)
    low = Pose2Seg(**TINY, align_size=32, dtype=jnp.bfloat16)
    got, _ = jax.jit(low.apply)(variables, images, keypoints, valid, templates)
    assert got.dtype == jnp.bfloat16
    error = float(jnp.abs(got.astype(jnp.float32) - want).max())
    assert error < 0.1 * float(jnp.abs(want).max())


def test_chunked_inference_matches_one_pass() -> None:
    _, variables, _ = _pair(TINY, 4, align_size=32)
    images, keypoints, valid = _inputs(4, 2, 4, 128)
    templates = jnp.asarray(load_templates())
    outs = []
    for chunk in (0, 3):  # 3 does not divide the 8 people: the last chunk is padded
        model = Pose2Seg(**TINY, align_size=32, seg_chunk=chunk)
        outs.append(
            np.asarray(jax.jit(model.apply)(variables, images, keypoints, valid, templates)[0])
        )
    for out in outs[1:]:
        np.testing.assert_allclose(out, outs[0], atol=1e-5 * np.abs(outs[0]).max(), rtol=0)
