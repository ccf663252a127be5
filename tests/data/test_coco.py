"""COCO-format reading: every segmentation form, selection rules, skip reasons and awkward images."""

import json
import math

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from pose2seg_jax.data import coco, images

H, W = 40, 60


def _kpts(n_visible: int, v: int = 2, x0: float = 10.0) -> list[float]:
    out = []
    for k in range(17):
        if k < n_visible:
            out += [x0 + k, 5.0 + k, v]
        else:
            out += [0, 0, 0]
    return out


def _rect_mask(x0, y0, x1, y1):
    m = np.zeros((H, W), np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


def _uncompressed_rle(mask: np.ndarray) -> dict:
    flat = mask.reshape(-1, order="F")
    counts, current, run = [], 0, 0
    for value in flat:
        if value == current:
            run += 1
        else:
            counts.append(run)
            current, run = value, 1
    counts.append(run)
    return {"size": [H, W], "counts": counts}


def _dataset(annotations, images_=None):
    return {
        "images": images_ or [{"id": 1, "file_name": "a.png", "height": H, "width": W}],
        "annotations": annotations,
        "categories": [{"id": 1, "name": "person"}],
    }


def test_segmentation_forms_decode_to_the_same_mask():
    mask = _rect_mask(10, 5, 30, 25)
    polygon = [[10 - 0.5, 5 - 0.5, 30 - 0.5, 5 - 0.5, 30 - 0.5, 25 - 0.5, 10 - 0.5, 25 - 0.5]]
    compressed = mask_utils.encode(np.asfortranarray(mask))
    compressed_str = {"size": [H, W], "counts": compressed["counts"].decode("ascii")}
    anns = [
        {
            "id": 11,
            "image_id": 1,
            "category_id": 1,
            "iscrowd": 0,
            "keypoints": _kpts(5),
            "segmentation": seg,
            "bbox": [10, 5, 20, 20],
        }
        for seg in (polygon, compressed_str, _uncompressed_rle(mask))
    ]
    for i, a in enumerate(anns):
        a["id"] = 11 + i
    records, report = coco.records_from_coco(_dataset(anns), "/imgs", source="t.json")
    assert report.people_kept == 3 and not report.skipped
    (rec,) = records
    decoded = rec.decode_masks()
    assert decoded.shape == (3, H, W) and decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded[1], mask)
    np.testing.assert_array_equal(decoded[2], mask)
    # The polygon rasteriser differs at edges only; the interior agrees.
    assert np.abs(decoded[0].astype(int) - mask).sum() <= 2 * (20 + 20)
    assert decoded[0][10:20, 15:25].all()
    assert rec.file_name == "/imgs/a.png"
    assert rec.keypoints.shape == (3, 17, 3) and rec.keypoints.dtype == np.float32
    np.testing.assert_array_equal(rec.annotation_ids, [11, 12, 13])


def _one(ann_extra, mode="train", **kw):
    base = {
        "id": 7,
        "image_id": 1,
        "category_id": 1,
        "iscrowd": 0,
        "keypoints": _kpts(5),
        "segmentation": [[1, 1, 20, 1, 20, 20, 1, 20]],
        "bbox": [1, 1, 19, 19],
    }
    base.update(ann_extra)
    return coco.records_from_coco(_dataset([base]), "/x", mode=mode, source="val.json", **kw)


@pytest.mark.parametrize(
    ("extra", "reason", "eval_kept"),
    [
        ({"iscrowd": 1}, "crowd", False),
        ({"keypoints": _kpts(0)}, "no_keypoints", False),
        ({"keypoints": None}, "no_keypoints", False),
        ({"keypoints": _kpts(2)}, "too_few_visible", True),
        ({"segmentation": []}, "no_mask", True),
        ({"keypoints": _kpts(5)[:48]}, "bad_keypoints", False),
        ({"keypoints": [*_kpts(4)[:-1], float("nan")]}, "non_finite", False),
        ({"keypoints": [*_kpts(5)[:2], float("inf"), *_kpts(5)[3:]]}, "non_finite", False),
        ({"keypoints": _kpts(5, v=3)}, "bad_visibility", False),
        ({"bbox": [1, float("nan"), 3, 3]}, "non_finite", False),
        ({"segmentation": {"size": [H, W]}}, "bad_mask", False),
        ({"category_id": 2}, "not_person", False),
        ({"image_id": 99}, "unknown_image", False),
    ],
)
def test_skip_reasons_are_counted(extra, reason, eval_kept):
    records, report = _one(extra)
    assert records == []
    assert report.skipped[reason] == 1
    assert report.skipped["image_without_people"] == 1
    assert report.people == 1 and report.people_kept == 0
    summary = report.summary()
    assert coco.SKIP_REASONS[reason] in summary
    _, eval_report = _one(extra, mode="eval")
    assert (eval_report.people_kept == 1) == eval_kept


def test_messages_name_file_and_record():
    _, report = _one({"keypoints": _kpts(5)[:48]})
    assert report.messages == [
        "annotation 7 in val.json has 48 keypoint values, expected 51 "
        "(17 COCO joints as x, y, v); fix or remove it"
    ]


def test_eval_person_without_mask_gets_empty_mask():
    records, report = _one({"segmentation": None}, mode="eval")
    assert report.people_kept == 1
    assert records[0].decode_masks().sum() == 0


