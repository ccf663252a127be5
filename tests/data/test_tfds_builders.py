"""TFDS builders end to end in temporary directories, without TensorFlow."""

import json
import shutil

import numpy as np
import pytest
import tensorflow_datasets as tfds
from pycocotools import mask as mask_utils

from pose2seg_jax.data import pipeline, synthetic, tfds_builders


def _prepare(builder_cls, data_dir, manual_dir=None, **kw):
    builder = builder_cls(data_dir=str(data_dir), file_format="array_record", **kw)
    config = tfds.download.DownloadConfig(manual_dir=str(manual_dir)) if manual_dir else None
    builder.download_and_prepare(download_config=config)
    return builder


def test_synthetic_people_end_to_end(tmp_path):
    _prepare(tfds_builders.SyntheticPeople, tmp_path, config="tiny")
    source = tfds.data_source("synthetic_people/tiny", data_dir=str(tmp_path), split="train")
    assert len(source) == 8
    by_id = {int(source[i]["image_id"]): source[i] for i in range(len(source))}
    first = by_id[1]
    scene = synthetic.scene_for_index(0, 0, 96)
    np.testing.assert_allclose(first["keypoints"], scene.keypoints)
    rle = {"size": [96, scene.image.shape[1]], "counts": first["mask_rle"][0]}
    np.testing.assert_array_equal(mask_utils.decode(rle), scene.masks[0])
    assert first["height"] == 96 and first["width"] == scene.image.shape[1]
    ds = pipeline.train_dataset(
        source, batch_size=2, input_size=32, max_people=5, seed=0, shard_index=0, shard_count=1
    )
    batch = next(iter(ds))
    assert batch["image"].shape == (2, 32, 32, 3) and batch["valid"].any()
    val = tfds.data_source("synthetic_people/tiny", data_dir=str(tmp_path), split="val")
    assert len(val) == 4


def test_ochuman_from_coco_format_files(tmp_path):
    manual = tmp_path / "manual"
    for split in ("val", "test"):
        synthetic.write_dataset(manual / "images", split, 3, 7, size=64, progress=False)
        shutil.move(
            manual / "images" / f"{split}.json",
            manual / f"ochuman_coco_format_{split}_range_0.00_1.00.json",
        )
    (manual / "images" / "test" / "000002.jpg").unlink()
    _prepare(tfds_builders.OCHuman, tmp_path / "data", manual)
    val = tfds.data_source("ochuman", data_dir=str(tmp_path / "data"), split="val")
    test = tfds.data_source("ochuman", data_dir=str(tmp_path / "data"), split="test")
    assert len(val) == 3 and len(test) == 2
    assert bytes(val[0]["image"])[:2] == b"\xff\xd8"


def test_coco_persons_from_manual_dir(tmp_path):
    manual = tmp_path / "manual"
    for split in ("train", "val"):
        synthetic.write_dataset(tmp_path / "gen", split, 2, 3, size=64, progress=False)
        shutil.copytree(tmp_path / "gen" / split, manual / f"{split}2017")
        data = json.loads((tmp_path / "gen" / f"{split}.json").read_text())
        for im in data["images"]:
            im["file_name"] = im["file_name"].split("/")[-1]
        data["annotations"][0]["keypoints"] = data["annotations"][0]["keypoints"][:48]
        (manual / f"person_keypoints_{split}2017_pose2seg.json").write_text(json.dumps(data))
    _prepare(tfds_builders.CocoPersons, tmp_path / "data", manual)
    train = tfds.data_source("coco_persons", data_dir=str(tmp_path / "data"), split="train")
    assert len(train) == 2
    people = sum(len(train[i]["annotation_id"]) for i in range(2))
    assert people == len(data["annotations"]) - 1


def test_ochuman_native_conversion_and_split():
    names = ["right_shoulder", "left_shoulder", "head", "nose", "left_ankle"]
    square = [10, 10, 50, 10, 50, 50, 10, 50]
    hole = [20, 20, 30, 20, 30, 30, 20, 30]
    native = {
        "keypoint_names": names,
        "images": [
            {
                "image_id": 5, "file_name": "a.jpg", "height": 60, "width": 60,
                "annotations": [
                    {"bbox": [10, 10, 50, 50], "keypoints": [[12, 13, 1], [40, 13, 3],
                     [30, 5, 1], [30, 8, 2], [20, 48, 0]], "segms": {"outer": [square],
                     "inner": [hole]}, "max_iou": 0.7},
                    {"bbox": [0, 0, 5, 5], "keypoints": None, "segms": None},
                ],
            },
            {"image_id": 6, "file_name": "b.jpg", "height": 60, "width": 60,
             "annotations": [{"bbox": [0, 0, 5, 5], "keypoints": None, "segms": None}]},
        ],
    }  # fmt: skip
    data = tfds_builders.ochuman_native_to_coco(native)
    assert [im["id"] for im in data["images"]] == [1]
    (ann,) = data["annotations"]
    kp = np.asarray(ann["keypoints"]).reshape(17, 3)
    np.testing.assert_array_equal(kp[6], [12, 13, 2])  # right shoulder, visible
    np.testing.assert_array_equal(kp[5], [40, 13, 1])  # left shoulder, occluded by others
    np.testing.assert_array_equal(kp[0], [30, 8, 2])  # nose
    assert kp[15, 2] == 0 and kp[1:5, 2].sum() == 0
    assert ann["bbox"] == [10, 10, 40, 40] and ann["area"] == 1600
    mask = mask_utils.decode(ann["segmentation"])
    assert mask[15, 15] == 1 and mask[25, 25] == 0
    big = {
        "images": [{"id": i} for i in range(1, 4732)],
        "annotations": [{"id": i, "image_id": i} for i in range(1, 4732)],
    }
    val, test = tfds_builders.ochuman_split(big, "val"), tfds_builders.ochuman_split(big, "test")
    assert len(val["images"]) == 2500 and val["images"][0]["id"] == 1
    assert len(test["images"]) == 2231 and test["images"][0]["id"] == 2501
    assert len(test["annotations"]) == 2231
    with pytest.raises(ValueError, match="'train'"):
        tfds_builders.ochuman_split(big, "train")
