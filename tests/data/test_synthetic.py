"""Synthetic occluded people: determinism, label consistency with the pixels, the COCO file."""

import json

import numpy as np

from pose2seg_jax.data import coco, synthetic


def test_scene_labels_agree_with_pixels():
    for index in range(12):
        scene = synthetic.generate_scene(synthetic.scene_seed(5, index), 160, 200)
        n = len(scene.keypoints)
        assert 2 <= n <= 5
        assert scene.image.shape == (160, 200, 3) and scene.image.dtype == np.uint8
        assert scene.masks.shape == (n, 160, 200)
        # Visible regions never overlap and each is non-empty.
        assert scene.masks.sum(axis=0).max() <= 1
        assert np.all(scene.masks.reshape(n, -1).sum(axis=1) > 0)
        for i in range(n):
            kp = scene.keypoints[i]
            for x, y, v in kp:
                if v == 0:
                    assert x == 0 and y == 0
                    continue
                xi, yi = round(float(x)), round(float(y))
                assert 0 <= xi < 200 and 0 <= yi < 160
                owners = np.flatnonzero(scene.masks[:, yi, xi])
                if v == 2:
                    # Visible joint: nobody in front covers it.
                    assert owners.size == 0 or owners[0] <= i
                else:
                    # Occluded joint: a person drawn later (in front) covers it.
                    assert owners.size == 1 and owners[0] > i
            x0, y0, w, h = scene.boxes[i]
            ys, xs = np.nonzero(scene.masks[i])
            assert x0 <= xs.min() and xs.max() < x0 + w and y0 <= ys.min() and ys.max() < y0 + h


def test_occlusion_flags_occur():
    flags = np.concatenate(
        [
            synthetic.generate_scene(synthetic.scene_seed(0, i), 160, 160).keypoints[..., 2].ravel()
            for i in range(10)
        ]
    )
    assert (flags == 1).mean() > 0.02 and (flags == 2).mean() > 0.5


def test_write_dataset_deterministic_and_loadable(tmp_path):
    a = synthetic.write_dataset(tmp_path / "a", "train", 6, 3, size=128, progress=False)
    synthetic.write_dataset(tmp_path / "b", "train", 6, 3, size=128, progress=False)
    synthetic.write_dataset(tmp_path / "c", "train", 6, 4, size=128, progress=False)
    assert (tmp_path / "a/train.json").read_bytes() == (tmp_path / "b/train.json").read_bytes()
    assert (tmp_path / "a/train.json").read_bytes() != (tmp_path / "c/train.json").read_bytes()
    for f in sorted((tmp_path / "a/train").iterdir()):
        assert f.read_bytes() == (tmp_path / "b/train" / f.name).read_bytes()
    data = json.loads((tmp_path / "a/train.json").read_text())
    assert data["categories"][0]["keypoints"][0] == "nose"
    assert len(data["categories"][0]["skeleton"]) == 19
    assert a.images == 6 and a.people == len(data["annotations"])
    ann = data["annotations"][0]
    assert isinstance(ann["segmentation"]["counts"], str) and ann["iscrowd"] == 0
    assert len(ann["keypoints"]) == 51
    records, report = coco.load_coco_persons(
        tmp_path / "a/train.json", tmp_path / "a", mode="eval", check_files=True
    )
    assert report.people_kept == a.people and not report.skipped
    masks = records[0].decode_masks()
    assert masks.shape[1:] == (128, records[0].width)
    np.testing.assert_allclose(
        [float(x["area"]) for x in data["annotations"][: len(masks)]],
        masks.reshape(len(masks), -1).sum(axis=1),
    )


def test_cli_and_default_seeds(tmp_path, capsys):
    assert synthetic.main([str(tmp_path), "--split", "val", "--images", "3", "--size", "96"]) == 0
    assert "wrote 3 images" in capsys.readouterr().out
    synthetic.main([str(tmp_path), "--split", "train", "--images", "3", "--size", "96"])
    val = json.loads((tmp_path / "val.json").read_text())
    train = json.loads((tmp_path / "train.json").read_text())
    assert val["annotations"] != train["annotations"]
    assert "seed=1" in val["info"]["description"] and "seed=0" in train["info"]["description"]


def test_overlap_is_heavy():
    ious = []
    for i in range(30):
        scene = synthetic.generate_scene(synthetic.scene_seed(9, i), 200, 200)
        ious.extend(coco.max_iou(scene.boxes).tolist())
    assert np.mean(ious) > 0.4
