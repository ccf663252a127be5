"""Reading COCO-format person annotations (COCOPersons, OCHuman's COCO-format files).

Every image becomes an :class:`ImageRecord` holding the people kept for the chosen use; masks stay
compressed RLE and are decoded on demand. People that cannot be used are skipped and counted by
reason in a :class:`LoadReport`, with the first few messages kept verbatim, so a bad record never
stops a long run and no person disappears without a trace.

Selection (REFERENCE.md section 9, DATASETS.md):
- ``mode="train"``: people with keypoints, a mask and at least ``min_visible`` (3) joints with
  ``v > 0``.
- ``mode="eval"``: every person with at least one labelled joint; a missing mask becomes an empty
  one (evaluation compares against the annotation file itself, not against these masks).
Crowd regions are skipped in both.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pycocotools import mask as mask_utils

from pose2seg_jax.ops.keypoints import NUM_KEYPOINTS

logger = logging.getLogger(__name__)

PERSON_CATEGORY_ID = 1
MAX_MESSAGES = 20

Mode = Literal["train", "eval"]

# Reasons a person or image is skipped, with a phrase for the summary.
SKIP_REASONS = {
    "crowd": "crowd regions (iscrowd=1)",
    "not_person": "annotations of another category",
    "unknown_image": "annotations whose image_id is not in 'images'",
    "no_keypoints": "people without labelled keypoints",
    "too_few_visible": "people with fewer visible joints than required (train)",
    "no_mask": "people without a mask (train)",
    "bad_keypoints": "keypoint lists of the wrong length or type",
    "bad_visibility": "keypoint visibility flags outside {0, 1, 2}",
    "non_finite": "non-finite keypoint, box or area numbers",
    "bad_mask": "segmentations pycocotools cannot read",
    "bad_image_entry": "image entries with a missing id, file name or size",
    "missing_image_file": "people whose image file does not exist",
    "image_without_people": "images left with no usable person",
}


@dataclasses.dataclass
class LoadReport:
    """What was read, kept and skipped (by reason) from one annotation file.

    Attributes:
      source: the annotation file name.
      images: images in the file.
      images_kept: images with at least one kept person.
      people: person annotations in the file.
      people_kept: people kept.
      skipped: counts by reason (keys of ``SKIP_REASONS``); ``image_without_people`` counts images,
        every other reason counts annotations.
      messages: the first ``MAX_MESSAGES`` messages, each naming the file and the record.
    """

    source: str
    images: int = 0
    images_kept: int = 0
    people: int = 0
    people_kept: int = 0
    skipped: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    messages: list[str] = dataclasses.field(default_factory=list)

    def skip(self, reason: str, message: str | None = None) -> None:
        """Counts one skipped record and keeps its message if there is room."""
        if reason not in SKIP_REASONS:
            raise KeyError(f"unknown skip reason {reason!r}")
        self.skipped[reason] += 1
        if message is not None:
            if len(self.messages) < MAX_MESSAGES:
                self.messages.append(message)
            logger.debug(message)

    def summary(self) -> str:
        """A few readable lines: totals, then one line per skip reason with its count."""
        lines = [
            f"{self.source}: kept {self.people_kept} of {self.people} people "
            f"in {self.images_kept} of {self.images} images"
        ]
        for reason, count in sorted(self.skipped.items(), key=lambda kv: -kv[1]):
            lines.append(f"  skipped {count:6d} {SKIP_REASONS[reason]}")
        if self.messages:
            lines.append("  first messages:")
            lines.extend(f"    {m}" for m in self.messages)
        return "\n".join(lines)


@dataclasses.dataclass
class ImageRecord:
    """One image and the people kept in it.

    Attributes:
      image_id: the COCO image id.
      file_name: path of the image file (image directory joined with the file's ``file_name``).
      height: image height in pixels, from the annotation file.
      width: image width in pixels.
      keypoints: ``(n, 17, 3)`` float32 ``(x, y, v)`` in COCO order, original pixel coordinates.
      boxes: ``(n, 4)`` float32 ``(x, y, w, h)``.
      masks: ``n`` compressed RLE dicts (``size`` and ``counts`` as bytes); an empty mask for an
        evaluation person without a segmentation.
      annotation_ids: ``(n,)`` int64.
    """

    image_id: int
    file_name: str
    height: int
    width: int
    keypoints: np.ndarray
    boxes: np.ndarray
    masks: list[dict[str, Any]]
    annotation_ids: np.ndarray

    @property
    def num_people(self) -> int:
        """The number of people ``n``."""
        return int(self.keypoints.shape[0])

    def decode_masks(self) -> np.ndarray:
        """Decodes the masks.

        Returns:
          ``(n, height, width)`` uint8 0/1.
        """
        return decode_rles(self.masks, self.height, self.width)


def decode_rles(rles: Sequence[dict[str, Any]], height: int, width: int) -> np.ndarray:
    """Decodes compressed RLEs to ``(n, height, width)`` uint8 0/1 (C order)."""
    if len(rles) == 0:
        return np.zeros((0, height, width), np.uint8)
    decoded = mask_utils.decode(list(rles))  # (H, W, n), Fortran order
    return np.ascontiguousarray(np.moveaxis(decoded, 2, 0))


def segmentation_to_rle(segmentation: Any, height: int, width: int) -> dict[str, Any] | None:
    """Converts a COCO segmentation (polygons, uncompressed or compressed RLE) to compressed RLE.

    Args:
      segmentation: a list of polygons (each a flat ``[x0, y0, x1, y1, ...]`` list), or an RLE
        dict whose ``counts`` is a list (uncompressed) or a string/bytes (compressed).
      height: image height.
      width: image width.

    Returns:
      A compressed RLE dict with ``counts`` as bytes, or None when the segmentation is empty
      (no polygon with at least three points).

    Raises:
      ValueError: the segmentation has a form pycocotools cannot read.
    """
    if segmentation is None:
        return None
    if isinstance(segmentation, list):
        polygons = [p for p in segmentation if isinstance(p, list) and len(p) >= 6]
        if not polygons:
            return None
        for p in polygons:
            if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in p):
                raise ValueError("polygon with non-numeric or non-finite coordinates")
        rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    elif isinstance(segmentation, dict) and "counts" in segmentation:
        size = segmentation.get("size", [height, width])
        if isinstance(segmentation["counts"], list):
            rle = mask_utils.frPyObjects(segmentation, int(size[0]), int(size[1]))
        else:
            counts = segmentation["counts"]
            rle = {"size": [int(size[0]), int(size[1])], "counts": counts}
            if isinstance(counts, str):
                rle["counts"] = counts.encode("ascii")
        if list(rle["size"]) != [height, width]:
            raise ValueError(
                f"RLE size {list(rle['size'])} differs from the image {[height, width]}"
            )
        mask_utils.area(rle)  # raises on malformed counts
    else:
        raise ValueError(f"segmentation of type {type(segmentation).__name__} is not COCO format")
    if isinstance(rle["counts"], str):
        rle["counts"] = rle["counts"].encode("ascii")
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": bytes(rle["counts"])}


def _parse_keypoints(ann: dict[str, Any], where: str, report: LoadReport) -> np.ndarray | None:
    """Returns ``(17, 3)`` float32 keypoints, or None after counting why they are unusable."""
    values = ann.get("keypoints")
    if values is None or (isinstance(values, list) and len(values) == 0):
        report.skip("no_keypoints")
        return None
    try:
        arr = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        report.skip(
            "bad_keypoints", f"{where} has keypoints that are not numbers; fix or remove it"
        )
        return None
    if arr.size != NUM_KEYPOINTS * 3:
        report.skip(
            "bad_keypoints",
            f"{where} has {arr.size} keypoint values, expected {NUM_KEYPOINTS * 3} "
            "(17 COCO joints as x, y, v); fix or remove it",
        )
        return None
    if not np.all(np.isfinite(arr)):
        report.skip("non_finite", f"{where} has non-finite keypoint values; fix or remove it")
        return None
    kpts = arr.reshape(NUM_KEYPOINTS, 3)
    if not np.all(np.isin(kpts[:, 2], (0, 1, 2))):
        bad = sorted(set(kpts[:, 2].tolist()) - {0.0, 1.0, 2.0})
        report.skip(
            "bad_visibility",
            f"{where} has visibility flags {bad}, expected 0, 1 or 2 (COCO convention)",
        )
        return None
    if not np.any(kpts[:, 2] > 0):
        report.skip("no_keypoints")
        return None
    return kpts.astype(np.float32)


def _box_from(ann: dict[str, Any], rle: dict[str, Any] | None, kpts: np.ndarray) -> np.ndarray:
    """The annotation's xywh box, else the mask's, else the labelled joints' extent."""
    bbox = ann.get("bbox")
    if isinstance(bbox, list) and len(bbox) == 4:
        return np.asarray(bbox, np.float32)
    if rle is not None:
        return np.asarray(mask_utils.toBbox(rle), np.float32)
    vis = kpts[kpts[:, 2] > 0, :2]
    lo, hi = vis.min(axis=0), vis.max(axis=0)
    return np.asarray([lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1]], np.float32)


