"""Template files, loading (threshold + mirror) and clustering (REFERENCE.md sections 3 and 12)."""

import json

import numpy as np
import pytest

from pose2seg_jax.ops.keypoints import FLIP_PAIRS, KEYPOINT_NAMES
from pose2seg_jax.ops.templates import (
    DEFAULT_TEMPLATE_FILE,
    cluster_templates,
    load_templates,
    main,
    normalise_poses,
    read_template_file,
    templates_from_coco,
    write_template_file,
)

from .pose_samples import make_coco

# Left/right partner of every joint, spelled out independently of keypoints.FLIP_INDEX.
PARTNER = {0: 0, 1: 2, 2: 1, 3: 4, 4: 3, 5: 6, 6: 5, 7: 8, 8: 7}
PARTNER.update({9: 10, 10: 9, 11: 12, 12: 11, 13: 14, 14: 13, 15: 16, 16: 15})


def _file(tmp_path, **overrides) -> str:
    data = {
        "names": list(KEYPOINT_NAMES),
        "flip_map": [list(p) for p in FLIP_PAIRS],
        "connections": [[0, 1]],
        "vis_threshold": 0.4,
        "minpoints": 8,
        "templates": [[0.5] * 51, [0.25] * 51],
    }
    data.update(overrides)
    path = tmp_path / "templates.json"
    path.write_text(json.dumps(data))
    return str(path)


def test_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    templates = rng.uniform(0, 2, (4, 17, 3))
    path = tmp_path / "t.json"
    write_template_file(path, templates, vis_threshold=0.3, minpoints=5)
    data = read_template_file(path)
    np.testing.assert_array_equal(data["templates"], templates.reshape(4, 51))
    assert data["vis_threshold"] == 0.3 and data["minpoints"] == 5
    assert data["names"] == list(KEYPOINT_NAMES)
    assert data["flip_map"] == [list(p) for p in FLIP_PAIRS]


def test_threshold_and_mirror_on_hand_made_file(tmp_path):
    templates = np.zeros((2, 17, 3))
    for i in range(2):
        for k in range(17):
            templates[i, k] = (0.01 * k + 0.3 * i, 0.02 * k + 0.1, [0.39, 0.4, 1.5, 0.0][k % 4])
    path = _file(tmp_path, templates=templates.reshape(2, 51).tolist())
    out = load_templates(path)
    assert out.shape == (4, 17, 3) and out.dtype == np.float32
    for i in range(2):
        for k in range(17):
            want = templates[i, k] if templates[i, k, 2] >= 0.4 else np.zeros(3)
            np.testing.assert_allclose(out[i, k], want, rtol=1e-6)
            # The mirror swaps labels only: joint k of mirror i is joint PARTNER[k] of original i.
            np.testing.assert_array_equal(out[2 + i, k], out[i, PARTNER[k]])
    assert out[0, 0, 2] == 0.0 and out[0, 1, 2] == pytest.approx(0.4)
    # The file's threshold can be overridden.
    looser = load_templates(path, vis_threshold=0.1)
    assert looser[0, 0, 2] == pytest.approx(0.39)


def test_default_file_loads():
    out = load_templates()
    data = read_template_file(DEFAULT_TEMPLATE_FILE)
    k = len(data["templates"])
    assert out.shape == (2 * k, 17, 3)
    visible = out[..., 2] > 0
    assert visible.sum(axis=1).min() >= 8
    assert np.all((out[..., :2][visible] > 0) & (out[..., :2][visible] < 1))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"templates": None}, "'templates' must be a non-empty list"),
        ({"templates": [[0.5] * 48]}, "template 0 in .* has 48 values, expected 51"),
        ({"templates": [[0.5] * 51, [0.5] * 50 + [float("nan")]]}, "template 1 in .*non-finite"),
        ({"templates": [[0.5] * 50 + ["x"]]}, "template 0 in .*non-numeric"),
        ({"vis_threshold": "high"}, "'vis_threshold' must be a finite number"),
        ({"minpoints": 8.5}, "'minpoints' must be an integer"),
        ({"names": ["nose"]}, "'names' must list the 17"),
    ],
)
def test_malformed_files_name_the_problem(tmp_path, overrides, message):
    path = _file(tmp_path, **overrides)
    with pytest.raises(ValueError, match=message) as info:
        read_template_file(path)
    assert "templates.json" in str(info.value)


def test_missing_key_and_bad_json(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"templates": [[0.5] * 51]}))
    with pytest.raises(ValueError, match=r"bad.json lacks the key\(s\) \['names'"):
        read_template_file(path)
    path.write_text("{not json")
    with pytest.raises(ValueError, match=r"bad\.json is not valid JSON"):
        read_template_file(path)
    with pytest.raises(FileNotFoundError, match=r"nowhere\.json"):
        read_template_file(tmp_path / "nowhere.json")


