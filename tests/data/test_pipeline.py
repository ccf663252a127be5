"""The grain input pipeline: letterbox checked independently, subsets, resume, shards, eval."""

import dataclasses

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from scipy import ndimage

from pose2seg_jax.data import coco, pipeline, synthetic
from pose2seg_jax.data.images import encode_png

S = 64


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    synthetic.write_dataset(root, "train", 10, 11, size=48, progress=False)
    recs, _ = coco.load_coco_persons(root / "train.json", root)
    return recs


def _reference_letterbox(h, w, size):
    """Independent letterbox: scale s about the image centre to the frame centre."""
    s = min(size / w, size / h)
    return s, (size / 2 - s * w / 2), (size / 2 - s * h / 2)


def _reference_warp(array2d, h, w, size):
    s, tx, ty = _reference_letterbox(h, w, size)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    coords = [(yy - ty) / s, (xx - tx) / s]
    return ndimage.map_coordinates(
        array2d.astype(np.float64), coords, order=1, mode="grid-constant"
    )


@pytest.mark.parametrize(("h", "w"), [(30, 50), (50, 30), (37, 37), (100, 61)])
def test_warps_match_independent_bilinear(h, w):
    rng = np.random.default_rng(h * w)
    img = rng.integers(0, 256, (h, w, 3)).astype(np.uint8)
    m = pipeline.letterbox_matrix(h, w, S)
    fast = pipeline.warp_axis_aligned(img, m, (S, S), (0, 1))
    general = pipeline.warp_affine(img, m, (S, S))
    ref = np.stack([_reference_warp(img[..., c], h, w, S) for c in range(3)], -1)
    np.testing.assert_allclose(fast, ref, atol=1e-3)
    np.testing.assert_allclose(general, ref, atol=1e-3)