def records_from_coco(
    data: dict[str, Any],
    image_dir: str | os.PathLike,
    *,
    mode: Mode = "train",
    min_visible: int = 3,
    source: str = "<annotations>",
    check_files: bool = False,
    keep_empty_images: bool = False,
) -> tuple[list[ImageRecord], LoadReport]:
    """Builds image records from a parsed COCO-format dict (see :func:`load_coco_persons`)."""
    if mode not in ("train", "eval"):
        raise ValueError(f"mode must be 'train' or 'eval', got {mode!r}")
    report = LoadReport(source=source)
    image_dir = Path(image_dir)
    images: dict[int, dict[str, Any]] = {}
    order: list[int] = []
    for entry in data.get("images", []):
        report.images += 1
        try:
            image_id = int(entry["id"])
            height, width = int(entry["height"]), int(entry["width"])
            file_name = str(entry["file_name"])
            if height <= 0 or width <= 0:
                raise ValueError("non-positive size")
        except (KeyError, TypeError, ValueError) as err:
            report.skip(
                "bad_image_entry",
                f"image entry {entry.get('id', '?')!r} in {source} is unusable ({err}); "
                "it needs id, file_name, height and width",
            )
            continue
        images[image_id] = {"file": str(image_dir / file_name), "h": height, "w": width}
        order.append(image_id)

    people: dict[int, list[tuple[int, np.ndarray, np.ndarray, dict[str, Any]]]] = (
        collections.defaultdict(list)
    )
    file_exists: dict[int, bool] = {}
    for ann in data.get("annotations", []):
        report.people += 1
        ann_id = int(ann.get("id", -1))
        where = f"annotation {ann_id} in {source}"
        if ann.get("category_id", PERSON_CATEGORY_ID) != PERSON_CATEGORY_ID:
            report.skip("not_person")
            continue
        image_id = ann.get("image_id")
        if image_id not in images:
            report.skip("unknown_image", f"{where} refers to image {image_id}, not in 'images'")
            continue
        if ann.get("iscrowd", 0):
            report.skip("crowd")
            continue
        kpts = _parse_keypoints(ann, where, report)
        if kpts is None:
            continue
        if mode == "train" and int(np.sum(kpts[:, 2] > 0)) < min_visible:
            report.skip("too_few_visible")
            continue
        info = images[image_id]
        try:
            rle = segmentation_to_rle(ann.get("segmentation"), info["h"], info["w"])
        except (ValueError, TypeError, KeyError) as err:
            report.skip("bad_mask", f"{where}: unreadable segmentation ({err}); fix or remove it")
            continue
        if rle is None:
            if mode == "train":
                report.skip("no_mask")
                continue
            rle = mask_utils.encode(np.zeros((info["h"], info["w"], 1), np.uint8, order="F"))[0]
        box = _box_from(ann, rle, kpts)
        if not np.all(np.isfinite(box)):
            report.skip("non_finite", f"{where} has a non-finite bbox {box.tolist()}; fix it")
            continue
        if check_files:
            if image_id not in file_exists:
                file_exists[image_id] = os.path.exists(info["file"])
            if not file_exists[image_id]:
                report.skip(
                    "missing_image_file",
                    f"{where}: image file {info['file']} does not exist; check the image directory",
                )
                continue
        people[image_id].append((ann_id, kpts, box, rle))

    records: list[ImageRecord] = []
    for image_id in order:
        found = people.get(image_id, [])
        if not found and not keep_empty_images:
            report.skip("image_without_people")
            continue
        info = images[image_id]
        records.append(
            ImageRecord(
                image_id=image_id,
                file_name=info["file"],
                height=info["h"],
                width=info["w"],
                keypoints=np.stack([p[1] for p in found]).astype(np.float32)
                if found
                else np.zeros((0, NUM_KEYPOINTS, 3), np.float32),
                boxes=np.stack([p[2] for p in found]).astype(np.float32)
                if found
                else np.zeros((0, 4), np.float32),
                masks=[p[3] for p in found],
                annotation_ids=np.asarray([p[0] for p in found], np.int64),
            )
        )
        report.people_kept += len(found)
    report.images_kept = sum(1 for r in records if r.num_people > 0)
    return records, report