def test_missing_image_file_counted(tmp_path):
    _, report = _one({}, check_files=True)
    assert report.skipped["missing_image_file"] == 1
    assert "/x/a.png" in report.messages[0]


def test_load_coco_persons_file_and_order(tmp_path):
    imgs = [{"id": i, "file_name": f"{i}.png", "height": H, "width": W} for i in (5, 2, 9)]
    anns = [
        {
            "id": 100 + i,
            "image_id": i,
            "category_id": 1,
            "iscrowd": 0,
            "keypoints": _kpts(4),
            "segmentation": [[1, 1, 9, 1, 9, 9]],
        }
        for i in (9, 5, 2)
    ]
    path = tmp_path / "persons.json"
    path.write_text(json.dumps(_dataset(anns, imgs)))
    records, report = coco.load_coco_persons(path, tmp_path)
    assert [r.image_id for r in records] == [5, 2, 9]
    assert report.images_kept == 3
    # bbox absent: taken from the mask.
    np.testing.assert_allclose(records[0].boxes[0], mask_utils.toBbox(records[0].masks[0]))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"bad.json is not valid JSON"):
        coco.load_coco_persons(tmp_path / "bad.json", tmp_path)


def test_max_iou_matches_direct_formula():
    boxes = np.array([[0, 0, 10, 10], [5, 0, 10, 10], [100, 100, 5, 5]], np.float32)
    inter = 5 * 10
    expected = inter / (100 + 100 - inter)
    np.testing.assert_allclose(coco.max_iou(boxes), [expected, expected, 0.0])


# ---- image decoding ----------------------------------------------------------------------


def _save(tmp_path, name, array, mode=None, **kw):
    path = tmp_path / name
    Image.fromarray(array, mode=mode).save(path, **kw) if mode else Image.fromarray(array).save(
        path, **kw
    )
    return path


def test_decode_rgb_gray_alpha_16bit(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (7, 9, 3), dtype=np.uint8)
    np.testing.assert_array_equal(images.read_image(_save(tmp_path, "c.png", rgb)), rgb)
    gray = rng.integers(0, 256, (7, 9), dtype=np.uint8)
    out = images.read_image(_save(tmp_path, "g.png", gray))
    assert out.shape == (7, 9, 3)
    np.testing.assert_array_equal(out, np.repeat(gray[:, :, None], 3, 2))
    rgba = rng.integers(0, 256, (7, 9, 4), dtype=np.uint8)
    np.testing.assert_array_equal(images.read_image(_save(tmp_path, "a.png", rgba)), rgba[..., :3])
    la = np.stack([gray, 255 - gray], -1)
    np.testing.assert_array_equal(
        images.read_image(_save(tmp_path, "la.png", la, mode="LA")),
        np.repeat(gray[:, :, None], 3, 2),
    )
    wide = rng.integers(0, 65536, (7, 9), dtype=np.uint16)
    path = tmp_path / "w.png"
    Image.fromarray(wide).save(path)
    out = images.read_image(path)
    np.testing.assert_array_equal(out[..., 0], (wide >> 8).astype(np.uint8))
    smooth = np.broadcast_to(np.arange(0, 160, 10, dtype=np.uint8)[None, :, None], (16, 16, 3))
    jpeg = images.decode_image(images.encode_jpeg(np.ascontiguousarray(smooth), quality=95))
    assert jpeg.shape == smooth.shape and np.abs(jpeg.astype(int) - smooth).mean() < 4


def test_missing_and_corrupt_files_raise_named_errors(tmp_path):
    with pytest.raises(images.ImageDecodeError, match=r"nope\.jpg: cannot read image file"):
        images.read_image(tmp_path / "nope.jpg")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    with pytest.raises(images.ImageDecodeError, match=r"bad\.jpg: cannot decode image"):
        images.read_image(bad)
    good = images.encode_png(np.zeros((20, 20, 3), np.uint8))
    truncated = tmp_path / "trunc.png"
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(images.ImageDecodeError, match=r"trunc\.png"):
        images.read_image(truncated)


def test_non_finite_polygon_is_bad_mask():
    _, report = _one({"segmentation": [[1, 1, math.inf, 1, 20, 20]]})
    assert report.skipped["bad_mask"] == 1


def test_replace_keypoints_with_detections(tmp_path):
    records, _ = _one({})
    (rec,) = records
    good = [10.0, 20.0, 0.9] * 17
    good[5] = 0.1  # joint 1 below the joint threshold
    results = [
        {"image_id": 1, "category_id": 1, "keypoints": good, "score": 0.8},
        {"image_id": 1, "category_id": 1, "keypoints": good, "score": 0.1},
        {"image_id": 1, "category_id": 1, "keypoints": good[:48], "score": 0.9},
        {"image_id": 1, "category_id": 1, "keypoints": [math.nan] * 51, "score": 0.9},
        {"image_id": 42, "category_id": 1, "keypoints": good, "score": 0.9},
    ]
    path = tmp_path / "kpts.json"
    path.write_text(json.dumps(results))
    (out,) = coco.replace_keypoints(records, path, min_person_score=0.5, min_joint_score=0.2)
    assert out.num_people == 1 and out.image_id == rec.image_id
    assert out.keypoints[0, 1].tolist() == [0, 0, 0]
    assert out.keypoints[0, 0].tolist() == [10, 20, 2]
    assert out.annotation_ids.tolist() == [1]
    assert out.decode_masks().sum() == 0
