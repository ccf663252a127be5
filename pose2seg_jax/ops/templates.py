"""Pose templates: the reference's JSON file format, loading, and k-means clustering to make one.

A template file (REFERENCE.md sections 3 and 12) is JSON with ``names``, ``flip_map``,
``connections``, ``vis_threshold``, ``minpoints`` and ``templates``: K lists of 51 numbers, 17
joints x (x, y, score) in unit coordinates. ``load_templates`` applies the visibility threshold and
appends the left/right mirrored set, giving the (2K, 17, 3) array that template fitting uses.

The packaged default, ``DEFAULT_TEMPLATE_FILE`` (``pose2seg_jax/assets/templates_default.json``),
was made by this module's command from the project's synthetic training split (2000 images,
5908 people, seed 0; COCO's own poses cannot be downloaded here):

    pose2seg-synth /tmp/synth --split train --images 2000 --seed 0
    pose2seg-templates /tmp/synth/train.json pose2seg_jax/assets/templates_default.json

Its three templates are a full frontal body, a body with the face turned away, and a back view.
The released model's own template file (made from COCOPersons) can be passed anywhere a path is
taken (``config.templates``).
"""

import argparse
import contextlib
import importlib.resources
import io
import json
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.cluster.vq import kmeans2

from pose2seg_jax.ops.keypoints import FLIP_INDEX, FLIP_PAIRS, KEYPOINT_NAMES, LIMBS, NUM_KEYPOINTS

DEFAULT_TEMPLATE_FILE = (
    importlib.resources.files("pose2seg_jax") / "assets" / "templates_default.json"
)
DEFAULT_VIS_THRESHOLD = 0.4
DEFAULT_MINPOINTS = 8

_REQUIRED_KEYS = ("names", "flip_map", "connections", "vis_threshold", "minpoints", "templates")
_VALUES_PER_TEMPLATE = NUM_KEYPOINTS * 3


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def read_template_file(path: Any) -> dict[str, Any]:
    """Read and validate a template file in the reference's JSON format.

    Args:
      path: a filesystem path or an ``importlib.resources`` traversable.

    Returns:
      The file's dict, with ``templates`` as a (K, 51) float64 array and ``vis_threshold`` a
      float; other keys as stored.

    Raises:
      ValueError: naming the file and the fix, for invalid JSON, a missing key, a template of
        the wrong length, or a non-finite number.
    """
    name = str(path)
    try:
        text = path.read_text() if hasattr(path, "read_text") else open(path).read()
    except FileNotFoundError as e:
        raise FileNotFoundError(f"template file {name} does not exist") from e
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"template file {name} is not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise ValueError(f"template file {name} must hold a JSON object, got {type(data).__name__}")
    missing = [key for key in _REQUIRED_KEYS if key not in data]
    if missing:
        raise ValueError(
            f"template file {name} lacks the key(s) {missing}; a template file needs all of "
            f"{list(_REQUIRED_KEYS)} (write one with write_template_file or pose2seg-templates)"
        )
    names = data["names"]
    if not isinstance(names, list) or len(names) != NUM_KEYPOINTS:
        raise ValueError(f"template file {name}: 'names' must list the {NUM_KEYPOINTS} COCO joints")
    for key in ("flip_map", "connections"):
        if not isinstance(data[key], list):
            raise ValueError(f"template file {name}: '{key}' must be a list of joint pairs")
    threshold = data["vis_threshold"]
    if not _is_number(threshold) or not math.isfinite(threshold):
        raise ValueError(
            f"template file {name}: 'vis_threshold' must be a finite number, got {threshold!r}"
        )
    if not isinstance(data["minpoints"], int) or isinstance(data["minpoints"], bool):
        raise ValueError(
            f"template file {name}: 'minpoints' must be an integer, got {data['minpoints']!r}"
        )
    templates = data["templates"]
    if not isinstance(templates, list) or not templates:
        raise ValueError(f"template file {name}: 'templates' must be a non-empty list of templates")
    for i, template in enumerate(templates):
        if not isinstance(template, list) or len(template) != _VALUES_PER_TEMPLATE:
            got = len(template) if isinstance(template, list) else type(template).__name__
            raise ValueError(
                f"template {i} in {name} has {got} values, expected {_VALUES_PER_TEMPLATE} "
                f"({NUM_KEYPOINTS} joints x (x, y, score))"
            )
        bad = [j for j, v in enumerate(template) if not _is_number(v) or not math.isfinite(v)]
        if bad:
            raise ValueError(
                f"template {i} in {name} has non-finite or non-numeric value(s) at position(s) "
                f"{bad[:5]} (joint {bad[0] // 3}); every value must be a finite number"
            )
    out = dict(data)
    out["templates"] = np.asarray(templates, np.float64)
    out["vis_threshold"] = float(threshold)
    return out


