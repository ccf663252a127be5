"""The grain input pipeline: image records -> letterboxed, padded, batched NumPy arrays.

Each example is decoded, letterboxed into a ``size x size`` input frame (REFERENCE.md section 1:
bilinear, black border, pixel centres at integer coordinates as OpenCV's ``warpAffine``), its
keypoints mapped by the same matrix (joints with ``v == 0`` become zeros) and its masks decoded
and warped to the input frame (bilinear, then rounded to 0/1). People are padded to
``max_people`` with a validity mask; an image with more people gets a random subset, drawn from
the pipeline seed and the example's position, as the reference samples at most 8 people.

A batch is a dict of NumPy arrays (``B`` images, ``P`` people, ``S`` input size):

- ``image`` (B, S, S, 3) uint8 RGB. Left as uint8 so the host sends a quarter of the bytes;
  the model normalises on the device (``/255``, ImageNet mean and std, section 2; the black
  border becomes ``-mean/std`` there, as in the reference).
- ``keypoints`` (B, P, 17, 3) float32 in input coordinates; ``valid`` (B, P) bool.
- ``masks`` (B, P, S, S) uint8 0/1 in the input frame.
- ``image_id`` (B,) int64 (-1 for a padding image); ``annotation_id`` (B, P) int64 (-1 for
  padding); ``letterbox`` (B, 3, 3) float32 original -> input; ``orig_size`` (B, 2) int32 (h, w).
- evaluation adds ``record_index`` (B,), ``person_index`` (B, P) and ``last_pass`` (B,).

Training (:func:`train_dataset`): records are split into one shard per JAX process
(``records[process_index::process_count]``), shuffled from the seed, reshuffled every epoch,
batched with the remainder dropped. Evaluation (:func:`eval_dataset`): no shuffle, nothing
dropped; every image appears exactly once, except that an image with more than ``max_people``
people is split over several rows (passes) of ``max_people`` people each, carrying the same
``image_id`` and disjoint ``annotation_id``s; the last batch is padded with invalid rows so every
process yields the same number of batches. By default ``max_people`` for evaluation is the
largest count in the data, so no image is split.

A decode failure (missing or corrupt file, size different from the annotation) is logged with
the file name and the example becomes an all-invalid row (black image, ``valid`` all False):
the run goes on, and the loss ignores it.

Workers: ``num_workers > 0`` runs the transform in grain worker processes with prefetch. The
iterator's ``get_state()``/``set_state()`` round-trips through a checkpoint (a small dict) and
resumes at exactly the next batch.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import grain
import numpy as np
from pycocotools import mask as mask_utils

from pose2seg_jax.data.coco import ImageRecord, decode_rles
from pose2seg_jax.data.images import ImageDecodeError, decode_image, read_image
from pose2seg_jax.ops.keypoints import NUM_KEYPOINTS
from pose2seg_jax.ops.warps import letterbox_matrix

logger = logging.getLogger(__name__)

BATCH_KEYS = (
    "image",
    "keypoints",
    "valid",
    "masks",
    "image_id",
    "letterbox",
    "orig_size",
    "annotation_id",
)


# ---- warping (NumPy, worker side) ----------------------------------------------------------


def _axis_taps(
    out_len: int, in_len: int, scale: float, offset: float, start: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear taps along one axis for ``out = scale * in + offset``.

    Returns:
      ``(i0, i1, w0, w1)``, each ``(out_len,)`` for outputs ``start .. start + out_len - 1``:
      indices into the input padded by one zero on each side, and their weights (a tap outside
      the image reads the zero padding).
    """
    src = (np.arange(start, start + out_len, dtype=np.float64) - offset) / scale
    lo = np.floor(src)
    frac = (src - lo).astype(np.float32)
    i0 = np.clip(lo + 1, 0, in_len + 1).astype(np.intp)
    i1 = np.clip(lo + 2, 0, in_len + 1).astype(np.intp)
    return i0, i1, 1.0 - frac, frac


def _covered(out_len: int, in_len: int, scale: float, offset: float) -> tuple[int, int]:
    """The output range whose samples can touch the image (elsewhere the warp is zero)."""
    lo = math.floor(offset - scale) - 1
    hi = math.ceil(scale * in_len + offset) + 2
    return max(lo, 0), min(hi, out_len)