def load_coco_persons(
    annotation_file: str | os.PathLike,
    image_dir: str | os.PathLike,
    *,
    mode: Mode = "train",
    min_visible: int = 3,
    check_files: bool = False,
    keep_empty_images: bool = False,
) -> tuple[list[ImageRecord], LoadReport]:
    """Reads a COCO-format person file into image records, in the file's image order.

    Args:
      annotation_file: the json file (COCOPersons, OCHuman COCO-format, ``pose2seg-synth`` output).
      image_dir: the directory the images' ``file_name`` entries are relative to.
      mode: ``"train"`` or ``"eval"`` selection (module docstring).
      min_visible: training needs at least this many joints with ``v > 0``.
      check_files: count people whose image file is missing (one ``stat`` per image).
      keep_empty_images: keep images with no usable person (records with ``n = 0``).

    Returns:
      ``(records, report)``: the records in file order and what was skipped.

    Raises:
      ValueError: the file is not valid JSON or not COCO-shaped (no ``images``/``annotations``).
    """
    path = Path(annotation_file)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); re-download or regenerate it") from err
    if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
        raise ValueError(f"{path} is not a COCO-format file: it needs 'images' and 'annotations'")
    return records_from_coco(
        data,
        image_dir,
        mode=mode,
        min_visible=min_visible,
        source=path.name,
        check_files=check_files,
        keep_empty_images=keep_empty_images,
    )