def write_template_file(
    path: str | os.PathLike,
    templates: np.ndarray,
    *,
    vis_threshold: float = DEFAULT_VIS_THRESHOLD,
    minpoints: int = DEFAULT_MINPOINTS,
    names: Sequence[str] = KEYPOINT_NAMES,
    flip_map: Sequence[Sequence[int]] = FLIP_PAIRS,
    connections: Sequence[Sequence[int]] = LIMBS,
) -> None:
    """Write templates in the reference's JSON format.

    Args:
      path: output file.
      templates: (K, 51) or (K, 17, 3) templates, (x, y, score) per joint in unit coordinates.
      vis_threshold: joints whose score is below it are invisible when loaded.
      minpoints: the minimum visible joints per pose used when clustering (recorded only).
      names: the 17 joint names.
      flip_map: left/right joint pairs (0-based; recorded only, loading uses COCO's).
      connections: skeleton limbs (0-based; recorded only).
    """
    templates = np.asarray(templates, np.float64).reshape(len(templates), -1)
    if templates.shape[1] != _VALUES_PER_TEMPLATE or not np.all(np.isfinite(templates)):
        raise ValueError(
            f"cannot write {path}: templates must be finite with shape (K, {_VALUES_PER_TEMPLATE}) "
            f"or (K, {NUM_KEYPOINTS}, 3), got {templates.shape}"
        )
    data = {
        "names": list(names),
        "flip_map": [list(pair) for pair in flip_map],
        "connections": [list(pair) for pair in connections],
        "vis_threshold": float(vis_threshold),
        "minpoints": int(minpoints),
        "templates": templates.tolist(),
    }
    with open(path, "w") as f:
        json.dump(data, f, indent=1)
        f.write("\n")


def load_templates(path: Any = None, *, vis_threshold: float | None = None) -> np.ndarray:
    """Load templates for fitting: threshold, then append the left/right mirrored set.

    Joints whose score is below the threshold become (0, 0, 0). The mirror swaps the COCO
    left/right joint labels only; x is not negated (REFERENCE.md section 3).

    Args:
      path: template file; None for the packaged ``DEFAULT_TEMPLATE_FILE``.
      vis_threshold: overrides the file's ``vis_threshold`` when given.

    Returns:
      (2K, 17, 3) float32: the K thresholded templates, then their K mirrors.
    """
    data = read_template_file(DEFAULT_TEMPLATE_FILE if path is None else path)
    threshold = data["vis_threshold"] if vis_threshold is None else vis_threshold
    templates = data["templates"].reshape(-1, NUM_KEYPOINTS, 3).copy()
    templates[templates[..., 2] < threshold] = 0.0
    mirrored = templates[:, FLIP_INDEX]
    return np.concatenate([templates, mirrored]).astype(np.float32)


