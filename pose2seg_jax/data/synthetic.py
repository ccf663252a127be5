"""Synthetic OCHuman-like images: articulated, heavily overlapping people with occlusion-aware labels.

Each scene holds 2 to 5 people drawn back to front. A person is a sampled skeleton with human
proportions (head, neck, torso, upper and lower limbs, hands and feet as discs and capsules) in a
varied pose, size and rotation, dressed in clothing colours with stripes or noise. People are
placed around each other so their boxes overlap heavily (the summary reports OCHuman's mean
MaxIoU). Labels follow from the drawing:

- a person's mask is what remains visible after everyone in front has been drawn;
- a joint hidden by someone in front has ``v = 1``, a visible one ``v = 2``, a joint outside the
  image (or a face joint of a person seen from behind) ``v = 0`` with ``x = y = 0``;
- people left with less than ``MIN_VISIBLE_FRACTION`` of their body visible are removed from the
  scene before drawing, so every drawn person is annotated.

A share of scenes (``lookalike``) dresses everybody alike, so only pose tells them apart.
Every image depends only on ``(seed, index)``: the same seed gives the same bytes.

Writes ``OUT/<split>.json`` (COCO format: compressed RLE masks, keypoints, bbox from the mask,
mask ``area``, ``iscrowd`` 0, the COCO person category with keypoint names and skeleton) and
JPEG images under ``OUT/<split>/``. Command line: ``pose2seg-synth OUT --split train --images N``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils
from tqdm import tqdm

from pose2seg_jax.data.coco import max_iou
from pose2seg_jax.data.images import encode_jpeg
from pose2seg_jax.ops.keypoints import KEYPOINT_NAMES, NUM_KEYPOINTS

DEFAULT_SEEDS = {"train": 0, "val": 1, "test": 2}
MIN_VISIBLE_FRACTION = 0.2

# COCO's person skeleton (1-based joint pairs), as in the COCO keypoint files.
COCO_SKELETON = (
    (16, 14), (14, 12), (17, 15), (15, 13), (12, 13), (6, 12), (7, 13), (6, 7), (6, 8),
    (7, 9), (8, 10), (9, 11), (2, 3), (1, 2), (1, 3), (2, 4), (3, 5), (4, 6), (5, 7),
)  # fmt: skip

# Part regions, used to pick a clothing colour.
SKIN, SHIRT, PANTS, SHOES = 1, 2, 3, 4

NOSE, L_EYE, R_EYE, L_EAR, R_EAR = 0, 1, 2, 3, 4
L_SHO, R_SHO, L_ELB, R_ELB, L_WRI, R_WRI = 5, 6, 7, 8, 9, 10
L_HIP, R_HIP, L_KNE, R_KNE, L_ANK, R_ANK = 11, 12, 13, 14, 15, 16


@dataclasses.dataclass
class Scene:
    """One generated image and its people (in annotation order = drawing order, back first).

    Attributes:
      image: ``(H, W, 3)`` uint8 RGB.
      keypoints: ``(n, 17, 3)`` float32, COCO order, ``v`` from occlusion.
      masks: ``(n, H, W)`` uint8 visible-region masks.
      boxes: ``(n, 4)`` float32 xywh of the whole (amodal) person, clipped to the image; these
        are the boxes MaxIoU is computed from, as OCHuman's whole-person boxes.
      lookalike: whether everybody is dressed alike.
    """

    image: np.ndarray
    keypoints: np.ndarray
    masks: np.ndarray
    boxes: np.ndarray
    lookalike: bool


def _rot(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s], [s, c]])


def sample_skeleton(rng: np.random.Generator, height: float) -> tuple[np.ndarray, dict]:
    """Samples one person's joints in a local frame (hip centre at the origin, y down).

    Args:
      rng: the random generator.
      height: standing height in pixels (ankle to head top).

    Returns:
      ``(joints (17, 2) float64, info)``; ``info`` holds ``head`` (centre), ``head_r``,
      ``neck``, ``hip_c``, ``facing`` (+1 front, -1 back), ``profile`` (0..1), ``radii`` by limb.
    """
    h = height
    lean = rng.normal(0.0, 0.12)
    up = np.array([math.sin(lean), -math.cos(lean)])
    side = np.array([-up[1], up[0]])  # perpendicular, pointing to image right when upright
    facing = 1.0 if rng.random() < 0.75 else -1.0
    profile = float(rng.uniform(0.0, 1.0) ** 2)  # 0 frontal, 1 side view
    width_scale = 1.0 - 0.55 * profile
    # The person's left is on the image right when seen from the front.
    left = side * facing * width_scale

    hip_c = np.zeros(2)
    neck = hip_c + up * 0.30 * h
    sho_half, hip_half = 0.115 * h * rng.uniform(0.9, 1.1), 0.085 * h * rng.uniform(0.9, 1.1)
    j = np.zeros((NUM_KEYPOINTS, 2))
    j[L_SHO], j[R_SHO] = neck + left * sho_half, neck - left * sho_half
    j[L_HIP], j[R_HIP] = hip_c + left * hip_half, hip_c - left * hip_half

    style = rng.choice(["stand", "walk", "raise", "crouch", "dance"], p=[0.25, 0.3, 0.15, 0.1, 0.2])
    down = -up

    def limb(start, first_angle, bend, l1, l2, mirror):
        d1 = _rot(first_angle * mirror) @ down
        mid = start + d1 * l1
        d2 = _rot(bend * mirror) @ d1
        return mid, mid + d2 * l2

    for sign, sho, elb, wri in ((1, L_SHO, L_ELB, L_WRI), (-1, R_SHO, R_ELB, R_WRI)):
        mirror = sign * facing
        if style == "raise" and rng.random() < 0.8:
            a = rng.uniform(1.9, 3.0)
        elif style == "dance":
            a = rng.uniform(-0.6, 2.8)
        else:
            a = rng.uniform(-0.3, 0.9)
        bend = rng.uniform(0.0, 2.2) * (1 if rng.random() < 0.8 else -0.3)
        j[elb], j[wri] = limb(j[sho], a, bend, 0.165 * h, 0.145 * h, mirror)
    stride = rng.uniform(0.0, 0.5) if style in ("walk", "dance") else rng.uniform(0.0, 0.15)
    for sign, hip, kne, ank in ((1, L_HIP, L_KNE, L_ANK), (-1, R_HIP, R_KNE, R_ANK)):
        mirror = sign * facing
        phase = 1 if (sign > 0) == (rng.random() < 0.5) else -1
        if style == "crouch":
            a, bend = rng.uniform(0.8, 1.6) * phase, -rng.uniform(1.5, 2.4) * phase
        else:
            a = 0.12 + stride * phase + rng.normal(0, 0.05)
            bend = -rng.uniform(0.0, 0.6 if style == "walk" else 0.3)
        if profile > 0.5:
            mirror = facing  # seen from the side both legs swing in the same plane
        j[kne], j[ank] = limb(j[hip], a * mirror, bend * mirror, 0.245 * h, 0.235 * h, 1.0)

    head_r = 0.062 * h
    head = neck + _rot(rng.normal(0, 0.15)) @ up * 0.105 * h
    turn = (1 - 2 * (rng.random() < 0.5)) * profile
    face_side = side * turn
    j[NOSE] = head + face_side * 0.55 * head_r - up * 0.1 * head_r
    eye_half = 0.36 * head_r * (1 - profile)
    j[L_EYE] = (
        head
        + left * eye_half / max(width_scale, 1e-3)
        + face_side * 0.45 * head_r
        + up * 0.25 * head_r
    )
    j[R_EYE] = (
        head
        - left * eye_half / max(width_scale, 1e-3)
        + face_side * 0.45 * head_r
        + up * 0.25 * head_r
    )
    ear_half = 0.8 * head_r * (1 - 0.7 * profile)
    j[L_EAR] = head + left * ear_half / max(width_scale, 1e-3) * 0.9 - face_side * 0.3 * head_r
    j[R_EAR] = head - left * ear_half / max(width_scale, 1e-3) * 0.9 - face_side * 0.3 * head_r
    radii = {
        "upper_arm": 0.036 * h, "forearm": 0.03 * h, "thigh": 0.058 * h, "shin": 0.043 * h,
        "neck": 0.03 * h, "torso": (sho_half + hip_half) * 0.5 * (0.75 + 0.25 * width_scale),
        "hand": 0.028 * h, "foot": 0.032 * h,
    }  # fmt: skip
    info = {"head": head, "head_r": head_r, "neck": neck, "hip_c": hip_c, "facing": facing,
            "profile": profile, "radii": radii, "up": up}  # fmt: skip
    return j, info


def _parts(j: np.ndarray, info: dict) -> list[tuple[np.ndarray, np.ndarray, float, int]]:
    """The person's drawing primitives, back to front: ``(a, b, radius, region)`` capsules."""
    r = info["radii"]
    sho_mid, hip_mid = (j[L_SHO] + j[R_SHO]) / 2, (j[L_HIP] + j[R_HIP]) / 2
    out = []
    foot_dir = np.array([0.6 * info["facing"] * (0.3 + 0.7 * info["profile"]), 0.0])
    for ank in (L_ANK, R_ANK):
        out.append((j[ank], j[ank] + foot_dir * r["foot"] * 1.5, r["foot"], SHOES))
    for hip, kne, ank in ((L_HIP, L_KNE, L_ANK), (R_HIP, R_KNE, R_ANK)):
        out.append((j[hip], j[kne], r["thigh"], PANTS))
        out.append((j[kne], j[ank], r["shin"], PANTS))
    out.append((info["neck"], info["head"], r["neck"], SKIN))
    # Torso: three capsules along its axis give a tapered shape.
    torso_r = r["torso"]
    out.append((sho_mid * 0.9 + hip_mid * 0.1, hip_mid, torso_r, SHIRT))
    out.append((j[L_SHO], j[R_SHO], r["upper_arm"] * 1.1, SHIRT))
    out.append((j[L_HIP], j[R_HIP], r["thigh"], PANTS))
    for sho, elb, wri in ((L_SHO, L_ELB, L_WRI), (R_SHO, R_ELB, R_WRI)):
        out.append((j[sho], j[elb], r["upper_arm"], SHIRT))
        out.append((j[elb], j[wri], r["forearm"], SKIN))
        out.append((j[wri], j[wri], r["hand"], SKIN))
    out.append((info["head"], info["head"], info["head_r"], SKIN))
    return out


