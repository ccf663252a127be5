"""Skeleton features against the per-pixel NumPy float64 reference (reference_skeleton.py).

Float32 vs float64: entries within 1e-5 of a cut-off (part maps at d = 4.6025, limb pixels at
distance 1 from the line) may flip, so the random tables skip them and assert they are rare.
Box edges cannot flip: ``skeleton._round_shifted`` rounds ``x +- 1`` exactly for every float32
``x``; ``test_box_edge_where_float32_sum_rounds_onto_a_tie`` holds a case where the naive
float32 ``round(x + 1)`` differs from the exact one.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pose2seg_jax.ops import keypoints as kp
from pose2seg_jax.ops import skeleton

from .reference_skeleton import LIMBS as REF_LIMBS
from .reference_skeleton import ref_skeleton


def random_pose(rng: np.random.Generator) -> np.ndarray:
    """Joints inside and outside the 64 frame, at x.5 ties and integers, some coincident."""
    pose = np.zeros((17, 3), np.float32)
    pose[:, :2] = rng.uniform(-12, 76, (17, 2))
    ties = rng.random((17, 2)) < 0.25
    pose[:, :2] = np.where(ties, np.floor(pose[:, :2]) + 0.5, pose[:, :2])
    integers = rng.random((17, 2)) < 0.15
    pose[:, :2] = np.where(integers, np.round(pose[:, :2]), pose[:, :2])
    pose[:, 2] = rng.choice([0, 1, 2], 17, p=[0.2, 0.3, 0.5])
    for _ in range(rng.integers(0, 3)):
        a, b = kp.LIMBS[rng.integers(len(kp.LIMBS))]
        pose[b, :2] = pose[a, :2]
    # Short limbs: the second joint within a few pixels of the first.
    a, b = kp.LIMBS[rng.integers(len(kp.LIMBS))]
    pose[b, :2] = pose[a, :2] + rng.uniform(-2, 2, 2)
    return pose


def compare(got: np.ndarray, keypoints: np.ndarray, size: int = 64, sigma: float = 3.0) -> int:
    expected, near = ref_skeleton(keypoints, size, sigma)
    assert got.shape == (size, size, 55) and got.dtype == np.float32
    error = np.where(near, 0.0, np.abs(got - expected))
    assert error.max() <= 1e-6, np.unravel_index(error.argmax(), error.shape)
    return int(near.sum())


def test_limbs_match_reference_text():
    assert tuple(kp.LIMBS) == REF_LIMBS
    assert skeleton.NUM_SKELETON_CHANNELS == 55


@pytest.mark.parametrize("seed", range(6))
def test_random_poses_match_reference(seed):
    rng = np.random.default_rng(seed)
    poses = np.stack([random_pose(rng) for _ in range(4)])
    got = np.asarray(jax.jit(jax.vmap(skeleton.skeleton_features))(jnp.asarray(poses)))
    skipped = sum(compare(got[p], poses[p]) for p in range(len(poses)))
    assert skipped <= 0.001 * got.size
    # The table must draw something: visible parts, occluded (negative) parts and limbs.
    assert (got[..., :17] > 0).any() and (got[..., :17] < 0).any()
    assert (got[..., 17:] != 0).any()


@pytest.mark.parametrize(
    ("a", "b", "rows", "cols"),
    [
        # Horizontal limb with x.5 ends: x box [round(1.5), round(6.5)) = [2, 6); y box [9, 11),
        # row 9 is at distance exactly 1 (excluded).
        ((2.5, 10.0), (5.5, 10.0), [10], [2, 3, 4, 5]),
        # Ends at 3.5/4.5: [round(2.5), round(5.5)) = [2, 6), half-to-even on both edges.
        ((3.5, 20.0), (4.5, 20.0), [20], [2, 3, 4, 5]),
        # Vertical limb, clipped at the top of the map: y box [max(round(-3), 0), round(3.5)).
        ((7.0, -2.0), (7.0, 2.5), [0, 1, 2, 3], [7]),
        # Clipped at the right edge: x box [round(61.2), min(round(71), 64)).
        ((62.2, 30.0), (70.0, 30.0), [30], [61, 62, 63]),
    ],
)
def test_box_table(a, b, rows, cols):
    pose = np.zeros((17, 3), np.float32)
    pose[5] = (*a, 2)
    pose[6] = (*b, 2)  # limb 7 is (5, 6)
    got = np.asarray(skeleton.skeleton_features(jnp.asarray(pose)))
    ux_channel = 17 + 2 * kp.LIMBS.index((5, 6))
    drawn = np.argwhere(got[..., ux_channel : ux_channel + 2].any(axis=-1))
    expected = np.array([(r, c) for r in rows for c in cols])
    np.testing.assert_array_equal(drawn, expected)
    direction = np.subtract(b, a) / np.hypot(*np.subtract(b, a))
    np.testing.assert_allclose(got[rows[0], cols[0], ux_channel : ux_channel + 2], direction)
    compare(got, pose)


def test_box_edge_where_float32_sum_rounds_onto_a_tie():
    """max x = 1.5 + 2^-23: in float32, x + 1 rounds to 2.5 (round -> 2); exactly it is 3."""
    x_end = np.nextafter(np.float32(1.5), np.float32(2))
    assert np.round(x_end + np.float32(1)) == 2 and round(float(x_end) + 1) == 3
    pose = np.zeros((17, 3), np.float32)
    pose[11] = (-5.0, 12.0, 2)
    pose[12] = (x_end, 12.0, 2)
    got = np.asarray(skeleton.skeleton_features(jnp.asarray(pose)))
    ux_channel = 17 + 2 * kp.LIMBS.index((11, 12))
    np.testing.assert_array_equal(np.nonzero(got[12, :, ux_channel])[0], [0, 1, 2])
    compare(got, pose)


def test_visibility_rules():
    pose = np.zeros((17, 3), np.float32)
    pose[0] = (20.0, 30.0, 2)
    pose[1] = (24.0, 33.0, 1)
    pose[2] = (40.0, 40.0, 0)
    pose[3] = (24.0, 33.0, 2)  # coincides with joint 1: limb (1, 3) is skipped
    got = np.asarray(skeleton.skeleton_features(jnp.asarray(pose)))
    assert got[30, 20, 0] == pytest.approx(1.0)
    assert got[33, 24, 1] == pytest.approx(-1.0)
    assert not got[..., 2].any()
    assert not got[..., 4:17].any()
    for limb in range(4):
        drawn = got[..., 17 + 2 * limb : 19 + 2 * limb].any()
        assert drawn == (limb == 0), kp.LIMBS[limb]
    np.testing.assert_allclose(got[30, 20, 17:19], [0.8, 0.6], atol=1e-7)
    compare(got, pose)


def test_part_map_cutoff_and_sigma():
    pose = np.zeros((17, 3), np.float32)
    pose[9] = (10.0, 10.0, 2)
    got = np.asarray(skeleton.skeleton_features(jnp.asarray(pose), size=32, sigma=2.0))
    # d = r^2 / 8 < 4.6025 <=> r^2 < 36.82: r^2 = 36 drawn, r^2 = 37 not.
    assert got[10, 16, 9] == pytest.approx(np.exp(-36 / 8), abs=1e-7)
    assert got[11, 16, 9] == 0.0
    compare(got, pose, size=32, sigma=2.0)


def test_skeleton_people_shape_and_no_recompilation():
    traces = 0

    def run(points):
        nonlocal traces
        traces += 1
        return skeleton.skeleton_people(points)

    jitted = jax.jit(run)
    rng = np.random.default_rng(9)
    for _ in range(3):
        poses = np.stack([random_pose(rng) for _ in range(6)]).reshape(2, 3, 17, 3)
        out = np.asarray(jitted(jnp.asarray(poses)))
        assert out.shape == (2, 3, 64, 64, 55)
    assert traces == 1
    compare(out[1, 2], poses[1, 2])