def normalise_poses(
    keypoints: np.ndarray, boxes: np.ndarray, *, minpoints: int = DEFAULT_MINPOINTS
) -> tuple[np.ndarray, np.ndarray]:
    """Poses in their box's unit square, each as is and mirrored, ready for clustering.

    A pose is scaled by the longer side of its xywh box and centred in the unit square, so the
    aspect ratio is kept. Invisible joints (v == 0) become (0.5, 0.5, 0). The mirror maps
    x -> 1 - x and swaps left/right joints. Poses with fewer than ``minpoints`` visible joints,
    or with an empty box, are dropped.

    Args:
      keypoints: (N, 17, 3) COCO keypoints (x, y, v) in image pixels.
      boxes: (N, 4) xywh boxes.
      minpoints: minimum visible joints.

    Returns:
      data: (2M, 51) float64, the M kept poses then their M mirrors.
      kept: (N,) bool, which poses were kept.
    """
    keypoints = np.asarray(keypoints, np.float64).reshape(-1, NUM_KEYPOINTS, 3)
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    if len(keypoints) != len(boxes):
        raise ValueError(f"{len(keypoints)} poses but {len(boxes)} boxes; give one box per pose")
    visible = keypoints[..., 2] > 0
    side = np.maximum(boxes[:, 2], boxes[:, 3])
    kept = (visible.sum(axis=1) >= minpoints) & (boxes[:, 2] > 0) & (boxes[:, 3] > 0)
    kp, box, side, visible = keypoints[kept], boxes[kept], side[kept], visible[kept]
    centre = box[:, :2] + box[:, 2:] / 2.0
    unit = (kp[..., :2] - centre[:, None, :]) / side[:, None, None] + 0.5
    poses = np.concatenate([unit, kp[..., 2:]], axis=-1)
    poses[~visible] = (0.5, 0.5, 0.0)
    mirrored = poses[:, FLIP_INDEX].copy()
    mirrored[..., 0] = 1.0 - mirrored[..., 0]
    data = np.concatenate([poses, mirrored]).reshape(-1, _VALUES_PER_TEMPLATE)
    return data, kept


def cluster_templates(
    keypoints: np.ndarray,
    boxes: np.ndarray,
    *,
    k: int = 3,
    iterations: int = 100,
    minpoints: int = DEFAULT_MINPOINTS,
    seed: int = 0,
) -> np.ndarray:
    """Make K templates by the reference method (REFERENCE.md section 12).

    K-means over all 51 numbers of the normalised poses (see ``normalise_poses``), initialised
    from K random data points, run for exactly ``iterations`` Lloyd iterations
    (``scipy.cluster.vq.kmeans2`` with ``minit='points'``; an emptied cluster keeps its centre).

    Args:
      keypoints: (N, 17, 3) COCO keypoints in image pixels.
      boxes: (N, 4) xywh person boxes.
      k: number of templates.
      iterations: k-means iterations.
      minpoints: poses with fewer visible joints are dropped.
      seed: seed of the initialisation.

    Returns:
      (k, 51) float64 templates; the third value per joint is its cluster's mean visibility flag.
    """
    data, _ = normalise_poses(keypoints, boxes, minpoints=minpoints)
    if len(data) < k:
        raise ValueError(
            f"only {len(data)} normalised poses (with mirrors) for k={k} templates; "
            f"lower k or minpoints ({minpoints}), or give more people"
        )
    centres, _ = kmeans2(data, k, iter=iterations, minit="points", rng=np.random.default_rng(seed))
    return np.asarray(centres, np.float64)


