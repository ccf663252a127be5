"""COCO ``segm`` AP with pycocotools, and OCHuman's occlusion subsets.

Every evaluated person gets one mask scored 1.0 (REFERENCE.md section 10). Each result also
carries the ``annotation_id`` of the ground-truth person whose keypoints produced it, which is
what lets the moderate and hard occlusion subsets be scored: a subset keeps its people in the
ground truth and their masks in the results.
"""

import contextlib
import copy
import io
from collections.abc import Iterable, Sequence

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR", "ARs", "ARm", "ARl")

# OCHuman's occlusion levels by MaxIoU (DATASETS.md): moderate 0.5-0.75, hard above 0.75.
SUBSETS = {"moderate": (0.5, 0.75), "hard": (0.75, 1.01)}


def encode_mask(mask: np.ndarray) -> dict:
    """(H, W) bool -> COCO compressed RLE with a JSON-ready ``counts`` string."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def segm_result(image_id: int, mask: np.ndarray, annotation_id: int = -1) -> dict:
    """One COCO results entry for a person's mask, scored 1.0."""
    return {
        "image_id": int(image_id),
        "category_id": 1,
        "segmentation": encode_mask(mask),
        "score": 1.0,
        "annotation_id": int(annotation_id),
    }


def _box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU between every pair of xywh boxes: (n, 4), (m, 4) -> (n, m)."""
    ax0, ay0, ax1, ay1 = a[:, 0], a[:, 1], a[:, 0] + a[:, 2], a[:, 1] + a[:, 3]
    bx0, by0, bx1, by1 = b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    w = np.clip(np.minimum(ax1[:, None], bx1[None]) - np.maximum(ax0[:, None], bx0[None]), 0, None)
    h = np.clip(np.minimum(ay1[:, None], by1[None]) - np.maximum(ay0[:, None], by0[None]), 0, None)
    inter = w * h
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def max_iou(coco: COCO) -> dict[int, float]:
    """Each person's MaxIoU: its largest box IoU with another person of the same image."""
    out = {}
    for image_id in coco.getImgIds():
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id], iscrowd=None))
        anns = [a for a in anns if not a.get("iscrowd", 0)]
        if not anns:
            continue
        boxes = np.array([a["bbox"] for a in anns], np.float64).reshape(-1, 4)
        iou = _box_iou(boxes, boxes)
        np.fill_diagonal(iou, 0.0)
        for ann, row in zip(anns, iou):
            out[ann["id"]] = float(row.max()) if len(anns) > 1 else 0.0
    return out


def load_ground_truth(annotation_file: str) -> COCO:
    """``pycocotools.coco.COCO(annotation_file)`` without its prints (they break progress bars)."""
    return _quiet(COCO, str(annotation_file))[0]


def _quiet(fn, *args):
    with contextlib.redirect_stdout(io.StringIO()) as out:
        result = fn(*args)
    return result, out.getvalue()


def coco_segm_stats(
    coco_gt: COCO, results: Sequence[dict], image_ids: Iterable[int] | None = None
) -> tuple[dict[str, float], str]:
    """Runs COCOeval ``segm`` and returns its 12 numbers by name plus the printed summary.

    Args:
      coco_gt: ground truth.
      results: COCO results entries (``segm_result``).
      image_ids: restrict to these images (the evaluated set); default all.

    Returns:
      ({'AP': ..., 'AP50': ..., ...}, the text pycocotools prints).
    """
    if not results:
        return dict.fromkeys(STAT_NAMES, 0.0), "no results\n"
    coco_dt, _ = _quiet(coco_gt.loadRes, copy.deepcopy(list(results)))
    evaluator = COCOeval(coco_gt, coco_dt, iouType="segm")
    if image_ids is not None:
        evaluator.params.imgIds = sorted(int(i) for i in image_ids)
    _, text = _quiet(lambda: (evaluator.evaluate(), evaluator.accumulate(), evaluator.summarize()))
    return {n: float(v) for n, v in zip(STAT_NAMES, evaluator.stats)}, text


def subset_gt(coco_gt: COCO, annotation_ids: set[int]) -> COCO:
    """A COCO ground truth with only the given annotations (and the images holding them)."""
    dataset = coco_gt.dataset
    anns = [a for a in dataset["annotations"] if a["id"] in annotation_ids]
    image_ids = {a["image_id"] for a in anns}
    sub = {
        "images": [i for i in dataset["images"] if i["id"] in image_ids],
        "annotations": anns,
        "categories": dataset["categories"],
    }
    coco = COCO()
    coco.dataset = sub
    _quiet(coco.createIndex)
    return coco


def evaluate_segm(
    coco_gt: COCO, results: Sequence[dict], image_ids: Iterable[int] | None = None
) -> tuple[dict[str, float], str]:
    """COCO segm metrics on all people, plus AP on OCHuman's moderate and hard subsets.

    Returns:
      (metrics, summary text): AP, AP50, AP75, APm, APl, AR (and the other COCO numbers), and
      ``AP_moderate``/``AP_hard`` with the number of people in each subset (``n_moderate``,
      ``n_hard``); a subset without people gets AP -1.
    """
    image_ids = None if image_ids is None else sorted(int(i) for i in image_ids)
    metrics, text = coco_segm_stats(coco_gt, results, image_ids)
    ious = max_iou(coco_gt)
    evaluated = set(image_ids) if image_ids is not None else None
    for name, (lo, hi) in SUBSETS.items():
        ids = {
            a
            for a, v in ious.items()
            if lo <= v < hi and (evaluated is None or coco_gt.anns[a]["image_id"] in evaluated)
        }
        metrics[f"n_{name}"] = len(ids)
        if not ids:
            metrics[f"AP_{name}"] = -1.0
            continue
        sub_results = [r for r in results if r.get("annotation_id", -1) in ids]
        stats, sub_text = coco_segm_stats(subset_gt(coco_gt, ids), sub_results)
        metrics[f"AP_{name}"] = stats["AP"]
        text += f"\n{name} occlusion ({len(ids)} people, MaxIoU {lo}-{min(hi, 1.0)}):\n{sub_text}"
    return metrics, text