def max_iou(boxes: np.ndarray) -> np.ndarray:
    """Each box's largest IoU with another box of the same image (OCHuman's MaxIoU).

    Args:
      boxes: ``(n, 4)`` xywh.

    Returns:
      ``(n,)`` float64; 0 for a lone person.
    """
    n = len(boxes)
    if n < 2:
        return np.zeros(n)
    ious = np.asarray(
        mask_utils.iou(
            boxes.astype(np.float64).tolist(), boxes.astype(np.float64).tolist(), [0] * n
        )
    )
    np.fill_diagonal(ious, 0.0)
    return ious.max(axis=1)


def count_people(records: Iterable[ImageRecord]) -> int:
    """Total people over records."""
    return sum(r.num_people for r in records)


def replace_keypoints(
    records: Sequence[ImageRecord],
    keypoints_file: str | os.PathLike,
    *,
    min_person_score: float = 0.0,
    min_joint_score: float = 0.0,
) -> list[ImageRecord]:
    """Replaces each image's people by the detections of a COCO keypoint results file.

    For the paper's "predicted keypoints" rows: the model then segments the detected people, not
    the annotated ones. A results file is a json list of ``{"image_id", "keypoints" (51 numbers,
    the third of each triple a confidence), "score"}``. A joint is kept (``v = 2``) when its
    confidence is positive and at least ``min_joint_score``, else ``v = 0``; a person is kept
    when its score is at least ``min_person_score`` and it has a kept joint. Detected people get
    empty masks, boxes around their kept joints and ids 1, 2, ... in file order. Entries with a
    wrong length or non-finite numbers are skipped and logged.

    Args:
      records: the evaluated images (their people are discarded).
      keypoints_file: the results json.
      min_person_score: lowest person score kept.
      min_joint_score: lowest joint confidence kept.

    Returns:
      New records, same images and order.
    """
    path = Path(keypoints_file)
    with open(path, encoding="utf-8") as f:
        results = json.load(f)
    if not isinstance(results, list):
        raise ValueError(f"{path} is not a COCO keypoint results file (a json list)")
    found: dict[int, list[tuple[int, np.ndarray]]] = collections.defaultdict(list)
    skipped = collections.Counter()
    for index, det in enumerate(results):
        where = f"result {index} in {path.name}"
        try:
            kp = np.asarray(det["keypoints"], np.float64).reshape(-1)
            score = float(det.get("score", 1.0))
            image_id = int(det["image_id"])
        except (KeyError, TypeError, ValueError):
            skipped["unreadable"] += 1
            logger.warning("%s is unreadable; it needs image_id and keypoints", where)
            continue
        if kp.size != NUM_KEYPOINTS * 3 or not np.all(np.isfinite(kp)) or not math.isfinite(score):
            skipped["bad_keypoints"] += 1
            logger.warning(
                "%s has %d keypoint values (expected 51) or non-finite numbers", where, kp.size
            )
            continue
        if score < min_person_score:
            skipped["low_score"] += 1
            continue
        kp = kp.reshape(NUM_KEYPOINTS, 3)
        keep = (kp[:, 2] > 0) & (kp[:, 2] >= min_joint_score)
        if not keep.any():
            skipped["no_joints"] += 1
            continue
        out = np.zeros((NUM_KEYPOINTS, 3), np.float32)
        out[keep, :2] = kp[keep, :2]
        out[keep, 2] = 2
        found[image_id].append((index + 1, out))
    if skipped:
        logger.info("%s: skipped detections %s", path.name, dict(skipped))
    replaced = []
    for record in records:
        people = found.get(record.image_id, [])
        empty = mask_utils.encode(np.zeros((record.height, record.width, 1), np.uint8, order="F"))[
            0
        ]
        boxes = []
        for _, kp in people:
            vis = kp[kp[:, 2] > 0, :2]
            lo, hi = vis.min(axis=0), vis.max(axis=0)
            boxes.append([lo[0], lo[1], hi[0] - lo[0], hi[1] - lo[1]])
        replaced.append(
            dataclasses.replace(
                record,
                keypoints=np.stack([kp for _, kp in people])
                if people
                else np.zeros((0, NUM_KEYPOINTS, 3), np.float32),
                boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
                masks=[dict(empty) for _ in people],
                annotation_ids=np.asarray([i for i, _ in people], np.int64),
            )
        )
    return replaced
