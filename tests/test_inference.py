"""Predictor: agreement with the evaluation path, compilation reuse, empty images, errors."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import tiny
from pose2seg_jax import inference
from pose2seg_jax.data import coco, images, synthetic
from pose2seg_jax.ops import templates as templates_lib
from pose2seg_jax.ops import warps
from pose2seg_jax.training import checkpoint, schedule
from pose2seg_jax.training import state as state_lib

KERNEL_GAIN = 0.3
PERSON_BIAS = 2.7


def make_data(root) -> str:
    """A few small synthetic images with people (``root/val.json``, ``root/val/``)."""
    synthetic.write_dataset(root, "val", 4, seed=3, size=96, progress=False)
    return os.path.join(root, "val.json")


def make_workdir(root, data_root) -> tuple[str, object]:
    """A training workdir (config.json + an orbax training checkpoint) of the tiny model.

    The weights are the random initialisation with a person-bias on the last layer, so masks
    are neither empty nor full and comparisons between paths can fail.
    """
    config = tiny.get_config()
    config.data.val_annotations = os.path.join(data_root, "val.json")
    config.data.val_images = str(data_root)
    workdir = os.path.join(root, "run")
    os.makedirs(workdir)
    with open(os.path.join(workdir, "config.json"), "w") as f:
        f.write(config.to_json_best_effort(indent=2))
    model = state_lib.create_model(config)
    templates = jnp.asarray(templates_lib.load_templates())
    state = state_lib.create_train_state(
        config, model, schedule.create_schedule(config, 8), templates, jax.random.key(0)
    )
    params = jax.tree_util.tree_map(lambda x: x, state.params)
    head = dict(params["segnet"]["pred_small"])
    head["kernel"] = head["kernel"] * KERNEL_GAIN
    head["bias"] = head["bias"] + jnp.array([0.0, PERSON_BIAS])
    params["segnet"] = {**params["segnet"], "pred_small": head}
    state = state.replace(params=params)
    ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), asynchronous=False)
    ckpt.save(3, state)
    ckpt.close()
    return workdir, config


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("inference")
    data = root / "data"
    make_data(data)
    workdir, config = make_workdir(str(root), data)
    return {"data": data, "workdir": workdir, "config": config}


@pytest.fixture(scope="module")
def predictor(setup):
    return inference.Predictor.from_checkpoint(setup["workdir"])


def _records(setup):
    records, _ = coco.load_coco_persons(
        setup["config"].data.val_annotations, setup["data"], mode="eval", keep_empty_images=True
    )
    return records


def test_package_exports_predictor_lazily():
    code = (
        "import sys, pose2seg_jax; assert 'jax' not in sys.modules, 'jax imported eagerly'; "
        "from pose2seg_jax import Predictor; assert 'jax' in sys.modules; print(Predictor.__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "Predictor"


def test_loads_sizes_from_workdir_config(predictor, setup):
    assert predictor.input_size == setup["config"].data.input_size == 64
    assert predictor.model.backbone_width == 8
    assert predictor.model.align_size == 16
    assert predictor.templates.shape[1:] == (17, 3)


@pytest.mark.slow
def test_masks_match_evaluation_path(predictor, setup):
    from pose2seg_jax.evaluation import evaluate
    from pose2seg_jax.training import parallel

    config = setup["config"]
    records = _records(setup)
    mesh = parallel.data_mesh()
    variables = parallel.replicate(mesh, evaluate.load_variables(setup["workdir"]))
    model = state_lib.create_model(config)
    templates = jnp.asarray(templates_lib.load_templates())
    compared = 0
    for record, masks in evaluate.predict_records(
        records, variables, model, templates, mesh, config
    ):
        image = images.read_image(record.file_name)
        ours = predictor.predict(image, record.keypoints)
        assert ours.shape == masks.shape == (record.num_people, record.height, record.width)
        assert ours.dtype == bool
        np.testing.assert_array_equal(ours, masks)
        compared += record.num_people
        # Non-trivial masks, so agreement means something.
        assert 0.005 < ours.mean() < 0.9
    assert compared >= 8


def test_no_recompilation_within_buckets(predictor, setup):
    record = _records(setup)[0]
    image = images.read_image(record.file_name)
    kpts = record.keypoints
    assert len(kpts) >= 2
    predictor.predict(image, kpts[:3])  # warm: a bucket of 4 people, a 128x128 paste canvas
    traces = predictor.traces
    paste_cache = warps._paste_masks._cache_size()
    for h, w, n in [(96, 96, 4), (90, 70, 3), (80, 96, 4), (128, 100, 3)]:
        canvas = np.zeros((h, w, 3), np.uint8)
        canvas[: min(h, image.shape[0]), : min(w, image.shape[1])] = image[:h, :w]
        people = np.concatenate([kpts, kpts])[:n]
        masks = predictor.predict(canvas, people)
        assert masks.shape == (n, h, w)
    assert predictor.traces == traces, "the network was traced again within a bucket"
    assert warps._paste_masks._cache_size() == paste_cache


def test_nobody_and_batch(predictor, setup):
    records = _records(setup)[:3]
    pictures = [images.read_image(r.file_name) for r in records]
    empty = predictor.predict(pictures[0], np.zeros((0, 17, 3), np.float32))
    assert empty.shape == (0, *pictures[0].shape[:2]) and empty.dtype == bool
    keypoints = [records[0].keypoints, np.zeros((0, 17, 3)), records[2].keypoints]
    batch = predictor.predict_batch(pictures, keypoints, batch_size=2)
    assert [m.shape for m in batch] == [(len(k), *p.shape[:2]) for k, p in zip(keypoints, pictures)]
    np.testing.assert_array_equal(batch[0], predictor.predict(pictures[0], keypoints[0]))
    np.testing.assert_array_equal(batch[2], predictor.predict(pictures[2], keypoints[2]))
    only_empty = predictor.predict_batch(pictures[:2], [np.zeros((0, 17, 3))] * 2)
    assert [m.shape[0] for m in only_empty] == [0, 0]


def test_nan_keypoints_raise(predictor, setup):
    record = _records(setup)[0]
    image = images.read_image(record.file_name)
    bad = record.keypoints.copy()
    bad[1, 5, 0] = np.nan
    with pytest.raises(ValueError, match=r"person 1 .*non-finite.*5 \(left_shoulder\)"):
        predictor.predict(image, bad)
    with pytest.raises(ValueError, match="uint8"):
        predictor.predict(image.astype(np.float32), record.keypoints)
    with pytest.raises(ValueError, match="2 images but 1"):
        predictor.predict_batch([image, image], [record.keypoints])


def test_step_folder_and_explain(setup, predictor):
    step = inference.Predictor.from_checkpoint(os.path.join(setup["workdir"], "checkpoints", "3"))
    record = _records(setup)[1]
    image = images.read_image(record.file_name)
    masks = step.predict(image, record.keypoints)
    np.testing.assert_array_equal(masks, predictor.predict(image, record.keypoints))
    details = step.explain(image, record.keypoints)
    n, a = record.num_people, step.model.align_size
    np.testing.assert_array_equal(details["masks"], masks)
    assert details["probs"].shape == (n, a, a)
    assert details["aligned"].shape == (n, a, a, step.model.fpn_features)
    assert details["skeleton"].shape == (n, a, a, 55)
    assert details["keypoints_align"].shape == (n, 17, 3)
    assert details["template_index"].shape == (n,)
    # Visible joints land inside (or near) the align frame after fitting.
    vis = details["keypoints_align"][..., 2] > 0
    assert np.all(np.abs(details["keypoints_align"][..., :2][vis]) < 4 * a)


def test_torch_file_round_trip(setup, predictor, tmp_path):
    torch = pytest.importorskip("torch")
    from pose2seg_jax.conversion import convert

    variables = jax.device_get(predictor.variables)
    path = tmp_path / "ours.pth"
    torch.save(convert.flax_to_torch(variables), path)
    config_file = os.path.join(setup["workdir"], "config.json")
    loaded = inference.Predictor.from_checkpoint(path, config=config_file)
    record = _records(setup)[2]
    image = images.read_image(record.file_name)
    np.testing.assert_array_equal(
        loaded.predict(image, record.keypoints), predictor.predict(image, record.keypoints)
    )
    # Without a config a PyTorch file means the paper's model, which these weights do not fit.
    with pytest.raises(ValueError):
        inference.Predictor.from_checkpoint(path)


def test_wrong_config_is_explained(setup, tmp_path):
    config = json.load(open(os.path.join(setup["workdir"], "config.json")))
    config["model"]["seg_width"] = 16
    with pytest.raises(ValueError, match="does not fit the configured model"):
        inference.Predictor.from_checkpoint(setup["workdir"], config=config)
    with pytest.raises(FileNotFoundError):
        inference.Predictor.from_checkpoint(tmp_path / "nothing")


@pytest.mark.parametrize("n, bucket", [(0, 1), (1, 1), (2, 2), (3, 4), (8, 8), (9, 16)])
def test_people_bucket(n, bucket):
    assert inference.people_bucket(n) == bucket