def test_normalise_poses_matches_per_person_reference():
    rng = np.random.default_rng(1)
    n = 40
    keypoints = np.zeros((n, 17, 3))
    keypoints[..., :2] = rng.uniform(0, 300, (n, 17, 2))
    keypoints[..., 2] = rng.choice([0, 1, 2], (n, 17), p=[0.3, 0.2, 0.5])
    boxes = np.column_stack([rng.uniform(0, 50, (n, 2)), rng.uniform(10, 200, (n, 2))])
    boxes[3, 2] = 0.0  # empty box: dropped
    data, kept = normalise_poses(keypoints, boxes, minpoints=12)

    want, want_kept = [], []
    for kp, (x0, y0, w, h) in zip(keypoints, boxes):
        visible = [k for k in range(17) if kp[k, 2] > 0]
        ok = len(visible) >= 12 and w > 0 and h > 0
        want_kept.append(ok)
        if not ok:
            continue
        side = max(w, h)
        pose = np.array(
            [
                ((x - x0 - w / 2) / side + 0.5, (y - y0 - h / 2) / side + 0.5, v)
                if v > 0
                else (0.5, 0.5, 0.0)
                for x, y, v in kp
            ]
        )
        want.append(pose)
    mirrors = [
        np.array([(1 - p[PARTNER[k], 0], *p[PARTNER[k], 1:]) for k in range(17)]) for p in want
    ]
    np.testing.assert_array_equal(kept, want_kept)
    assert 5 < sum(want_kept) < n - 5
    np.testing.assert_allclose(data, np.array(want + mirrors).reshape(-1, 51), atol=1e-12)


def _symmetric_centres() -> np.ndarray:
    """(3, 17, 3) unit-square poses equal to their own mirror, far apart from each other."""
    centres = np.zeros((3, 17, 3))
    rng = np.random.default_rng(2)
    for c in range(3):
        for k in range(17):
            p = PARTNER[k]
            if p == k:
                centres[c, k] = (0.5, rng.uniform(0.1, 0.9), 2.0)
            elif p > k:
                x, y = rng.uniform(0.05, 0.45), rng.uniform(0.1, 0.9)
                centres[c, k] = (x, y, 2.0)
                centres[c, p] = (1 - x, y, 2.0)
    return centres


def test_kmeans_recovers_cluster_centres():
    rng = np.random.default_rng(3)
    centres = _symmetric_centres()
    per_cluster = 60
    keypoints, boxes = [], []
    for c in range(3):
        for _ in range(per_cluster):
            unit = centres[c, :, :2] + rng.normal(0, 0.01, (17, 2))
            side = rng.uniform(50, 300)
            corner = rng.uniform(0, 200, 2)
            # A box of that longer side, shorter on x: the pose is centred in it.
            w, h = side * rng.uniform(0.5, 1.0), side
            xy = (unit - 0.5) * side + corner + (w / 2, h / 2)
            keypoints.append(np.column_stack([xy, np.full(17, 2.0)]))
            boxes.append((*corner, w, h))
    keypoints, boxes = np.array(keypoints), np.array(boxes)
    data, _ = normalise_poses(keypoints, boxes)

    runs = []
    for seed in range(6):
        result = cluster_templates(keypoints, boxes, k=3, seed=seed)
        assert result.shape == (3, 51)
        np.testing.assert_array_equal(result, cluster_templates(keypoints, boxes, k=3, seed=seed))
        # Lloyd's fixed point: every centre is the mean of the points nearest to it.
        labels = np.argmin(((data[:, None] - result[None]) ** 2).sum(-1), axis=1)
        for j in range(3):
            if np.any(labels == j):
                np.testing.assert_allclose(result[j], data[labels == j].mean(0), atol=1e-9)
        runs.append((((data - result[labels]) ** 2).sum(), result))
    best = min(runs, key=lambda r: r[0])[1].reshape(3, 17, 3)
    for c in range(3):
        error = np.abs(best - centres[c]).max(axis=(1, 2)).min()
        assert error < 0.01, (c, error)


def test_templates_from_coco_and_cli(tmp_path, capsys):
    coco = make_coco(150, seed=4, extras=True)
    coco["annotations"][5]["keypoints"] = [
        0
    ] * 51  # labelled joints none: not a person with keypoints
    ann = tmp_path / "people.json"
    ann.write_text(json.dumps(coco))
    out = tmp_path / "out.json"

    people = [
        a
        for a in coco["annotations"]
        if not a["iscrowd"] and any(v > 0 for v in a["keypoints"][2::3])
    ]
    used = [a for a in people if sum(v > 0 for v in a["keypoints"][2::3]) >= 10]
    main([str(ann), str(out), "--k", "2", "--seed", "1", "--minpoints", "10"])
    printed = capsys.readouterr().out
    assert f"{len(people)} people with keypoints" in printed
    assert f"{len(used)} used" in printed and f"{len(people) - len(used)} dropped" in printed
    assert 0 < len(people) - len(used) < len(people)

    data = read_template_file(out)
    assert data["templates"].shape == (2, 51) and data["minpoints"] == 10
    assert load_templates(out).shape == (4, 17, 3)
    keypoints = np.array([a["keypoints"] for a in people], float).reshape(-1, 17, 3)
    boxes = np.array([a["bbox"] for a in people], float)
    direct = cluster_templates(keypoints, boxes, k=2, seed=1, minpoints=10)
    np.testing.assert_allclose(data["templates"], direct, rtol=1e-12)
    _, counts = templates_from_coco(ann, k=2, seed=1, minpoints=10)
    assert counts == {"people": len(people), "used": len(used), "dropped": len(people) - len(used)}


def test_bad_annotation_is_named(tmp_path):
    coco = make_coco(6, seed=5)
    coco["annotations"][2]["keypoints"] = coco["annotations"][2]["keypoints"][:48]
    ann = tmp_path / "broken.json"
    ann.write_text(json.dumps(coco))
    with pytest.raises(ValueError, match=r"annotation 3 in .*broken\.json has 48 keypoint values"):
        templates_from_coco(ann, k=2)


def test_too_few_poses_for_k():
    keypoints = np.zeros((1, 17, 3))
    keypoints[0, :, 2] = 2.0
    with pytest.raises(ValueError, match=r"only 2 normalised poses .* for k=3"):
        cluster_templates(keypoints, np.array([[0.0, 0.0, 10.0, 10.0]]), k=3)
