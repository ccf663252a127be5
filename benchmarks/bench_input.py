"""Input pipeline throughput on COCO-like data: 640x480 JPEGs with 3 to 8 people.

Measures the cost of each stage of one example (decode, letterbox, mask decode, mask warp) in
this process, then training images per second through the grain pipeline with 0 and 2 worker
processes. Target: at least 50 images/s with 2 workers on a 2-core machine.

    .venv/bin/python benchmarks/bench_input.py [--images 64] [--batches 40] [--workers 2]

Other jobs sharing the CPU lower the numbers: the script prints the load average with them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from absl import flags
from pycocotools import mask as mask_utils

from pose2seg_jax.data import coco, pipeline, synthetic
from pose2seg_jax.data.images import encode_jpeg, read_image
from pose2seg_jax.ops.warps import letterbox_matrix


def make_data(root: Path, count: int) -> list[coco.ImageRecord]:
    """Writes ``count`` 640x480 JPEG scenes with 3 to 8 people in COCO format and reads them."""
    images, annotations = [], []
    for i in range(count):
        scene = synthetic.generate_scene(
            synthetic.scene_seed(123, i), 480, 640, min_people=3, max_people=8, spread=3.0
        )
        (root / f"{i}.jpg").write_bytes(encode_jpeg(scene.image, 90))
        images.append({"id": i + 1, "file_name": f"{i}.jpg", "height": 480, "width": 640})
        rles = mask_utils.encode(np.asfortranarray(np.moveaxis(scene.masks, 0, 2)))
        for p, rle in enumerate(rles):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": 1,
                    "iscrowd": 0,
                    "keypoints": scene.keypoints[p].reshape(-1).tolist(),
                    "segmentation": {"size": [480, 640], "counts": rle["counts"].decode()},
                    "bbox": scene.boxes[p].tolist(),
                }
            )
    path = root / "persons.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": []}))
    records, _ = coco.load_coco_persons(path, root)
    return records


def stage_costs(records: list[coco.ImageRecord], size: int, repeat: int = 3) -> dict[str, float]:
    """Milliseconds per image of each stage, measured in this process (median over images)."""
    times: dict[str, list[float]] = {
        k: [] for k in ("decode", "letterbox", "mask decode", "mask decode+warp")
    }
    for _ in range(repeat):
        for rec in records:
            t0 = time.perf_counter()
            image = read_image(rec.file_name)
            t1 = time.perf_counter()
            m = letterbox_matrix(rec.height, rec.width, size)
            pipeline.letterbox_image(image, m, size)
            t2 = time.perf_counter()
            rec.decode_masks()
            t3 = time.perf_counter()
            pipeline.warp_masks(rec.masks, rec.height, rec.width, m, size)
            t4 = time.perf_counter()
            for key, dt in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                times[key].append(dt * 1e3)
    out = {k: float(np.median(v)) for k, v in times.items()}
    t0 = time.perf_counter()
    for rec in records:
        pipeline.prepare_example(rec, None, input_size=size, max_people=8)
    out["whole example"] = (time.perf_counter() - t0) / len(records) * 1e3
    return out


def throughput(
    records, *, workers: int, batches: int, batch_size: int, size: int
) -> tuple[float, float]:
    """(images/s after the first batch, seconds to the first batch)."""
    ds = pipeline.train_dataset(
        records,
        batch_size=batch_size,
        input_size=size,
        max_people=8,
        seed=0,
        shard_index=0,
        shard_count=1,
        num_workers=workers,
        prefetch=2,
    )
    start = time.perf_counter()
    it = iter(ds)
    next(it)
    first = time.perf_counter() - start
    t0 = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * batch_size / (time.perf_counter() - t0), first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    flags.FLAGS.mark_as_parsed()
    with tempfile.TemporaryDirectory() as tmp:
        records = make_data(Path(tmp), args.images)
        people = [r.num_people for r in records]
        print(
            f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
            f"load average before: {os.getloadavg()[0]:.2f}"
        )
        print(
            f"data: {len(records)} images 640x480 JPEG, {min(people)}-{max(people)} people "
            f"(mean {np.mean(people):.1f}); input {args.size}, max_people 8"
        )
        print("stage costs, ms per image (one process):")
        for key, value in stage_costs(records, args.size).items():
            print(f"  {key:14s} {value:7.2f}")
        for workers in sorted({0, args.workers}):
            rate, first = throughput(
                records, workers=workers, batches=args.batches, batch_size=args.batch_size,
                size=args.size,
            )  # fmt: skip
            print(
                f"workers={workers}: {rate:6.1f} images/s "
                f"({rate / args.batch_size:5.1f} batches/s of {args.batch_size}; first batch {first:.1f} s)"
            )
        print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