def read_coco_people(annotation_file: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Keypoints and boxes of the non-crowd people with at least one labelled joint.

    Args:
      annotation_file: COCO-format annotations with a 'person' category.

    Returns:
      keypoints (N, 17, 3) and boxes (N, 4) xywh, float64.
    """
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(annotation_file))
    cat_ids = coco.getCatIds(catNms=["person"])
    if not cat_ids:
        raise ValueError(
            f"{annotation_file} has no 'person' category; expected COCO person keypoints"
        )
    keypoints, boxes = [], []
    for ann in coco.loadAnns(coco.getAnnIds(catIds=cat_ids, iscrowd=False)):
        values = ann.get("keypoints")
        if values is None:
            continue
        if len(values) != _VALUES_PER_TEMPLATE:
            raise ValueError(
                f"annotation {ann['id']} in {annotation_file} has {len(values)} keypoint values, "
                f"expected {_VALUES_PER_TEMPLATE}"
            )
        if len(ann.get("bbox", ())) != 4:
            raise ValueError(
                f"annotation {ann['id']} in {annotation_file} needs a 4-number 'bbox' (x, y, w, h)"
            )
        kp = np.asarray(values, np.float64).reshape(NUM_KEYPOINTS, 3)
        if not np.all(np.isfinite(kp)) or not np.all(np.isfinite(ann["bbox"])):
            raise ValueError(
                f"annotation {ann['id']} in {annotation_file} has non-finite keypoints or bbox"
            )
        if np.any(kp[:, 2] > 0):
            keypoints.append(kp)
            boxes.append(ann["bbox"])
    return (
        np.asarray(keypoints, np.float64).reshape(-1, NUM_KEYPOINTS, 3),
        np.asarray(boxes, np.float64).reshape(-1, 4),
    )


def templates_from_coco(
    annotation_file: str | os.PathLike,
    *,
    k: int = 3,
    iterations: int = 100,
    minpoints: int = DEFAULT_MINPOINTS,
    seed: int = 0,
) -> tuple[np.ndarray, dict[str, int]]:
    """Cluster templates from COCO-format person keypoint annotations.

    Args:
      annotation_file: COCO-format json.
      k, iterations, minpoints, seed: as ``cluster_templates``.

    Returns:
      templates: (k, 51) float64.
      counts: {'people': with keypoints, 'used': kept, 'dropped': below minpoints or empty box}.
    """
    keypoints, boxes = read_coco_people(annotation_file)
    _, kept = normalise_poses(keypoints, boxes, minpoints=minpoints)
    templates = cluster_templates(
        keypoints, boxes, k=k, iterations=iterations, minpoints=minpoints, seed=seed
    )
    used = int(kept.sum())
    return templates, {"people": len(kept), "used": used, "dropped": len(kept) - used}


def main(argv: Sequence[str] | None = None) -> None:
    """Console script ``pose2seg-templates ANNOTATIONS.json OUT.json [--k 3] [--seed 0] ...``."""
    parser = argparse.ArgumentParser(
        prog="pose2seg-templates",
        description="Cluster pose templates from COCO person keypoints (the reference's method).",
    )
    parser.add_argument("annotations", help="COCO-format annotation json with person keypoints")
    parser.add_argument("out", help="template file to write (JSON)")
    parser.add_argument("--k", type=int, default=3, help="number of templates")
    parser.add_argument("--seed", type=int, default=0, help="seed of the k-means initialisation")
    parser.add_argument(
        "--minpoints",
        type=int,
        default=DEFAULT_MINPOINTS,
        help="drop poses with fewer visible joints",
    )
    parser.add_argument("--iterations", type=int, default=100, help="k-means iterations")
    parser.add_argument(
        "--vis-threshold",
        type=float,
        default=DEFAULT_VIS_THRESHOLD,
        help="visibility threshold recorded in the file",
    )
    args = parser.parse_args(argv)
    templates, counts = templates_from_coco(
        args.annotations,
        k=args.k,
        iterations=args.iterations,
        minpoints=args.minpoints,
        seed=args.seed,
    )
    write_template_file(
        args.out, templates, vis_threshold=args.vis_threshold, minpoints=args.minpoints
    )
    print(
        f"{counts['people']} people with keypoints in {args.annotations}: {counts['used']} used "
        f"({2 * counts['used']} poses with mirrors), {counts['dropped']} dropped "
        f"(fewer than {args.minpoints} visible joints or an empty box); "
        f"wrote {args.k} templates to {args.out}"
    )


if __name__ == "__main__":
    main()
