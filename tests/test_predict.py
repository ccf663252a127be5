"""pose2seg-predict: keypoint files, matching, thresholds, and an end-to-end run."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from pose2seg_jax import predict
from pose2seg_jax.data import images


def _write(path, obj):
    Path(path).write_text(json.dumps(obj))
    return str(path)


def _kp(conf: float = 2.0, n_visible: int = 17) -> list:
    out = []
    for k in range(17):
        out += [10.0 + k, 20.0 + k, conf if k < n_visible else 0.0]
    return out


def test_flags_are_kept_and_thresholds_apply(tmp_path):
    flags = _kp(2.0)
    flags[2] = 1.0  # nose occluded
    entries = [
        {"image_id": 1, "keypoints": flags, "score": 0.9},
        {"image_id": 1, "keypoints": _kp(2.0), "score": 0.1},
        {"file_name": "a.jpg", "keypoints": _kp(0.0)},
    ]
    kept, dropped = predict.read_keypoint_results(
        _write(tmp_path / "k.json", entries), min_score=0.5
    )
    assert len(kept) == 1 and kept[0].score == 0.9
    assert kept[0].keypoints[0].tolist() == [10.0, 20.0, 1.0]  # a flag stays a flag
    assert kept[0].keypoints[1, 2] == 2.0
    assert dropped == {"low score": 1, "no joints": 1}


def test_a_coco_annotation_file_works_as_keypoints(tmp_path):
    coco = {
        "images": [{"id": 4, "file_name": "val/000004.jpg"}],
        "annotations": [
            {"id": 1, "image_id": 4, "keypoints": _kp(2.0, n_visible=10), "num_keypoints": 10},
            {"id": 2, "image_id": 4, "keypoints": [0] * 51, "num_keypoints": 0},
        ],
    }
    kept, dropped = predict.read_keypoint_results(_write(tmp_path / "gt.json", coco))
    assert [d.image_id for d in kept] == [4] and kept[0].score == 1.0
    assert kept[0].keypoints[:, 2].tolist() == [2.0] * 10 + [0.0] * 7
    assert dropped == {"no joints": 1}


def test_confidences_become_flags(tmp_path):
    conf = _kp(0.8)
    for k in (3, 4):
        conf[3 * k + 2] = 0.2
    conf[3 * 5 + 2] = 0.0
    kept, _ = predict.read_keypoint_results(
        _write(tmp_path / "k.json", [{"image_id": 7, "keypoints": conf, "score": 0.5}]),
        min_joint_score=0.3,
    )
    kp = kept[0].keypoints
    assert kp[:, 2].tolist() == [2, 2, 2, 0, 0, 0] + [2] * 11
    assert kp[3].tolist() == [0, 0, 0] and kp[5].tolist() == [0, 0, 0]
    assert kp[6, :2].tolist() == [16.0, 26.0]


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"image_id": 1, "keypoints": [1, 2, 3]}, "has 3 keypoint values, expected 51"),
        ({"keypoints": _kp()}, "has neither 'image_id' nor 'file_name'"),
        ({"image_id": 1}, "has no 'keypoints'"),
    ],
)
def test_malformed_entries_are_named(tmp_path, entry, message):
    path = _write(tmp_path / "k.json", [{"image_id": 1, "keypoints": _kp()}, entry])
    with pytest.raises(ValueError, match=f"entry 1 of k.json {message}".replace("(", r"\(")):
        predict.read_keypoint_results(path)


def test_images_in_natural_order_and_matching(tmp_path):
    for name in ("frame_10.png", "frame_2.png", "000000397133.jpg", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    paths = predict.list_images(tmp_path)
    assert [p.name for p in paths] == ["000000397133.jpg", "frame_2.png", "frame_10.png"]
    ann = _write(tmp_path / "ann.json", {"images": [{"id": 55, "file_name": "sub/frame_10.png"}]})
    ids = predict.image_ids(paths, ann)
    assert ids == [397133, None, 55]
    dets = [
        predict.Detection(0, 397133, None, np.zeros((17, 3)), 1.0),
        predict.Detection(1, None, "frames/frame_2.png", np.zeros((17, 3)), 1.0),
        predict.Detection(2, "frame_2", None, np.zeros((17, 3)), 1.0),
        predict.Detection(3, 55, None, np.zeros((17, 3)), 1.0),
        predict.Detection(4, 999, None, np.zeros((17, 3)), 1.0),
    ]
    per_image, unmatched = predict.match_detections(paths, ids, dets)
    assert [[d.index for d in p] for p in per_image] == [[0], [1, 2], [3]]
    assert [d.index for d in unmatched] == [4]
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no images"):
        predict.list_images(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="neither an image file nor a folder"):
        predict.list_images(tmp_path / "missing")


@pytest.mark.slow
def test_end_to_end_on_synthetic_data(tmp_path):
    from pose2seg_jax.inference import Predictor
    from tests.test_inference import make_data, make_workdir

    data = tmp_path / "data"
    annotations = make_data(data)
    workdir, _ = make_workdir(str(tmp_path), data)
    gt = json.loads(Path(annotations).read_text())
    frames = tmp_path / "frames"
    frames.mkdir()
    for image in gt["images"]:
        shutil.copy(data / image["file_name"], frames / Path(image["file_name"]).name)
    nobody = frames / "zz_nobody.png"
    Image.new("RGB", (70, 50), (30, 60, 90)).save(nobody)

    first, second = gt["images"][0], gt["images"][1]
    entries, expected = [], {}
    for ann in gt["annotations"]:
        if ann["image_id"] == first["id"]:
            # By image id (via --annotations), with a confidence per joint.
            kp = np.asarray(ann["keypoints"], np.float64).reshape(17, 3)
            conf = np.where(kp[:, 2] > 0, 0.9, 0.05)
            conf[0] = 0.2 if kp[0, 2] > 0 else conf[0]  # below --min-joint-score: dropped
            flat = np.concatenate([kp[:, :2], conf[:, None]], axis=1).reshape(-1).tolist()
            entries.append({"image_id": first["id"], "keypoints": flat, "score": 0.8})
            want = kp.copy()
            keep = conf >= 0.3
            want[~keep] = 0
            want[keep, 2] = 2
            expected.setdefault(first["id"], []).append(want)
        elif ann["image_id"] == second["id"]:
            # By file name, with a 0-1 confidence of 1.0 (in {0,1,2} alone; the file decides).
            kp = np.asarray(ann["keypoints"], np.float64).reshape(17, 3)
            flat = np.concatenate([kp[:, :2], (kp[:, 2:] > 0) * 1.0], axis=1).reshape(-1)
            entries.append(
                {"file_name": second["file_name"], "keypoints": flat.tolist(), "score": 0.6}
            )
            want = kp.copy()
            want[kp[:, 2] == 0] = 0
            want[kp[:, 2] > 0, 2] = 2
            expected.setdefault(second["id"], []).append(want)
    entries.append({"image_id": first["id"], "keypoints": _kp(0.9), "score": 0.01})  # low score
    entries.append({"image_id": 123456, "keypoints": _kp(0.9), "score": 0.9})  # no such image
    keypoints = _write(tmp_path / "kpts.json", entries)

    out = tmp_path / "out"
    command = [
        str(Path(sys.executable).parent / "pose2seg-predict"),
        "--checkpoint",
        workdir,
        "--images",
        str(frames),
        "--keypoints",
        keypoints,
        "--annotations",
        annotations,
        "--out",
        str(out),
        "--min-score",
        "0.1",
        "--min-joint-score",
        "0.3",
        "--figures",
        "--no-progress",
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "1 detections match no image" in done.stderr
    n_people = sum(len(v) for v in expected.values())
    assert f"{len(gt['images']) + 1} images, {n_people} people" in done.stdout

    results = json.loads((out / "segm_results.json").read_text())
    assert len(results) == n_people
    predictor = Predictor.from_checkpoint(workdir)
    for image in (first, second):
        mine = [r for r in results if r["image_id"] == image["id"]]
        assert len(mine) == len(expected[image["id"]])
        assert {r["score"] for r in mine} == {0.8 if image is first else 0.6}
        assert {r["file_name"] for r in mine} == {Path(image["file_name"]).name}
        decoded = np.stack([mask_utils.decode(r["segmentation"]) for r in mine]).astype(bool)
        picture = images.read_image(data / image["file_name"])
        want = predictor.predict(picture, np.stack(expected[image["id"]]))
        np.testing.assert_array_equal(decoded, want)
        assert decoded.any()

    overlays = sorted(p.name for p in (out / "overlays").iterdir())
    assert overlays == [
        *sorted([Path(i["file_name"]).stem + ".png" for i in gt["images"]]),
        "zz_nobody.png",
    ]
    with Image.open(out / "overlays" / "zz_nobody.png") as png:
        assert png.size == (70, 50)
    figures = sorted((out / "figures").iterdir())
    assert len(figures) == n_people
    with Image.open(figures[0]) as png:
        assert np.asarray(png.convert("RGB")).std() > 20


def test_cli_reports_errors(tmp_path):
    missing = predict.main(
        [
            "--checkpoint",
            str(tmp_path),
            "--images",
            str(tmp_path / "nope.jpg"),
            "--keypoints",
            _write(tmp_path / "k.json", []),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert missing == 1
