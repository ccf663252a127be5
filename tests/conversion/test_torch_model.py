"""The PyTorch twin: its grid_sample align against section 4's formula and the JAX align."""

import numpy as np
import pytest
import torch

from pose2seg_jax.conversion import torch_model as tm


def _random_matrices(rng: np.random.Generator, n: int, feature_size: int, align_size: int):
    """Similarities roughly framing a window of the feature map, some reaching outside it."""
    angle = rng.uniform(-np.pi, np.pi, n)
    scale = rng.uniform(0.3, 3.0, n) * align_size / feature_size
    centre = rng.uniform(-0.2, 1.2, (n, 2)) * feature_size
    m = np.zeros((n, 3, 3))
    m[:, 0, 0] = m[:, 1, 1] = scale * np.cos(angle)
    m[:, 0, 1] = scale * np.sin(angle)
    m[:, 1, 0] = -scale * np.sin(angle)
    m[:, :2, 2] = align_size / 2 - np.einsum("nij,nj->ni", m[:, :2, :2], centre)
    m[:, 2, 2] = 1
    return m


def _numpy_align(features: np.ndarray, m3: np.ndarray, align_size: int, mapping: str):
    """REFERENCE.md section 4 verbatim: bilinear sampling at src, zero outside, float64."""
    c, h, w = features.shape
    stretch = w / (w - 1) if mapping == "reference" else 1.0
    jy, jx = np.mgrid[0:align_size, 0:align_size].astype(np.float64)
    q = np.stack([stretch * jx, stretch * jy, np.ones_like(jx)])
    f = np.einsum("ij,jyx->iyx", np.linalg.inv(m3), q)
    sx, sy = f[0] / stretch, f[1] / stretch
    x0, y0 = np.floor(sx).astype(int), np.floor(sy).astype(int)
    out = np.zeros((c, align_size, align_size))
    for dx in (0, 1):
        for dy in (0, 1):
            xi, yi = x0 + dx, y0 + dy
            weight = (1 - np.abs(sx - xi)) * (1 - np.abs(sy - yi))
            inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
            value = features[:, np.clip(yi, 0, h - 1), np.clip(xi, 0, w - 1)]
            out += np.where(inside, weight, 0.0) * value
    return out


@pytest.mark.parametrize("mapping", ["reference", "clean"])
def test_grid_sample_align_matches_section_4(mapping: str) -> None:
    rng = np.random.default_rng(0)
    features = rng.standard_normal((2, 5, 32, 32))
    matrices = _random_matrices(rng, 6, 32, 16).reshape(2, 3, 3, 3)
    got = tm.align_features(
        torch.from_numpy(features), torch.from_numpy(matrices), align_size=16, mapping=mapping
    ).numpy()
    assert got.shape == (2, 3, 5, 16, 16)
    for b in range(2):
        for p in range(3):
            want = _numpy_align(features[b], matrices[b, p], 16, mapping)
            np.testing.assert_allclose(got[b, p], want, atol=1e-9)


def test_reference_and_clean_mappings_differ() -> None:
    rng = np.random.default_rng(1)
    features = torch.from_numpy(rng.standard_normal((1, 3, 32, 32)))
    matrices = torch.from_numpy(_random_matrices(rng, 2, 32, 16).reshape(1, 2, 3, 3))
    a = tm.align_features(features, matrices, 16, "reference")
    b = tm.align_features(features, matrices, 16, "clean")
    assert float((a - b).abs().max()) > 1e-3


def test_matches_jax_align() -> None:
    from pose2seg_jax.ops import align

    rng = np.random.default_rng(2)
    features = rng.standard_normal((2, 7, 128, 128)).astype(np.float32)
    matrices = _random_matrices(rng, 8, 128, 64).reshape(2, 4, 3, 3).astype(np.float32)
    want = tm.align_features(torch.from_numpy(features), torch.from_numpy(matrices)).numpy()
    got = align.align_people(features.transpose(0, 2, 3, 1), matrices, align_size=64)
    # float32 sampling positions: a small magnification (scale 0.15) amplifies their rounding.
    scale = np.abs(want).max()
    np.testing.assert_allclose(np.asarray(got).transpose(0, 1, 4, 2, 3), want, atol=1e-4 * scale)


def test_parameter_names_are_the_reference_names() -> None:
    names = set(tm.TorchPose2Seg().state_dict())
    for name in [
        "backbone.conv1.weight",
        "backbone.bn1.running_var",
        "backbone.layer1.0.conv4.weight",
        "backbone.layer3.5.bn3.num_batches_tracked",
        "backbone.layer4.0.bn4.bias",
        "backbone.fpn_c4p4.weight",
        "backbone.fpn_p1.bias",
        "segnet.conv1.bias",
        "segnet.layer1.9.conv3.bias",
        "segnet.layer1.0.downsample.0.weight",
        "segnet.layer1.0.downsample.1.running_mean",
        "segnet.decoder1.0.downsample.1.weight",
        "segnet.pred_small.weight",
    ]:
        assert name in names, name
    assert not any(".layer2.1.conv4" in n or "layer1.1.downsample" in n for n in names)