@pytest.mark.parametrize(("h", "w", "size"), [(480, 640, 512), (61, 100, 64), (90, 40, 33)])
def test_letterbox_image_and_windowed_masks_match_general_warp(h, w, size):
    rng = np.random.default_rng(size)
    img = rng.integers(0, 256, (h, w, 3)).astype(np.uint8)
    m = pipeline.letterbox_matrix(h, w, size)
    general = pipeline.warp_affine(img, m, (size, size))
    np.testing.assert_array_equal(
        pipeline.letterbox_image(img, m, size), np.clip(np.rint(general), 0, 255).astype(np.uint8)
    )
    yy, xx = np.mgrid[0:h, 0:w]
    masks = np.stack(
        [
            ((yy - h * 0.4) ** 2 + (xx - w * 0.5) ** 2 < (min(h, w) * 0.3) ** 2),
            (yy < h // 3) & (xx > w // 2),
            np.zeros((h, w), bool),
            np.ones((h, w), bool),
        ]
    ).astype(np.uint8)
    rles = mask_utils.encode(np.asfortranarray(np.moveaxis(masks, 0, 2)))
    windowed = pipeline.warp_masks(rles, h, w, m, size)
    full = np.stack([pipeline.warp_affine(mk, m, (size, size)) for mk in masks]) >= 0.5
    np.testing.assert_array_equal(windowed, full)


def test_general_warp_with_rotation_matches_scipy():
    rng = np.random.default_rng(0)
    img = rng.random((20, 24)).astype(np.float32)
    a = 0.4
    m = np.array([[np.cos(a), -np.sin(a), 5.0], [np.sin(a), np.cos(a), -3.0], [0, 0, 1]])
    inv = np.linalg.inv(m)
    yy, xx = np.mgrid[0:30, 0:28].astype(np.float64)
    sx = inv[0, 0] * xx + inv[0, 1] * yy + inv[0, 2]
    sy = inv[1, 0] * xx + inv[1, 1] * yy + inv[1, 2]
    ref = ndimage.map_coordinates(img.astype(np.float64), [sy, sx], order=1, mode="grid-constant")
    np.testing.assert_allclose(pipeline.warp_affine(img, m, (30, 28)), ref, atol=1e-5)


def test_prepare_example_against_independent_letterbox(records):
    rec = records[0]
    row = pipeline.prepare_example(rec, None, input_size=S, max_people=6)
    n = rec.num_people
    s, tx, ty = _reference_letterbox(rec.height, rec.width, S)
    kp = rec.keypoints
    expected = np.where(
        kp[..., 2:3] > 0,
        np.concatenate([kp[..., :1] * s + tx, kp[..., 1:2] * s + ty, kp[..., 2:]], -1),
        0.0,
    )
    np.testing.assert_allclose(row["keypoints"][:n], expected, atol=1e-4)
    assert not row["keypoints"][n:].any() and row["valid"].tolist() == [True] * n + [False] * (
        6 - n
    )
    np.testing.assert_array_equal(row["annotation_id"][:n], rec.annotation_ids)
    assert (row["annotation_id"][n:] == -1).all()
    masks = rec.decode_masks()
    for i in range(n):
        ref = _reference_warp(masks[i], rec.height, rec.width, S) >= 0.5
        assert np.mean(ref != row["masks"][i].astype(bool)) < 1e-3
    from pose2seg_jax.data.images import read_image

    image = read_image(rec.file_name)
    ref_img = np.stack(
        [_reference_warp(image[..., c], rec.height, rec.width, S) for c in range(3)], -1
    )
    assert np.abs(row["image"].astype(float) - ref_img).max() <= 0.51
    np.testing.assert_allclose(
        row["letterbox"], [[s, 0, tx], [0, s, ty], [0, 0, 1]], rtol=1e-6, atol=1e-5
    )
    assert row["orig_size"].tolist() == [rec.height, rec.width]
    assert row["image"].dtype == np.uint8 and row["masks"].dtype == np.uint8


def test_bad_image_becomes_invalid_row(records, tmp_path, caplog):
    bad = dataclasses.replace(records[0], file_name=str(tmp_path / "missing.jpg"))
    row = pipeline.prepare_example(bad, None, input_size=S, max_people=4)
    assert not row["valid"].any() and not row["image"].any()
    assert "missing.jpg" in caplog.text
    wrong_size = tmp_path / "small.png"
    wrong_size.write_bytes(encode_png(np.zeros((5, 5, 3), np.uint8)))
    row = pipeline.prepare_example(
        dataclasses.replace(records[0], file_name=str(wrong_size)), None, input_size=S, max_people=4
    )
    assert not row["valid"].any() and "decodes to 5x5" in caplog.text


def _take(it, n):
    return [next(it) for _ in range(n)]


def _same(a, b):
    for x, y in zip(a, b):
        for key in pipeline.BATCH_KEYS:
            np.testing.assert_array_equal(x[key], y[key])


def test_train_batches_subset_and_resume(records):
    kw = dict(batch_size=3, input_size=S, max_people=2, seed=4, shard_index=0, shard_count=1)
    it = iter(pipeline.train_dataset(records, **kw))
    first = _take(it, 2)
    state = it.get_state()
    expected = _take(it, 3)
    resumed = iter(pipeline.train_dataset(records, **kw))
    resumed.set_state(state)
    _same(_take(resumed, 3), expected)
    _same(_take(iter(pipeline.train_dataset(records, **kw)), 2), first)
    by_id = {r.image_id: r for r in records}
    for batch in first + expected:
        assert batch["image"].shape == (3, S, S, 3)
        assert batch["masks"].shape == (3, 2, S, S)
        for b in range(3):
            rec = by_id[int(batch["image_id"][b])]
            kept = batch["annotation_id"][b][batch["valid"][b]]
            assert len(kept) == min(2, rec.num_people)
            assert set(kept.tolist()) <= set(rec.annotation_ids.tolist())
            for p, ann in enumerate(kept):
                j = int(np.flatnonzero(rec.annotation_ids == ann)[0])
                m = batch["letterbox"][b]
                vis = rec.keypoints[j, :, 2] > 0
                np.testing.assert_allclose(
                    batch["keypoints"][b, p, vis, 0],
                    rec.keypoints[j, vis, 0] * m[0, 0] + m[0, 2],
                    atol=1e-3,
                )
    other = _take(iter(pipeline.train_dataset(records, **{**kw, "seed": 5})), 2)
    assert [b["image_id"].tolist() for b in other] != [b["image_id"].tolist() for b in first]


def test_epochs_and_shards_disjoint(records):
    seen = []
    for shard in range(2):
        ds = pipeline.train_dataset(
            records, batch_size=1, input_size=16, max_people=5, seed=0, num_epochs=1,
            shard_index=shard, shard_count=2, with_masks=False,
        )  # fmt: skip
        seen.append([int(b["image_id"][0]) for b in ds])
    assert set(seen[0]).isdisjoint(seen[1])
    assert sorted(seen[0] + seen[1]) == sorted(r.image_id for r in records)


def test_eval_every_image_once_with_passes(records):
    counts = [r.num_people for r in records]
    for shard_count in (1, 3):
        rows, batches = [], []
        for shard in range(shard_count):
            ds = pipeline.eval_dataset(
                records, batch_size=4, input_size=16, max_people=2, shard_index=shard,
                shard_count=shard_count, with_masks=False,
            )  # fmt: skip
            out = list(ds)
            batches.append(len(out))
            for b in out:
                assert b["image"].shape[0] == 4
                for i in range(4):
                    rows.append(
                        (int(b["image_id"][i]), b["annotation_id"][i][b["valid"][i]].tolist())
                    )
        assert len(set(batches)) == 1
        anns = [a for image_id, ids in rows if image_id >= 0 for a in ids]
        expected = sorted(a for r in records for a in r.annotation_ids.tolist())
        assert sorted(anns) == expected
        real = [image_id for image_id, _ in rows if image_id >= 0]
        assert sorted(set(real)) == sorted(r.image_id for r in records)
        assert len(real) == sum(-(-n // 2) for n in counts)
    (full,) = list(pipeline.eval_dataset(records, batch_size=len(records), input_size=16,
                                          shard_index=0, shard_count=1, with_masks=False))  # fmt: skip
    assert full["valid"].shape[1] == max(counts)
    assert full["image_id"].tolist() == [r.image_id for r in records]


@pytest.mark.slow
def test_worker_processes_same_batches_and_resume(records):
    kw = dict(batch_size=2, input_size=S, max_people=3, seed=1, shard_index=0, shard_count=1)
    local = _take(iter(pipeline.train_dataset(records, **kw)), 4)
    it = iter(pipeline.train_dataset(records, num_workers=2, **kw))
    _same(_take(it, 2), local[:2])
    state = it.get_state()
    resumed = iter(pipeline.train_dataset(records, num_workers=2, **kw))
    resumed.set_state(state)
    _same(_take(resumed, 2), local[2:])


def test_eval_batches_paste_back_keys(records):
    rows = []
    for b in pipeline.eval_batches(
        records, batch_size=3, input_size=16, max_people=2, with_masks=False
    ):
        for i in range(3):
            rows.append(
                (int(b["record_index"][i]), b["person_index"][i].tolist(), bool(b["last_pass"][i]),
                 b["annotation_id"][i].tolist(), b["valid"][i].tolist())
            )  # fmt: skip
    seen = {}
    for index, people, last, anns, valid in rows:
        if index < 0:
            assert not any(valid) and people == [-1, -1] and not last
            continue
        rec = records[index]
        kept = [p for p in people if p >= 0]
        assert [v for v in valid] == [p >= 0 for p in people]
        assert [a for a, v in zip(anns, valid) if v] == rec.annotation_ids[kept].tolist()
        seen.setdefault(index, []).extend(kept)
        assert last == (max(kept) == rec.num_people - 1)
    assert {i: sorted(p) for i, p in seen.items()} == {
        i: list(range(r.num_people)) for i, r in enumerate(records)
    }


def test_train_iterator_state_roundtrip(records):
    it = pipeline.train_iterator(
        records, batch_size=2, input_size=16, max_people=2, seed=0, shard_index=0, shard_count=1
    )
    next(it)
    state = it.get_state()
    a = next(it)
    it.set_state(state)
    np.testing.assert_array_equal(next(it)["image_id"], a["image_id"])