def warp_axis_aligned(
    array: np.ndarray, matrix: np.ndarray, out_shape: tuple[int, int], spatial: tuple[int, int]
) -> np.ndarray:
    """Bilinear warp by a scale-and-translate matrix, zero outside, as two 1-D passes.

    Equal to :func:`warp_affine` for matrices without rotation or shear, and several times
    cheaper: a letterbox is such a matrix.

    Args:
      array: any array; ``spatial`` names its (y, x) axes.
      matrix: ``(3, 3)`` source -> destination with ``matrix[0, 1] == matrix[1, 0] == 0``.
      out_shape: ``(h, w)`` of the destination.
      spatial: the (y, x) axes of ``array``.

    Returns:
      float32 array with the spatial axes resized to ``out_shape``.
    """
    ay, ax = spatial
    if abs(matrix[0, 1]) > 1e-12 or abs(matrix[1, 0]) > 1e-12:
        raise ValueError("warp_axis_aligned needs a matrix without rotation or shear")
    pad = [(0, 0)] * array.ndim
    pad[ay] = pad[ax] = (1, 1)
    padded = np.pad(array, pad)
    oy0, oy1 = _covered(out_shape[0], array.shape[ay], matrix[1, 1], matrix[1, 2])
    ox0, ox1 = _covered(out_shape[1], array.shape[ax], matrix[0, 0], matrix[0, 2])
    out_full = list(array.shape)
    out_full[ay], out_full[ax] = out_shape
    out = np.zeros(out_full, np.float32)
    if oy1 <= oy0 or ox1 <= ox0:
        return out
    iy0, iy1, wy0, wy1 = _axis_taps(oy1 - oy0, array.shape[ay], matrix[1, 1], matrix[1, 2], oy0)
    ix0, ix1, wx0, wx1 = _axis_taps(ox1 - ox0, array.shape[ax], matrix[0, 0], matrix[0, 2], ox0)

    def along(a: np.ndarray, axis: int, i0, i1, w0, w1) -> np.ndarray:
        # Weights are materialised over the trailing axes, so the products run long inner loops.
        trailing = a.shape[axis + 1 :]
        shape = (-1,) + (1,) * len(trailing)

        def full(w: np.ndarray) -> np.ndarray:
            return np.ascontiguousarray(np.broadcast_to(w.reshape(shape), (len(w), *trailing)))

        first = np.take(a, i0, axis=axis) * full(w0)
        first += np.take(a, i1, axis=axis) * full(w1)
        return first

    rows = along(padded, ay, iy0, iy1, wy0, wy1)
    index = [slice(None)] * array.ndim
    index[ay], index[ax] = slice(oy0, oy1), slice(ox0, ox1)
    out[tuple(index)] = along(rows, ax, ix0, ix1, wx0, wx1)
    return out


def warp_affine(image: np.ndarray, matrix: np.ndarray, out_shape: tuple[int, int]) -> np.ndarray:
    """General bilinear affine warp of ``(H, W)`` or ``(H, W, C)``, zero outside (OpenCV style).

    Output pixel ``(x', y')`` samples the source at ``matrix^-1 [x', y', 1]``; a sample whose
    corners fall partly outside blends with zero.

    Args:
      image: ``(H, W)`` or ``(H, W, C)``.
      matrix: ``(3, 3)`` source -> destination.
      out_shape: ``(h, w)``.

    Returns:
      float32 ``(h, w)`` or ``(h, w, C)``.
    """
    inv = np.linalg.inv(np.asarray(matrix, np.float64))
    h, w = out_shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    sx = inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2]
    sy = inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2]
    x0, y0 = np.floor(sx), np.floor(sy)
    fx, fy = (sx - x0).astype(np.float32), (sy - y0).astype(np.float32)
    padded = np.pad(image, [(1, 1), (1, 1)] + [(0, 0)] * (image.ndim - 2))
    hp, wp = padded.shape[:2]
    xi0 = np.clip(x0 + 1, 0, wp - 1).astype(np.intp)
    xi1 = np.clip(x0 + 2, 0, wp - 1).astype(np.intp)
    yi0 = np.clip(y0 + 1, 0, hp - 1).astype(np.intp)
    yi1 = np.clip(y0 + 2, 0, hp - 1).astype(np.intp)
    if image.ndim == 3:
        fx, fy = fx[..., None], fy[..., None]
    top = padded[yi0, xi0] * (1 - fx) + padded[yi0, xi1] * fx
    bottom = padded[yi1, xi0] * (1 - fx) + padded[yi1, xi1] * fx
    return (top * (1 - fy) + bottom * fy).astype(np.float32)


