"""Plausible 2D human poses in COCO keypoint format, for template tests and the default templates.

A stick figure with human proportions is posed from a few families (standing, walking, arms
raised, waving, arms out, sitting, seen from the front, back or side), rotated, scaled and placed
in a 640x480 image, with some joints occluded (v = 1), missing (v = 0) or truncated.

Run as a script to write a COCO-format annotation file:

    .venv/bin/python tests/ops/pose_samples.py /tmp/poses.json --people 3000 --seed 0
"""

import argparse
import json
import math

import numpy as np

from pose2seg_jax.ops.keypoints import KEYPOINT_NAMES

KINDS = ("standing", "walking", "arms_raised", "waving", "arms_out", "sitting")
VIEWS = ("front", "back", "side")
IMAGE_W, IMAGE_H = 640, 480


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _direction(angle_deg: float, side: float) -> np.ndarray:
    """Unit vector at angle from straight down, opening outward on `side` (+1 left, -1 right)."""
    a = math.radians(angle_deg)
    return np.array([side * math.sin(a), -math.cos(a)])


def body_pose(rng: np.random.Generator, kind: str) -> np.ndarray:
    """(17, 2) joints of a front-facing body, hip centre at 0, y up, height about 1."""
    j = np.zeros((17, 2))
    hw, sw, torso = _u(rng, 0.08, 0.10), _u(rng, 0.12, 0.14), _u(rng, 0.28, 0.32)
    upper, fore = _u(rng, 0.15, 0.18), _u(rng, 0.13, 0.16)
    thigh, shin = _u(rng, 0.22, 0.26), _u(rng, 0.22, 0.26)
    lean = _u(rng, -0.03, 0.03)
    j[11], j[12] = (hw, 0.0), (-hw, 0.0)
    j[5], j[6] = (sw + lean, torso), (-sw + lean, torso)
    head = np.array([lean, torso + _u(rng, 0.11, 0.13)])
    j[0] = head
    j[1:5] = head + np.array([[0.025, 0.025], [-0.025, 0.025], [0.055, 0.01], [-0.055, 0.01]])

    arms = {
        "standing": ((5, 20), (0, 15)),
        "walking": ((-25, 25), (0, 30)),
        "arms_raised": ((140, 175), (-20, 20)),
        "waving": ((5, 20), (0, 15)),
        "arms_out": ((70, 100), (-15, 15)),
        "sitting": ((0, 20), (20, 70)),
    }[kind]
    legs_spread, knee, thigh_scale = {
        "standing": ((0, 8), (-3, 3), (0.95, 1.0)),
        "walking": ((-5, 15), (-10, 10), (0.85, 1.0)),
        "arms_raised": ((0, 10), (-3, 3), (0.95, 1.0)),
        "waving": ((0, 8), (-3, 3), (0.95, 1.0)),
        "arms_out": ((0, 12), (-3, 3), (0.95, 1.0)),
        "sitting": ((5, 25), (-10, 10), (0.25, 0.45)),
    }[kind]
    for side, (s, e, w) in ((1.0, (5, 7, 9)), (-1.0, (6, 8, 10))):
        a1 = _u(rng, *arms[0])
        if kind == "waving" and side > 0:
            a1 = _u(rng, 100, 160)
        a2 = a1 + _u(rng, *arms[1])
        j[e] = j[s] + upper * _direction(a1, side)
        j[w] = j[e] + fore * _direction(a2, side)
    for side, (h, k, a) in ((1.0, (11, 13, 15)), (-1.0, (12, 14, 16))):
        b1 = _u(rng, *legs_spread)
        j[k] = j[h] + thigh * _u(rng, *thigh_scale) * _direction(b1, side)
        j[a] = j[k] + shin * _direction(b1 + _u(rng, *knee), side)
    return j


