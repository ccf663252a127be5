"""COCO keypoint conventions shared by every op: joint names, left/right pairs, limbs.

Keypoints are arrays ``(..., 17, 3)`` of ``(x, y, v)`` in COCO order, with ``v`` 0 (missing),
1 (labelled but occluded) or 2 (visible).
"""

import numpy as np

NUM_KEYPOINTS = 17

KEYPOINT_NAMES = (
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)

# Pairs of joints that swap under a left/right mirror.
FLIP_PAIRS = ((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16))


def _flip_index() -> np.ndarray:
    index = np.arange(NUM_KEYPOINTS)
    for a, b in FLIP_PAIRS:
        index[a], index[b] = b, a
    return index


# FLIP_INDEX[k] is the joint that takes joint k's place in the mirrored pose.
FLIP_INDEX = _flip_index()

# The 19 limbs of the skeleton features (REFERENCE.md section 5), 0-based, in channel order.
LIMBS = (
    (0, 1),
    (0, 2),
    (1, 2),
    (1, 3),
    (2, 4),
    (3, 5),
    (4, 6),
    (5, 6),
    (5, 7),
    (5, 11),
    (6, 8),
    (6, 12),
    (7, 9),
    (8, 10),
    (11, 12),
    (11, 13),
    (12, 14),
    (13, 15),
    (14, 16),
)
NUM_LIMBS = len(LIMBS)