def warp_masks(
    rles: Sequence[dict[str, Any]], height: int, width: int, matrix: np.ndarray, size: int
) -> np.ndarray:
    """Decodes masks and warps them by a scale-and-translate ``matrix`` into ``size x size``.

    Bilinear, zero outside, then ``>= 0.5``. Only each mask's box (grown by two pixels) is
    resampled: people cover a small part of the frame, so this is several times cheaper than
    warping whole masks, with the same result.

    Args:
      rles: compressed RLEs.
      height: source height.
      width: source width.
      matrix: ``(3, 3)`` source -> destination, no rotation.
      size: destination side.

    Returns:
      ``(n, size, size)`` uint8 0/1.
    """
    masks = decode_rles(rles, height, width)
    out = np.zeros((len(rles), size, size), np.uint8)
    sx, tx, sy, ty = matrix[0, 0], matrix[0, 2], matrix[1, 1], matrix[1, 2]
    for i, rle in enumerate(rles):
        x, y, w, h = mask_utils.toBbox(rle)
        if w <= 0 or h <= 0:
            continue
        ox0 = max(math.floor(sx * (x - 1) + tx) - 1, 0)
        ox1 = min(math.ceil(sx * (x + w + 1) + tx) + 2, size)
        oy0 = max(math.floor(sy * (y - 1) + ty) - 1, 0)
        oy1 = min(math.ceil(sy * (y + h + 1) + ty) + 2, size)
        if ox1 <= ox0 or oy1 <= oy0:
            continue
        padded = np.pad(masks[i], 1)
        iy0, iy1, wy0, wy1 = _axis_taps(oy1 - oy0, height, sy, ty, oy0)
        ix0, ix1, wx0, wx1 = _axis_taps(ox1 - ox0, width, sx, tx, ox0)
        rows = padded[iy0] * wy0[:, None] + padded[iy1] * wy1[:, None]
        window = rows[:, ix0] * wx0 + rows[:, ix1] * wx1
        out[i, oy0:oy1, ox0:ox1] = window >= 0.5
    return out


