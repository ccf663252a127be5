"""TFDS builders ``ochuman``, ``coco_persons`` and ``synthetic_people`` (ArrayRecord, no TensorFlow).

Build once, then read anywhere with ``tfds.data_source(name, data_dir=..., split=...)`` (no import of
this module needed) and feed the data source to :mod:`pose2seg_jax.data.pipeline`:

    builder = OCHuman(data_dir="~/tensorflow_datasets", file_format="array_record",
                      config=None)  # manual files in <data_dir>/downloads/manual/ochuman
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=...))

Every example holds the encoded image file as it was (no re-encoding), its size, and the people
kept by :mod:`pose2seg_jax.data.coco` (train selection for ``train``, evaluation selection for
``val``/``test``): keypoints ``(n, 17, 3)``, boxes ``(n, 4)`` xywh, compressed-RLE mask counts
``(n,)`` bytes and annotation ids ``(n,)``. People and images that cannot be used are skipped,
counted and logged (the load report), never fatal; a missing image file is logged and skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from pycocotools import mask as mask_utils

from pose2seg_jax.data import coco, synthetic
from pose2seg_jax.data.images import encode_jpeg
from pose2seg_jax.ops.keypoints import KEYPOINT_NAMES, NUM_KEYPOINTS

logger = logging.getLogger(__name__)

OCHUMAN_VAL_IMAGES = 2500
OCHUMAN_TEST_IMAGES = 2231


class _PersonBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Shared base: no checksum file, so TFDS need not locate this package's files."""

    # TFDS finds a builder's checksums next to its code through `importlib_resources`, which is
    # not installed here; these builders download nothing, so there is nothing to check.
    code_path = None

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(builder=self, features=person_features())


def person_features() -> tfds.features.FeaturesDict:
    """The features shared by the three builders."""
    return tfds.features.FeaturesDict(
        {
            "image": tfds.features.Tensor(shape=(), dtype=np.object_),
            "file_name": tfds.features.Tensor(shape=(), dtype=np.object_),
            "image_id": tfds.features.Scalar(dtype=np.int64),
            "height": tfds.features.Scalar(dtype=np.int32),
            "width": tfds.features.Scalar(dtype=np.int32),
            "keypoints": tfds.features.Tensor(shape=(None, NUM_KEYPOINTS, 3), dtype=np.float32),
            "boxes": tfds.features.Tensor(shape=(None, 4), dtype=np.float32),
            "mask_rle": tfds.features.Tensor(shape=(None,), dtype=np.object_),
            "annotation_id": tfds.features.Tensor(shape=(None,), dtype=np.int64),
        }
    )


def _example(record: coco.ImageRecord, image_bytes: bytes, file_name: str) -> dict[str, Any]:
    return {
        "image": image_bytes,
        "file_name": file_name,
        "image_id": record.image_id,
        "height": record.height,
        "width": record.width,
        "keypoints": record.keypoints.astype(np.float32),
        "boxes": record.boxes.astype(np.float32),
        "mask_rle": np.array([m["counts"] for m in record.masks], dtype=object),
        "annotation_id": record.annotation_ids.astype(np.int64),
    }