def image_pose(rng: np.random.Generator, kind: str, view: str) -> np.ndarray:
    """(17, 3) COCO keypoints (x, y, v) of one person placed in a 640x480 image."""
    j = body_pose(rng, kind)
    vis = np.full(17, 2.0)
    if view == "back":
        j[:, 0] = 2 * j[0, 0] - j[:, 0]
        vis[:3] = 0.0
    elif view == "side":
        j[:, 0] = j[0, 0] + 0.25 * (j[:, 0] - j[0, 0])
        hidden_ear = 3 if rng.random() < 0.5 else 4
        vis[hidden_ear] = 0.0
        vis[1 if hidden_ear == 3 else 2] = 0.0
    height = _u(rng, 40.0, 400.0)
    angle = math.radians(_u(rng, -12.0, 12.0))
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    xy = (j * [1.0, -1.0]) @ rot.T * height
    centre = np.array([_u(rng, 0.2, 0.8) * IMAGE_W, _u(rng, 0.3, 0.7) * IMAGE_H])
    xy = xy - xy.mean(axis=0) + centre

    vis[(rng.random(17) < 0.1) & (vis > 0)] = 1.0
    vis[rng.random(17) < 0.05] = 0.0
    if rng.random() < 0.15:
        vis[13:] = 0.0
    keypoints = np.concatenate([xy, vis[:, None]], axis=1)
    keypoints[vis == 0] = 0.0
    return keypoints


def person_box(keypoints: np.ndarray) -> list[float]:
    """xywh box around the labelled joints with margins for the head and limbs."""
    xy = keypoints[keypoints[:, 2] > 0, :2]
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    pad = 0.08 * max(hi[0] - lo[0], hi[1] - lo[1], 8.0)
    lo = lo - np.array([pad, 1.5 * pad])
    hi = hi + pad
    return [float(lo[0]), float(lo[1]), float(hi[0] - lo[0]), float(hi[1] - lo[1])]


def make_coco(people: int, seed: int = 0, extras: bool = False) -> dict:
    """A COCO-format person keypoint dataset of `people` annotations, 3 per image.

    With `extras`, also adds crowd annotations and people without keypoints (both must be
    ignored by template clustering).
    """
    rng = np.random.default_rng(seed)
    images, annotations = [], []
    for i in range(people):
        image_id = i // 3 + 1
        if i % 3 == 0:
            images.append(
                {
                    "id": image_id,
                    "width": IMAGE_W,
                    "height": IMAGE_H,
                    "file_name": f"{image_id}.jpg",
                }
            )
        kind = KINDS[rng.integers(len(KINDS))]
        view = VIEWS[rng.choice(3, p=[0.6, 0.25, 0.15])]
        kp = image_pose(rng, kind, view)
        if (kp[:, 2] > 0).sum() == 0:
            kp = image_pose(rng, "standing", "front")
        box = person_box(kp)
        annotations.append(
            {
                "id": i + 1,
                "image_id": image_id,
                "category_id": 1,
                "keypoints": [round(float(v), 2) for v in kp.reshape(-1)],
                "num_keypoints": int((kp[:, 2] > 0).sum()),
                "bbox": box,
                "area": box[2] * box[3],
                "iscrowd": 0,
                "segmentation": [],
            }
        )
    if extras:
        base = len(annotations)
        for n, crowd in enumerate((1, 0, 1, 0)):
            annotations.append(
                {
                    "id": base + n + 1,
                    "image_id": 1,
                    "category_id": 1,
                    "keypoints": [0] * 51,
                    "num_keypoints": 0,
                    "bbox": [10.0, 10.0, 50.0, 80.0],
                    "area": 4000.0,
                    "iscrowd": crowd,
                    "segmentation": [],
                }
            )
    categories = [
        {
            "id": 1,
            "name": "person",
            "supercategory": "person",
            "keypoints": list(KEYPOINT_NAMES),
            "skeleton": [],
        }
    ]
    return {"images": images, "annotations": annotations, "categories": categories}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--people", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    with open(args.out, "w") as f:
        json.dump(make_coco(args.people, args.seed), f)
    print(f"wrote {args.people} people to {args.out}")


if __name__ == "__main__":
    main()