def _capsule(
    xs: np.ndarray, ys: np.ndarray, a: np.ndarray, b: np.ndarray, radius: float
) -> np.ndarray:
    """Pixels within ``radius`` of segment ab; ``xs (1, w)``, ``ys (h, 1)`` -> ``(h, w)`` bool."""
    dx, dy = b[0] - a[0], b[1] - a[1]
    px, py = xs - a[0], ys - a[1]
    len2 = dx * dx + dy * dy
    if len2 < 1e-9:
        return px * px + py * py <= radius * radius
    t = px * (dx / len2) + py * (dy / len2)
    np.maximum(t, 0.0, out=t)
    np.minimum(t, 1.0, out=t)
    ex = px - t * dx
    ey = py - t * dy
    ex *= ex
    ey *= ey
    ex += ey
    return ex <= radius * radius


def _rasterise(parts, height: int, width: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Draws capsules into a region map over the person's window.

    Returns:
      ``(regions (h, w) uint8, (y0, y1, x0, x1))``; ``regions`` is 0 outside the person. The
      window is clipped to the image and may be empty.
    """
    boxes = []
    for a, b, r, _ in parts:
        ax, ay, bx, by = float(a[0]), float(a[1]), float(b[0]), float(b[1])
        boxes.append(
            (
                math.floor(min(ax, bx) - r),
                math.ceil(max(ax, bx) + r) + 1,
                math.floor(min(ay, by) - r),
                math.ceil(max(ay, by) + r) + 1,
            )
        )
    x0 = max(min(b[0] for b in boxes), 0)
    x1 = min(max(b[1] for b in boxes), width)
    y0 = max(min(b[2] for b in boxes), 0)
    y1 = min(max(b[3] for b in boxes), height)
    regions = np.zeros((max(y1 - y0, 0), max(x1 - x0, 0)), np.uint8)
    if regions.size == 0:
        return regions, (y0, y1, x0, x1)
    for (a, b, r, region), (bx0, bx1, by0, by1) in zip(parts, boxes):
        px0, px1 = max(bx0, x0), min(bx1, x1)
        py0, py1 = max(by0, y0), min(by1, y1)
        if px1 <= px0 or py1 <= py0:
            continue
        xs = np.arange(px0, px1, dtype=np.float32)[None, :]
        ys = np.arange(py0, py1, dtype=np.float32)[:, None]
        inside = _capsule(xs, ys, a, b, r)
        regions[py0 - y0 : py1 - y0, px0 - x0 : px1 - x0][inside] = region
    return regions, (y0, y1, x0, x1)


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(20, 236, 3).astype(np.float32)


def _outfit(rng: np.random.Generator) -> dict:
    """Clothing: colours per region and a texture for shirt and pants."""
    skin_tone = rng.uniform(0.25, 1.0)
    skin = np.array([225, 180, 150], np.float32) * skin_tone + np.array([30, 20, 15]) * (
        1 - skin_tone
    )
    return {
        SKIN: skin,
        SHIRT: _random_colour(rng),
        PANTS: _random_colour(rng),
        SHOES: rng.integers(10, 90, 3).astype(np.float32),
        "second": _random_colour(rng),
        "shirt_texture": rng.choice(["solid", "stripes", "noise"], p=[0.3, 0.4, 0.3]),
        "pants_texture": rng.choice(["solid", "stripes", "noise"], p=[0.6, 0.15, 0.25]),
        "period": float(rng.uniform(4.0, 12.0)),
        "angle": float(rng.uniform(0, math.pi)),
    }


def _paint(
    rng: np.random.Generator, regions: np.ndarray, window: tuple[int, int, int, int], outfit: dict
) -> np.ndarray:
    """Colours ``(h, w, 3)`` float32 for a person's window from its regions and outfit."""
    y0, y1, x0, x1 = window
    h, w = regions.shape
    colours = np.zeros((h, w, 3), np.float32)
    for region in (SKIN, SHIRT, PANTS, SHOES):
        colours[regions == region] = outfit[region]
    xs = np.arange(x0, x1, dtype=np.float32)[None, :]
    ys = np.arange(y0, y1, dtype=np.float32)[:, None]
    for region, key in ((SHIRT, "shirt_texture"), (PANTS, "pants_texture")):
        sel = regions == region
        if outfit[key] == "stripes":
            phase = xs * math.cos(outfit["angle"]) + ys * math.sin(outfit["angle"])
            stripe = (np.sin(phase * (2 * math.pi / outfit["period"])) > 0) & sel
            colours[stripe] = outfit["second"]
        elif outfit[key] == "noise":
            coarse = rng.normal(0, 28, (h // 4 + 2, w // 4 + 2, 1)).astype(np.float32)
            noise = np.repeat(np.repeat(coarse, 4, 0), 4, 1)[:h, :w]
            colours += noise * sel[:, :, None]
    shade = 1.0 + rng.normal(0, 0.04, (h, 1, 1)).astype(np.float32)
    return colours * shade


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A gradient with clutter (boxes, discs, bars) and noise, ``(H, W, 3)`` float32."""
    c0, c1 = _random_colour(rng), _random_colour(rng)
    t = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    img = np.empty((height, width, 3), np.float32)
    img[...] = c0 * (1 - t) + c1 * t
    for _ in range(int(rng.integers(6, 16))):
        colour = _random_colour(rng)
        kind = rng.integers(0, 3)
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        sx, sy = rng.uniform(5, width / 3), rng.uniform(5, height / 3)
        x0, x1 = int(max(cx - sx, 0)), int(min(cx + sx, width))
        y0, y1 = int(max(cy - sy, 0)), int(min(cy + sy, height))
        if x1 <= x0 or y1 <= y0:
            continue
        if kind == 0:
            img[y0:y1, x0:x1] = colour
        elif kind == 1:
            xs = (np.arange(x0, x1, dtype=np.float32)[None, :] - cx) / sx
            ys = (np.arange(y0, y1, dtype=np.float32)[:, None] - cy) / sy
            img[y0:y1, x0:x1][xs * xs + ys * ys <= 1] = colour
        else:
            bar = max(int(sy / 6), 2)
            img[y0 : min(y0 + bar, height), :] = colour
    return img


def generate_scene(
    rng: np.random.Generator,
    height: int = 288,
    width: int = 288,
    *,
    min_people: int = 2,
    max_people: int = 5,
    lookalike: float = 0.25,
    spread: float = 1.0,
) -> Scene:
    """Generates one scene.

    Args:
      rng: the random generator (the scene depends on nothing else).
      height: image height.
      width: image width.
      min_people: fewest people (at least 1).
      max_people: most people.
      lookalike: probability that everybody is dressed alike.
      spread: scales how far people stand from each other (1: OCHuman-like crowding; larger
        values give COCO-like scenes where more people stay visible).

    Returns:
      The :class:`Scene`, people in drawing order (back first).
    """
    same = bool(rng.random() < lookalike)
    shared_outfit = _outfit(rng)
    for _attempt in range(20):
        n = int(rng.integers(min_people, max_people + 1))
        base_h = rng.uniform(0.5, 0.9) * height
        people = []
        for i in range(n):
            person_h = base_h * rng.uniform(0.92, 1.08)
            joints, info = sample_skeleton(rng, person_h)
            tilt = rng.normal(0, 0.12) if rng.random() < 0.85 else rng.uniform(-1.6, 1.6)
            rot = _rot(tilt)
            if i == 0:
                centre = np.array(
                    [rng.uniform(0.35, 0.65) * width, rng.uniform(0.45, 0.6) * height]
                )
            else:
                anchor = people[int(rng.integers(0, i))]["centre"]
                offset = np.array([rng.normal(0, 0.09), rng.normal(0, 0.03)]) * base_h * spread
                centre = anchor + offset
            place = lambda p, rot=rot, centre=centre: p @ rot.T + centre
            info = dict(info)
            for key in ("head", "neck", "hip_c"):
                info[key] = place(info[key])
            people.append({"joints": place(joints), "info": info, "centre": centre})
        drawn = []
        for person in people:
            regions, window = _rasterise(_parts(person["joints"], person["info"]), height, width)
            if regions.size and regions.any():
                person["regions"], person["window"] = regions, window
                drawn.append(person)
        ids = np.full((height, width), -1, np.int16)
        for i, person in enumerate(drawn):
            y0, y1, x0, x1 = person["window"]
            ids[y0:y1, x0:x1][person["regions"] > 0] = i
        areas = np.bincount(ids.reshape(-1) + 1, minlength=len(drawn) + 1)[1:]
        keep = [
            p
            for i, p in enumerate(drawn)
            if areas[i] >= MIN_VISIBLE_FRACTION * np.count_nonzero(p["regions"])
        ]
        if len(keep) >= min_people:
            break
    else:
        keep = drawn  # pragma: no cover - 20 failed layouts are vanishingly rare

    image = _background(rng, height, width)
    ids = np.full((height, width), -1, np.int16)
    for i, person in enumerate(keep):
        y0, y1, x0, x1 = person["window"]
        sel = person["regions"] > 0
        outfit = shared_outfit if same else _outfit(rng)
        colours = _paint(rng, person["regions"], person["window"], outfit)
        image[y0:y1, x0:x1][sel] = colours[sel]
        ids[y0:y1, x0:x1][sel] = i
    # Sensor-like noise from raw bytes: much cheaper than rng.normal at this size.
    noise = np.frombuffer(rng.bytes(height * width), np.uint8).reshape(height, width, 1)
    image += (noise & np.uint8(15)).astype(np.float32) - 7.5
    np.clip(image, 0, 255, out=image)
    image = image.astype(np.uint8)

    n = len(keep)
    keypoints = np.zeros((n, NUM_KEYPOINTS, 3), np.float32)
    masks = np.zeros((n, height, width), np.uint8)
    boxes = np.zeros((n, 4), np.float32)
    for i, person in enumerate(keep):
        masks[i] = ids == i
        joints = person["joints"]
        xi, yi = np.rint(joints[:, 0]).astype(int), np.rint(joints[:, 1]).astype(int)
        inside = (xi >= 0) & (xi < width) & (yi >= 0) & (yi < height)
        owner = np.where(inside, ids[np.clip(yi, 0, height - 1), np.clip(xi, 0, width - 1)], -1)
        v = np.where(inside, np.where(owner > i, 1, 2), 0)
        if person["info"]["facing"] < 0:
            v[[NOSE, L_EYE, R_EYE]] = 0
        keypoints[i, :, :2] = np.where(v[:, None] > 0, joints, 0.0)
        keypoints[i, :, 2] = v
        y0, y1, x0, x1 = person["window"]
        rows = np.flatnonzero(person["regions"].any(axis=1))
        cols = np.flatnonzero(person["regions"].any(axis=0))
        boxes[i] = [x0 + cols[0], y0 + rows[0], cols[-1] - cols[0] + 1, rows[-1] - rows[0] + 1]
    return Scene(image=image, keypoints=keypoints, masks=masks, boxes=boxes, lookalike=same)


def person_category() -> dict:
    """The COCO person category with keypoint names and skeleton."""
    return {
        "id": 1,
        "name": "person",
        "supercategory": "person",
        "keypoints": list(KEYPOINT_NAMES),
        "skeleton": [list(p) for p in COCO_SKELETON],
    }


@dataclasses.dataclass
class SynthSummary:
    """What :func:`write_dataset` produced."""

    images: int
    people: int
    mean_max_iou: float
    seconds: float
    cpu_seconds: float
    annotation_file: str

    def line(self) -> str:
        """One summary line; the CPU rate is what one core sustains when not shared."""
        rate = self.images / max(self.seconds, 1e-9)
        cpu_rate = self.images / max(self.cpu_seconds, 1e-9)
        return (
            f"wrote {self.images} images, {self.people} people, mean MaxIoU "
            f"{self.mean_max_iou:.3f} to {self.annotation_file} ({rate:.1f} images/s wall, "
            f"{cpu_rate:.1f} images per CPU second)"
        )


def scene_seed(seed: int, index: int) -> np.random.Generator:
    """The generator for image ``index`` of a run with ``seed``."""
    return np.random.default_rng([seed, index])


def scene_for_index(seed: int, index: int, size: int = 288, **kwargs) -> Scene:
    """Image ``index`` of a run with ``seed``: height ``size``, width 3/4 to 4/3 of it.

    Args:
      seed: the run's seed.
      index: the image's position.
      size: image height.
      **kwargs: passed to :func:`generate_scene`.

    Returns:
      The :class:`Scene`.
    """
    rng = scene_seed(seed, index)
    width = int(round(size * rng.choice([0.75, 1.0, 1.0, 4 / 3]) / 8) * 8)
    return generate_scene(rng, size, width, **kwargs)


def write_dataset(
    out_dir: str | Path,
    split: str = "train",
    num_images: int = 100,
    seed: int | None = None,
    *,
    size: int = 288,
    min_people: int = 2,
    max_people: int = 5,
    lookalike: float = 0.25,
    progress: bool = True,
) -> SynthSummary:
    """Generates ``num_images`` scenes into ``out_dir/<split>.json`` and ``out_dir/<split>/``.

    Args:
      out_dir: output directory (created).
      split: split name; it names the json file and the image folder.
      num_images: how many images.
      seed: the seed; None uses the split's default (train 0, val 1, test 2, others 3).
      size: image height; widths vary between 3/4 and 4/3 of it (multiples of 8).
      min_people: fewest people per image.
      max_people: most people per image.
      lookalike: share of scenes where everybody is dressed alike.
      progress: show a tqdm bar.

    Returns:
      The :class:`SynthSummary`.
    """
    if seed is None:
        seed = DEFAULT_SEEDS.get(split, 3)
    out = Path(out_dir)
    (out / split).mkdir(parents=True, exist_ok=True)
    start, cpu_start = time.perf_counter(), time.process_time()
    images, annotations, ious = [], [], []
    ann_id = 1
    for index in tqdm(range(num_images), desc=f"synth {split}", disable=not progress):
        scene = scene_for_index(
            seed, index, size, min_people=min_people, max_people=max_people, lookalike=lookalike
        )
        width = scene.image.shape[1]
        image_id = index + 1
        file_name = f"{split}/{image_id:06d}.jpg"
        (out / file_name).write_bytes(encode_jpeg(scene.image, quality=92))
        images.append({"id": image_id, "file_name": file_name, "height": size, "width": width})
        ious.extend(max_iou(scene.boxes).tolist())
        rles = mask_utils.encode(np.asfortranarray(np.moveaxis(scene.masks, 0, 2)))
        for i, rle in enumerate(rles):
            kp = scene.keypoints[i]
            annotations.append(
                {
                    "id": ann_id,
                    "image_id": image_id,
                    "category_id": 1,
                    "iscrowd": 0,
                    "segmentation": {"size": [size, width], "counts": rle["counts"].decode()},
                    "area": float(mask_utils.area(rle)),
                    "bbox": [round(float(v), 2) for v in scene.boxes[i]],
                    "keypoints": [
                        round(float(v), 2) if k % 3 != 2 else int(v)
                        for k, v in enumerate(kp.reshape(-1))
                    ],
                    "num_keypoints": int(np.count_nonzero(kp[:, 2] > 0)),
                    "lookalike": scene.lookalike,
                }
            )
            ann_id += 1
    data = {
        "info": {"description": f"pose2seg-synth split={split} seed={seed} size={size}"},
        "images": images,
        "annotations": annotations,
        "categories": [person_category()],
    }
    annotation_file = out / f"{split}.json"
    annotation_file.write_text(json.dumps(data))
    return SynthSummary(
        images=num_images,
        people=len(annotations),
        mean_max_iou=float(np.mean(ious)) if ious else 0.0,
        seconds=time.perf_counter() - start,
        cpu_seconds=time.process_time() - cpu_start,
        annotation_file=str(annotation_file),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """The ``pose2seg-synth`` command."""
    parser = argparse.ArgumentParser(
        prog="pose2seg-synth", description="Write an OCHuman-like synthetic dataset."
    )
    parser.add_argument("out", help="output directory")
    parser.add_argument("--split", default="train", help="split name (train, val, ...)")
    parser.add_argument("--images", type=int, default=200, help="number of images")
    parser.add_argument("--seed", type=int, default=None, help="seed (default: per split)")
    parser.add_argument("--size", type=int, default=288, help="image height in pixels")
    parser.add_argument("--min-people", type=int, default=2)
    parser.add_argument("--max-people", type=int, default=5)
    parser.add_argument("--lookalike", type=float, default=0.25, help="share of alike scenes")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    if not 1 <= args.min_people <= args.max_people:
        parser.error("need 1 <= --min-people <= --max-people")
    summary = write_dataset(
        args.out,
        args.split,
        args.images,
        args.seed,
        size=args.size,
        min_people=args.min_people,
        max_people=args.max_people,
        lookalike=args.lookalike,
        progress=not args.no_progress,
    )
    print(summary.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