def letterbox_image(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """Letterboxes ``(H, W, 3)`` uint8 into ``(size, size, 3)`` uint8 (bilinear, black border).

    NumPy, not PIL: PIL's affine warp fills samples within half a pixel outside the image and
    clamps others at the far edge, where OpenCV blends the border rows with black (measured: up
    to 64 grey levels apart on those rows); the reference's convention wins.

    Args:
      image: ``(H, W, 3)`` uint8.
      matrix: ``(3, 3)`` source -> destination, no rotation.
      size: destination side.

    Returns:
      ``(size, size, 3)`` uint8.
    """
    # One 2-D plane at a time: about 3x faster than warping the interleaved (H, W, 3) array in
    # one call (measured on 640x480 -> 512).
    out = np.empty((size, size, image.shape[2]), np.uint8)
    for c in range(image.shape[2]):
        plane = warp_axis_aligned(np.ascontiguousarray(image[..., c]), matrix, (size, size), (0, 1))
        np.rint(plane, out=plane)
        np.clip(plane, 0, 255, out=plane)
        out[..., c] = plane
    return out


def letterbox_keypoints(keypoints: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Maps ``(..., 17, 3)`` keypoints by ``matrix``; joints with ``v == 0`` become zeros."""
    xy = keypoints[..., :2].astype(np.float64) @ matrix[:2, :2].T + matrix[:2, 2]
    out = np.concatenate([xy, keypoints[..., 2:3]], axis=-1).astype(np.float32)
    return np.where(keypoints[..., 2:3] > 0, out, np.float32(0))


# ---- examples ------------------------------------------------------------------------------


def as_example(record: ImageRecord | Mapping[str, Any]) -> dict[str, Any]:
    """Normalises an :class:`ImageRecord` or a TFDS example dict to one dict form.

    Returns:
      dict with ``image`` (encoded bytes or None), ``file_name``, ``image_id``, ``height``,
      ``width``, ``keypoints`` (n, 17, 3), ``masks`` (n RLE dicts), ``annotation_id`` (n,).
    """
    if isinstance(record, ImageRecord):
        return {
            "image": None,
            "file_name": record.file_name,
            "image_id": record.image_id,
            "height": record.height,
            "width": record.width,
            "keypoints": record.keypoints,
            "masks": record.masks,
            "annotation_id": record.annotation_ids,
        }
    height, width = int(record["height"]), int(record["width"])
    counts = record["mask_rle"]
    file_name = record.get("file_name", b"")
    if isinstance(file_name, bytes):
        file_name = file_name.decode()
    return {
        "image": record["image"],
        "file_name": str(file_name),
        "image_id": int(record["image_id"]),
        "height": height,
        "width": width,
        "keypoints": np.asarray(record["keypoints"], np.float32).reshape(-1, NUM_KEYPOINTS, 3),
        "masks": [{"size": [height, width], "counts": bytes(c)} for c in counts],
        "annotation_id": np.asarray(record["annotation_id"], np.int64),
    }


def num_people(record: ImageRecord | Mapping[str, Any]) -> int:
    """The number of people in a record or TFDS example."""
    if isinstance(record, ImageRecord):
        return record.num_people
    return len(record["annotation_id"])


def _decode(example: dict[str, Any]) -> np.ndarray | None:
    """The example's RGB image, or None after logging why it cannot be used."""
    name = example["file_name"] or f"image {example['image_id']}"
    try:
        if example["image"] is not None:
            image = decode_image(bytes(example["image"]), name=name)
        else:
            image = read_image(example["file_name"])
    except ImageDecodeError as err:
        logger.warning("skipping image %s: %s", example["image_id"], err)
        return None
    if image.shape[:2] != (example["height"], example["width"]):
        logger.warning(
            "skipping image %s: %s decodes to %dx%d but the annotations say %dx%d; "
            "fix the height/width entry or the file",
            example["image_id"],
            name,
            image.shape[0],
            image.shape[1],
            example["height"],
            example["width"],
        )
        return None
    return image


def empty_example(input_size: int, max_people: int, *, with_masks: bool = True) -> dict:
    """An all-invalid row (padding image): black image, no people, ``image_id`` -1."""
    s, p = input_size, max_people
    return {
        "image": np.zeros((s, s, 3), np.uint8),
        "keypoints": np.zeros((p, NUM_KEYPOINTS, 3), np.float32),
        "valid": np.zeros((p,), bool),
        "masks": np.zeros((p, s, s) if with_masks else (p, 0, 0), np.uint8),
        "image_id": np.int64(-1),
        "letterbox": np.eye(3, dtype=np.float32),
        "orig_size": np.zeros((2,), np.int32),
        "annotation_id": np.full((p,), -1, np.int64),
    }


def _eval_keys(row: dict, record_index: int, people: np.ndarray, last: bool, max_people: int):
    """Adds ``record_index`` (), ``person_index`` (P,) (-1 padding) and ``last_pass`` ()."""
    row["record_index"] = np.int64(record_index)
    row["person_index"] = np.full((max_people,), -1, np.int64)
    row["person_index"][: len(people)] = people
    row["last_pass"] = np.bool_(last)
    return row


def prepare_example(
    record: ImageRecord | Mapping[str, Any],
    people: np.ndarray | None,
    *,
    input_size: int,
    max_people: int,
    with_masks: bool = True,
) -> dict[str, np.ndarray]:
    """Decodes, letterboxes and pads one image.

    Args:
      record: an :class:`ImageRecord` or TFDS example.
      people: indices of the people to keep (at most ``max_people``), None for the first ones.
      input_size: side ``S`` of the input frame.
      max_people: ``P``.
      with_masks: decode and warp the masks (else ``masks`` is ``(P, 0, 0)``).

    Returns:
      One unbatched row of the batch dict (module docstring).
    """
    example = as_example(record)
    out = empty_example(input_size, max_people, with_masks=with_masks)
    image = _decode(example)
    if image is None:
        out["image_id"] = np.int64(example["image_id"])
        return out
    h, w = example["height"], example["width"]
    matrix = letterbox_matrix(h, w, input_size)
    out["image"] = letterbox_image(image, matrix, input_size)
    n = len(example["keypoints"])
    if people is None:
        people = np.arange(min(n, max_people))
    k = len(people)
    if k > max_people:
        raise ValueError(f"image {example['image_id']}: {k} people chosen, max_people={max_people}")
    out["keypoints"][:k] = letterbox_keypoints(example["keypoints"][people], matrix)
    out["valid"][:k] = True
    out["annotation_id"][:k] = example["annotation_id"][people]
    out["image_id"] = np.int64(example["image_id"])
    out["letterbox"] = matrix.astype(np.float32)
    out["orig_size"] = np.array([h, w], np.int32)
    if with_masks and k:
        out["masks"][:k] = warp_masks(
            [example["masks"][i] for i in people], h, w, matrix, input_size
        )
    return out


@dataclasses.dataclass
class TrainTransform(grain.transforms.RandomMap):
    """Random subset of people, then :func:`prepare_example` (a grain random map)."""

    input_size: int
    max_people: int
    with_masks: bool = True

    def random_map(self, element, rng: np.random.Generator):
        n = num_people(element)
        if n > self.max_people:
            people = np.sort(rng.choice(n, self.max_people, replace=False))
        else:
            people = np.arange(n)
        return prepare_example(
            element,
            people,
            input_size=self.input_size,
            max_people=self.max_people,
            with_masks=self.with_masks,
        )


@dataclasses.dataclass
class EvalTransform(grain.transforms.Map):
    """Maps an ``(record index, pass)`` item to a row; index -1 gives a padding row."""

    records: Sequence[Any]
    input_size: int
    max_people: int
    with_masks: bool = True

    def map(self, element):
        index, chunk = int(element[0]), int(element[1])
        if index < 0:
            row = empty_example(self.input_size, self.max_people, with_masks=self.with_masks)
            return _eval_keys(row, -1, np.zeros(0, np.int64), False, self.max_people)
        record = self.records[index]
        n = num_people(record)
        people = np.arange(chunk * self.max_people, min((chunk + 1) * self.max_people, n))
        row = prepare_example(
            record,
            people,
            input_size=self.input_size,
            max_people=self.max_people,
            with_masks=self.with_masks,
        )
        last = (chunk + 1) * self.max_people >= n
        return _eval_keys(row, index, people, last, self.max_people)


# ---- datasets -------------------------------------------------------------------------------


def _ensure_absl_flags() -> None:
    """grain's worker processes read absl flags; parse them if the program has not."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def _shard(shard_index: int | None, shard_count: int | None) -> tuple[int, int]:
    if shard_index is None or shard_count is None:
        import jax

        shard_index = jax.process_index() if shard_index is None else shard_index
        shard_count = jax.process_count() if shard_count is None else shard_count
    if not 0 <= shard_index < shard_count:
        raise ValueError(f"shard_index {shard_index} outside [0, {shard_count})")
    return shard_index, shard_count


def _to_iter(ds: grain.MapDataset, num_workers: int, prefetch: int) -> grain.IterDataset:
    it = ds.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=prefetch))
    if num_workers > 0:
        _ensure_absl_flags()
        it = it.mp_prefetch(
            grain.MultiprocessingOptions(num_workers=num_workers, per_worker_buffer_size=prefetch)
        )
    return it


def train_dataset(
    records: Sequence[Any],
    *,
    batch_size: int,
    input_size: int = 512,
    max_people: int = 8,
    seed: int = 0,
    num_epochs: int | None = None,
    shard_index: int | None = None,
    shard_count: int | None = None,
    num_workers: int = 0,
    prefetch: int = 2,
    with_masks: bool = True,
) -> grain.IterDataset:
    """The training input: shuffled, repeated, batched; ``iter()`` it and keep the iterator.

    Args:
      records: random-access records (:class:`ImageRecord` list or a TFDS data source).
      batch_size: images per batch on this process (the global batch over process count).
      input_size: input side ``S``.
      max_people: people per image ``P`` (random subset when more).
      seed: shuffle and subset seed.
      num_epochs: passes over the data; None repeats forever.
      shard_index: this process's shard; None uses ``jax.process_index()``.
      shard_count: number of shards; None uses ``jax.process_count()``.
      num_workers: grain worker processes (0 runs in-process).
      prefetch: batches buffered per worker.
      with_masks: produce ``masks``.

    Returns:
      A grain IterDataset of batch dicts; its iterator has ``get_state``/``set_state``.
    """
    shard_index, shard_count = _shard(shard_index, shard_count)
    ds = grain.MapDataset.source(records)[shard_index::shard_count]
    if len(ds) < batch_size:
        raise ValueError(
            f"shard {shard_index} of {shard_count} has {len(ds)} images, fewer than one batch "
            f"of {batch_size}; use more data or a smaller batch"
        )
    ds = ds.seed(seed).shuffle().repeat(num_epochs)
    ds = ds.random_map(TrainTransform(input_size, max_people, with_masks))
    ds = ds.batch(batch_size, drop_remainder=True)
    return _to_iter(ds, num_workers, prefetch)


def eval_items(
    people_counts: Sequence[int],
    max_people: int,
    batch_size: int,
    shard_index: int,
    shard_count: int,
) -> list[tuple[int, int]]:
    """This shard's ``(record index, pass)`` rows, padded with ``(-1, 0)`` to whole batches.

    Every shard gets the same number of batches (the largest shard's), so processes that run
    collective evaluation steps stay in step.
    """
    items = [
        (i, c)
        for i, n in enumerate(people_counts)
        for c in range(max(1, math.ceil(n / max_people)))
    ]
    shards = [items[s::shard_count] for s in range(shard_count)]
    per_shard = max(len(s) for s in shards)
    batches = max(1, math.ceil(per_shard / batch_size))
    mine = shards[shard_index]
    return mine + [(-1, 0)] * (batches * batch_size - len(mine))


def eval_dataset(
    records: Sequence[Any],
    *,
    batch_size: int,
    input_size: int = 512,
    max_people: int | None = None,
    shard_index: int | None = None,
    shard_count: int | None = None,
    num_workers: int = 0,
    prefetch: int = 2,
    with_masks: bool = True,
) -> grain.IterDataset:
    """The evaluation input: every image once, every person kept, last batch padded.

    Args:
      records: random-access records.
      batch_size: rows per batch on this process.
      input_size: input side ``S``.
      max_people: ``P``; None uses the largest people count in ``records``. Images with more
        people than ``P`` are split over several rows (module docstring).
      shard_index: None uses ``jax.process_index()``.
      shard_count: None uses ``jax.process_count()``.
      num_workers: grain worker processes.
      prefetch: batches buffered per worker.
      with_masks: produce ``masks``.

    Returns:
      A grain IterDataset of batch dicts (padding rows have ``image_id`` -1, ``valid`` False),
      with three more keys to paste results back: ``record_index`` (B,) into ``records`` (-1 for
      padding), ``person_index`` (B, P) into the record's people (-1 for padding) and
      ``last_pass`` (B,) True on an image's last row.
    """
    shard_index, shard_count = _shard(shard_index, shard_count)
    counts = [num_people(r) for r in records]
    if max_people is None:
        max_people = max([1, *counts])
    items = eval_items(counts, max_people, batch_size, shard_index, shard_count)
    ds = grain.MapDataset.source(items).map(
        EvalTransform(records, input_size, max_people, with_masks)
    )
    ds = ds.batch(batch_size, drop_remainder=False)
    return _to_iter(ds, num_workers, prefetch)


def train_iterator(records: Sequence[Any], **kwargs) -> grain.DatasetIterator:
    """``iter(train_dataset(records, **kwargs))``: the object to save and restore with its state."""
    return iter(train_dataset(records, **kwargs))


def eval_batches(records: Sequence[Any], **kwargs):
    """``iter(eval_dataset(records, **kwargs))``: every image once, in record order per shard.

    ``shard_index``/``shard_count`` default to 0 and 1 here (a single evaluating process).
    """
    kwargs.setdefault("shard_index", 0)
    kwargs.setdefault("shard_count", 1)
    return iter(eval_dataset(records, **kwargs))
