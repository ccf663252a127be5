"""COCO segm evaluation: perfect, empty and shifted masks, MaxIoU and occlusion subsets."""

import json

import numpy as np
import pytest
from pycocotools.coco import COCO

from pose2seg_jax.evaluation import coco_eval


def _rect(h, w, x0, y0, x1, y1):
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def _gt(masks_per_image, h=60, w=80):
    images, anns = [], []
    for i, masks in enumerate(masks_per_image, start=1):
        images.append({"id": i, "file_name": f"{i}.png", "height": h, "width": w})
        for m in masks:
            ys, xs = np.nonzero(m)
            box = [float(xs.min()), float(ys.min()), float(np.ptp(xs) + 1), float(np.ptp(ys) + 1)]
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i,
                    "category_id": 1,
                    "iscrowd": 0,
                    "segmentation": coco_eval.encode_mask(m),
                    "area": float(m.sum()),
                    "bbox": box,
                }
            )
    coco = COCO()
    coco.dataset = {
        "images": images,
        "annotations": anns,
        "categories": [{"id": 1, "name": "person"}],
    }
    coco.createIndex()
    return coco


@pytest.fixture
def scene():
    h, w = 60, 80
    masks = [
        [_rect(h, w, 10, 10, 40, 50), _rect(h, w, 12, 11, 42, 51), _rect(h, w, 60, 5, 75, 20)],
        [_rect(h, w, 5, 5, 30, 30), _rect(h, w, 10, 8, 35, 33)],
    ]
    return _gt(masks), masks


def _results(coco, masks, transform=lambda m: m):
    out = []
    for ann in coco.dataset["annotations"]:
        image_masks = masks[ann["image_id"] - 1]
        index = [a["id"] for a in coco.imgToAnns[ann["image_id"]]].index(ann["id"])
        out.append(coco_eval.segm_result(ann["image_id"], transform(image_masks[index]), ann["id"]))
    return out


def test_perfect_masks_score_one(scene):
    coco, masks = scene
    metrics, text = coco_eval.evaluate_segm(coco, _results(coco, masks))
    assert metrics["AP"] == pytest.approx(1.0)
    assert metrics["AR"] == pytest.approx(1.0)
    assert "Average Precision" in text


def test_empty_masks_score_zero(scene):
    coco, masks = scene
    metrics, _ = coco_eval.evaluate_segm(coco, _results(coco, masks, lambda m: np.zeros_like(m)))
    assert metrics["AP"] == pytest.approx(0.0)


def test_shifted_masks_lose_strict_thresholds(scene):
    coco, masks = scene
    shifted = _results(coco, masks, lambda m: np.roll(m, 4, axis=1))
    metrics, _ = coco_eval.evaluate_segm(coco, shifted)
    assert 0.0 < metrics["AP"] < 1.0
    assert metrics["AP50"] > metrics["AP75"]


def test_max_iou_matches_hand_computation(scene):
    coco, _ = scene
    ious = coco_eval.max_iou(coco)
    # Image 1: boxes [10,10,30,40] and [12,11,30,40] overlap; the third is apart.
    inter = (40 - 12) * (50 - 11)
    expected = inter / (30 * 40 * 2 - inter)
    assert ious[1] == pytest.approx(expected)
    assert ious[2] == pytest.approx(expected)
    assert ious[3] == 0.0


def test_subsets_count_people_and_score_them(scene):
    coco, masks = scene
    ious = coco_eval.max_iou(coco)
    metrics, _ = coco_eval.evaluate_segm(coco, _results(coco, masks))
    assert metrics["n_moderate"] == sum(0.5 <= v < 0.75 for v in ious.values())
    assert metrics["n_hard"] == sum(v >= 0.75 for v in ious.values())
    assert metrics["n_hard"] == 2  # the two nearly coincident boxes of image 1 (IoU 0.83)
    assert metrics["n_moderate"] == 2  # the pair of image 2 (IoU 0.54)
    assert metrics["AP_hard"] == pytest.approx(1.0)
    assert metrics["AP_moderate"] == pytest.approx(1.0)


def test_image_restriction(scene):
    coco, masks = scene
    results = [r for r in _results(coco, masks) if r["image_id"] == 1]
    metrics, _ = coco_eval.evaluate_segm(coco, results, image_ids=[1])
    assert metrics["AP"] == pytest.approx(1.0)
    all_images, _ = coco_eval.evaluate_segm(coco, results)
    assert all_images["AR"] < 1.0


def test_ground_truth_loads_without_printing(scene, tmp_path, capsys):
    coco, _ = scene
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(coco.dataset))
    capsys.readouterr()
    loaded = coco_eval.load_ground_truth(path)
    assert capsys.readouterr().out == ""
    assert sorted(loaded.getAnnIds()) == sorted(coco.getAnnIds())