def generate_from_coco(
    data: dict[str, Any], image_dir: Path, mode: coco.Mode, source: str
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yields ``(image_id, example)`` for a parsed COCO-format dict; logs the load report."""
    records, report = coco.records_from_coco(data, image_dir, mode=mode, source=source)
    missing = 0
    for record in records:
        try:
            image_bytes = Path(record.file_name).read_bytes()
        except OSError as err:
            missing += 1
            logger.warning(
                "%s: image %d skipped, cannot read %s (%s)",
                source,
                record.image_id,
                record.file_name,
                err.strerror or err,
            )
            continue
        yield record.image_id, _example(record, image_bytes, Path(record.file_name).name)
    logger.info("%s\n  image files missing or unreadable: %d", report.summary(), missing)


def _load_json(path: Path) -> dict[str, Any]:
    import json

    with open(path, encoding="utf-8") as f:
        return json.load(f)


# ---- OCHuman -----------------------------------------------------------------------------------


def ochuman_native_to_coco(native: dict[str, Any]) -> dict[str, Any]:
    """Converts OCHuman's own ``ochuman.json`` into a COCO-format dict (DATASETS.md).

    Keypoints are reordered to COCO order by joint name (joints COCO lacks are dropped, COCO
    joints OCHuman lacks get ``v = 0``); visibility 1 and 2 -> 2, 3 (occluded by others) -> 1;
    boxes ``x1, y1, x2, y2`` -> xywh; masks are the outer polygons minus the inner ones (holes),
    as compressed RLE. Only the benchmark subset is kept: images with at least one person having
    both keypoints and a mask, in the file's order. Image and annotation ids are numbered from 1.

    Args:
      native: the parsed ``ochuman.json``.

    Returns:
      A COCO-format dict.
    """
    names = list(native["keypoint_names"])
    source_index = [names.index(n) if n in names else -1 for n in KEYPOINT_NAMES]
    vis_map = {0: 0, 1: 2, 2: 2, 3: 1}
    images, annotations = [], []
    for entry in native["images"]:
        h, w = int(entry["height"]), int(entry["width"])
        people = []
        for ann in entry.get("annotations") or []:
            if ann.get("keypoints") is None or ann.get("segms") is None:
                continue
            kp = np.asarray(ann["keypoints"], np.float64).reshape(-1, 3)
            out = np.zeros((NUM_KEYPOINTS, 3))
            for k, src in enumerate(source_index):
                if src >= 0 and src < len(kp):
                    v = vis_map.get(int(kp[src, 2]), 0)
                    if v:
                        out[k] = (kp[src, 0], kp[src, 1], v)
            outer = [p for p in ann["segms"].get("outer") or [] if len(p) >= 6]
            inner = [p for p in ann["segms"].get("inner") or [] if len(p) >= 6]
            if not outer:
                continue
            mask = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(outer, h, w)))
            if inner:
                mask &= 1 - mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(inner, h, w)))
            rle = mask_utils.encode(np.asfortranarray(mask))
            x1, y1, x2, y2 = (float(v) for v in ann["bbox"])
            people.append(
                {
                    "keypoints": out.reshape(-1).tolist(),
                    "segmentation": {"size": [h, w], "counts": rle["counts"].decode()},
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                    "category_id": 1,
                    "num_keypoints": int((out[:, 2] > 0).sum()),
                }
            )
        if not people:
            continue
        image_id = len(images) + 1
        images.append({"id": image_id, "file_name": entry["file_name"], "height": h, "width": w})
        for person in people:
            person.update({"id": len(annotations) + 1, "image_id": image_id})
            annotations.append(person)
    return {
        "images": images,
        "annotations": annotations,
        "categories": [synthetic.person_category()],
    }


def ochuman_split(data: dict[str, Any], split: str) -> dict[str, Any]:
    """OCHuman's split rule: val is the first 2,500 images and test the last 2,231, in file order.

    Args:
      data: a COCO-format dict holding the whole benchmark subset in the file's order.
      split: ``"val"`` or ``"test"``.

    Returns:
      The COCO-format dict restricted to the split's images and their annotations.
    """
    images = data["images"]
    if split == "val":
        chosen = images[:OCHUMAN_VAL_IMAGES]
    elif split == "test":
        chosen = images[max(len(images) - OCHUMAN_TEST_IMAGES, OCHUMAN_VAL_IMAGES) :]
    else:
        raise ValueError(f"OCHuman has splits 'val' and 'test', not {split!r}")
    ids = {im["id"] for im in chosen}
    return {
        **data,
        "images": chosen,
        "annotations": [a for a in data["annotations"] if a["image_id"] in ids],
    }


class OCHuman(_PersonBuilder):
    """OCHuman val/test (people with keypoints and masks) from a manual download directory."""

    name = "ochuman"
    VERSION = tfds.core.Version("1.0.0")
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Put into the manual directory: `images/` (OCHuman's images) and either the COCO-format files
    `ochuman_coco_format_val_range_0.00_1.00.json` and `ochuman_coco_format_test_range_0.00_1.00.json`,
    or OCHuman's native `ochuman.json` (then val = first 2,500 images, test = last 2,231).
    """

    def _split_generators(self, dl_manager):
        manual = Path(dl_manager.manual_dir)
        return {split: self._generate_examples(manual, split) for split in ("val", "test")}

    def _generate_examples(self, manual: Path, split: str):
        coco_file = manual / f"ochuman_coco_format_{split}_range_0.00_1.00.json"
        if coco_file.exists():
            data = _load_json(coco_file)
            source = coco_file.name
        elif (manual / "ochuman.json").exists():
            data = ochuman_split(ochuman_native_to_coco(_load_json(manual / "ochuman.json")), split)
            source = f"ochuman.json ({split})"
        else:
            raise FileNotFoundError(
                f"{manual} has neither {coco_file.name} nor ochuman.json; "
                "see MANUAL_DOWNLOAD_INSTRUCTIONS"
            )
        yield from generate_from_coco(data, manual / "images", "eval", source)


class CocoPersons(_PersonBuilder):
    """COCOPersons: COCO 2017 people with keypoints and masks, from a manual download directory."""

    name = "coco_persons"
    VERSION = tfds.core.Version("1.0.0")
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Put into the manual directory: `train2017/`, `val2017/` and the annotation files
    `person_keypoints_train2017_pose2seg.json` and `person_keypoints_val2017_pose2seg.json`
    (COCO's own `person_keypoints_{train,val}2017.json` work too: the selection is the same).
    """

    def _split_generators(self, dl_manager):
        manual = Path(dl_manager.manual_dir)
        return {split: self._generate_examples(manual, split) for split in ("train", "val")}

    def _generate_examples(self, manual: Path, split: str):
        names = [
            f"person_keypoints_{split}2017_pose2seg.json",
            f"person_keypoints_{split}2017.json",
            f"annotations/person_keypoints_{split}2017.json",
        ]
        found = [manual / n for n in names if (manual / n).exists()]
        if not found:
            raise FileNotFoundError(
                f"{manual} has none of {names}; see MANUAL_DOWNLOAD_INSTRUCTIONS"
            )
        mode = "train" if split == "train" else "eval"
        yield from generate_from_coco(
            _load_json(found[0]), manual / f"{split}2017", mode, found[0].name
        )


class SyntheticPeopleConfig(tfds.core.BuilderConfig):
    """Sizes of a synthetic build."""

    def __init__(self, *, train_images: int, val_images: int, size: int = 288, **kwargs):
        super().__init__(**kwargs)
        self.train_images = train_images
        self.val_images = val_images
        self.size = size


class SyntheticPeople(_PersonBuilder):
    """The synthetic occluded people of :mod:`pose2seg_jax.data.synthetic`, made in memory."""

    name = "synthetic_people"
    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = [  # noqa: RUF012 (TFDS reads this class attribute)
        SyntheticPeopleConfig(name="demo", train_images=1500, val_images=150),
        SyntheticPeopleConfig(name="tiny", train_images=8, val_images=4, size=96),
    ]

    def _split_generators(self, dl_manager):
        cfg = self.builder_config
        return {
            "train": self._generate_examples("train", cfg.train_images),
            "val": self._generate_examples("val", cfg.val_images),
        }

    def _generate_examples(self, split: str, count: int):
        seed = synthetic.DEFAULT_SEEDS[split]
        size = self.builder_config.size
        ann_id = 1
        for index in range(count):
            scene = synthetic.scene_for_index(seed, index, size)
            n = len(scene.keypoints)
            rles = mask_utils.encode(np.asfortranarray(np.moveaxis(scene.masks, 0, 2)))
            record = coco.ImageRecord(
                image_id=index + 1,
                file_name=f"{split}/{index + 1:06d}.jpg",
                height=scene.image.shape[0],
                width=scene.image.shape[1],
                keypoints=scene.keypoints,
                boxes=scene.boxes,
                masks=[{"size": r["size"], "counts": r["counts"]} for r in rles],
                annotation_ids=np.arange(ann_id, ann_id + n, dtype=np.int64),
            )
            ann_id += n
            yield index + 1, _example(record, encode_jpeg(scene.image, 92), record.file_name)
