"""``pose2seg-predict``: masks for a file or folder of images from a pose estimator's keypoints.

    pose2seg-predict --checkpoint runs/demo --images photos/ --keypoints kpts.json --out masks/

``--keypoints`` is a COCO keypoint results file, what pose estimators write: a json list of
``{"image_id" or "file_name", "keypoints": [51 numbers], "score"}`` (a COCO annotation file
works too: its ``annotations`` are read, scored 1). People are matched to images
by ``file_name`` (name or stem), or by ``image_id`` through ``--annotations`` (a COCO file with an
``images`` list) or else the image's numeric file stem (COCO's ``000000397133.jpg`` is id
397133). The third number of each joint is a visibility flag when every one in the file is 0, 1
or 2, else a confidence; either way a joint below ``--min-joint-score`` (or 0) is dropped
(v = 0), and confident joints become visible (v = 2). People scoring below ``--min-score`` or
left without joints are dropped.

Writes ``OUT/segm_results.json`` (COCO segm results: RLE masks, ``score`` = the person's score,
plus ``file_name``), ``OUT/overlays/<stem>.png`` for every image (images with nobody too) and,
with ``--figures``, ``OUT/figures/<stem>_person<i>.png`` alignment figures.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import math
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pose2seg_jax.ops.keypoints import NUM_KEYPOINTS

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


@dataclasses.dataclass
class Detection:
    """One person of the keypoints file."""

    index: int  # position in the file
    image_id: int | str | None
    file_name: str | None
    keypoints: np.ndarray  # (17, 3) with v in {0, 1, 2}
    score: float


def _natural_key(path: Path) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]


def list_images(path: str | os.PathLike) -> list[Path]:
    """One image file, or the images of a folder in natural order (frame_2 before frame_10)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"--images {path} is neither an image file nor a folder")
    found = [p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if not found:
        raise FileNotFoundError(
            f"no images ({', '.join(IMAGE_SUFFIXES)}) in {path}; video frames must be "
            "extracted first, e.g. ffmpeg -i video.mp4 frames/%06d.png"
        )
    return sorted(found, key=_natural_key)


def read_keypoint_results(
    path: str | os.PathLike, *, min_score: float = 0.0, min_joint_score: float = 0.0
) -> tuple[list[Detection], collections.Counter]:
    """Reads a COCO keypoint results file into detections with visibility flags.

    Args:
      path: the json list.
      min_score: lowest person score kept (a missing score counts as 1).
      min_joint_score: lowest joint flag or confidence kept.

    Returns:
      (kept detections, counts of dropped ones by reason).

    Raises:
      ValueError: the file is not a json list, or an entry is malformed (naming it).
    """
    path = Path(path)
    with open(path, encoding="utf-8") as f:
        entries = json.load(f)
    if isinstance(entries, dict) and "annotations" in entries:
        entries = entries["annotations"]
    if not isinstance(entries, list):
        raise ValueError(
            f"{path} is not a COCO keypoint results file: expected a json list of "
            '{"image_id" or "file_name", "keypoints", "score"}'
        )
    parsed = []
    for index, entry in enumerate(entries):
        where = f"entry {index} of {path.name}"
        if not isinstance(entry, dict) or "keypoints" not in entry:
            raise ValueError(f"{where} has no 'keypoints'")
        if "image_id" not in entry and "file_name" not in entry:
            raise ValueError(f"{where} has neither 'image_id' nor 'file_name' to match an image")
        try:
            kp = np.asarray(entry["keypoints"], np.float64).reshape(-1)
            score = float(entry.get("score", 1.0))
        except (TypeError, ValueError):
            raise ValueError(f"{where}: keypoints and score must be numbers") from None
        if kp.size != 3 * NUM_KEYPOINTS:
            raise ValueError(
                f"{where} has {kp.size} keypoint values, expected {3 * NUM_KEYPOINTS} "
                "(17 COCO joints x (x, y, v or confidence))"
            )
        parsed.append((index, entry, kp.reshape(NUM_KEYPOINTS, 3), score))
    third = np.concatenate([kp[:, 2] for _, _, kp, _ in parsed]) if parsed else np.zeros(0)
    flags = bool(np.isin(third[np.isfinite(third)], (0.0, 1.0, 2.0)).all())
    dropped: collections.Counter = collections.Counter()
    kept = []
    for index, entry, kp, score in parsed:
        if not math.isfinite(score) or score < min_score:
            dropped["low score"] += 1
            continue
        finite = np.isfinite(kp).all(axis=1)
        keep = finite & (kp[:, 2] > 0) & (kp[:, 2] >= min_joint_score)
        if not keep.any():
            dropped["no joints"] += 1
            continue
        out = np.zeros((NUM_KEYPOINTS, 3), np.float32)
        out[keep, :2] = kp[keep, :2]
        out[keep, 2] = kp[keep, 2] if flags else 2.0
        kept.append(
            Detection(
                index=index,
                image_id=entry.get("image_id"),
                file_name=entry.get("file_name"),
                keypoints=out,
                score=score,
            )
        )
    return kept, dropped


def image_ids(images: Sequence[Path], annotations: str | os.PathLike | None) -> list:
    """Each image's id: from the annotation file's ``images`` by file name, else a numeric stem."""
    by_name = {}
    if annotations:
        with open(annotations, encoding="utf-8") as f:
            data = json.load(f)
        for image in data.get("images", []):
            by_name[os.path.basename(image["file_name"])] = image["id"]
    ids = []
    for path in images:
        if path.name in by_name:
            ids.append(by_name[path.name])
        elif path.stem.isdigit():
            ids.append(int(path.stem))
        else:
            ids.append(None)
    return ids


def match_detections(
    images: Sequence[Path], ids: Sequence, detections: Sequence[Detection]
) -> tuple[list[list[Detection]], list[Detection]]:
    """Assigns detections to images by file name/stem or image id.

    Returns:
      (per image, its detections in file order; detections matching no image).
    """
    by_key: dict[str, int] = {}
    for i, (path, image_id) in enumerate(zip(images, ids)):
        for key in (f"name:{path.name}", f"name:{path.stem}", f"id:{path.stem}"):
            by_key.setdefault(key, i)
        if image_id is not None:
            by_key[f"id:{image_id}"] = i
    per_image: list[list[Detection]] = [[] for _ in images]
    unmatched = []
    for det in detections:
        keys = []
        if det.file_name:
            name = os.path.basename(str(det.file_name))
            keys += [f"name:{name}", f"name:{os.path.splitext(name)[0]}"]
        if det.image_id is not None:
            keys.append(f"id:{det.image_id}")
        hit = next((by_key[k] for k in keys if k in by_key), None)
        if hit is None:
            unmatched.append(det)
        else:
            per_image[hit].append(det)
    return per_image, unmatched


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pose2seg-predict",
        description="Pose2Seg masks for your images from COCO-format keypoint results.",
    )
    parser.add_argument(
        "--checkpoint",
        required=True,
        help="training workdir, checkpoints or step folder, or PyTorch .pth/.pkl weights",
    )
    parser.add_argument("--images", required=True, help="an image file or a folder of images")
    parser.add_argument("--keypoints", required=True, help="COCO keypoint results json")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument(
        "--annotations", help="COCO json whose 'images' give the image ids of file names"
    )
    parser.add_argument(
        "--config", help="config.json or configs/*.py of the checkpoint (when not in its workdir)"
    )
    parser.add_argument("--templates", help="pose template file (default: the checkpoint's)")
    parser.add_argument("--min-score", type=float, default=0.0, help="lowest person score kept")
    parser.add_argument(
        "--min-joint-score",
        type=float,
        default=0.0,
        help="lowest joint confidence (or flag) kept; joints below get v = 0",
    )
    parser.add_argument("--batch-size", type=int, default=None, help="images per network call")
    parser.add_argument("--figures", action="store_true", help="write alignment figures")
    parser.add_argument("--no-overlays", action="store_true", help="skip the overlay PNGs")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def run(args: argparse.Namespace) -> dict:
    """Does the work of ``main``; returns a summary dict."""
    from tqdm.auto import tqdm

    from pose2seg_jax import figures, visualization
    from pose2seg_jax.data import images as images_lib
    from pose2seg_jax.evaluation.coco_eval import encode_mask
    from pose2seg_jax.inference import Predictor

    paths = list_images(args.images)
    detections, dropped = read_keypoint_results(
        args.keypoints, min_score=args.min_score, min_joint_score=args.min_joint_score
    )
    ids = image_ids(paths, args.annotations)
    per_image, unmatched = match_detections(paths, ids, detections)
    if unmatched:
        example = unmatched[0]
        print(
            f"pose2seg-predict: {len(unmatched)} detections match no image (first: entry "
            f"{example.index}, image_id={example.image_id!r}, file_name={example.file_name!r})"
            + ("" if args.annotations else "; pass --annotations to map image ids to file names"),
            file=sys.stderr,
        )
    predictor = Predictor.from_checkpoint(
        args.checkpoint, templates=args.templates, config=args.config, batch_size=args.batch_size
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    bar = tqdm(total=len(paths), desc="predict", unit="image", disable=args.no_progress)
    step = predictor.batch_size
    for start in range(0, len(paths), step):
        chunk = range(start, min(start + step, len(paths)))
        pictures = [images_lib.read_image(paths[i]) for i in chunk]
        keypoints = [
            np.stack([d.keypoints for d in per_image[i]])
            if per_image[i]
            else np.zeros((0, NUM_KEYPOINTS, 3), np.float32)
            for i in chunk
        ]
        masks = predictor.predict_batch(pictures, keypoints)
        for i, picture, kpts, m in zip(chunk, pictures, keypoints, masks):
            image_id = ids[i] if ids[i] is not None else i
            for det, mask in zip(per_image[i], m):
                results.append(
                    {
                        "image_id": image_id,
                        "category_id": 1,
                        "segmentation": encode_mask(mask),
                        "score": det.score,
                        "file_name": paths[i].name,
                    }
                )
            if not args.no_overlays:
                visualization.save_png(
                    visualization.overlay(picture, m, kpts),
                    str(out / "overlays" / f"{paths[i].stem}.png"),
                )
            if args.figures and len(kpts):
                figures.write_alignment_figures(
                    predictor, picture, kpts, out / "figures", paths[i].stem
                )
            bar.update(1)
    bar.close()
    with open(out / "segm_results.json", "w", encoding="utf-8") as f:
        json.dump(results, f)
    summary = {
        "images": len(paths),
        "people": len(results),
        "images_without_people": sum(1 for p in per_image if not p),
        "unmatched_detections": len(unmatched),
        "dropped_detections": dict(dropped),
        "results": str(out / "segm_results.json"),
    }
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point ``pose2seg-predict``."""
    args = _parser().parse_args(argv)
    try:
        summary = run(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"pose2seg-predict: error: {error}", file=sys.stderr)
        return 1
    print(
        f"{summary['images']} images, {summary['people']} people "
        f"({summary['images_without_people']} images without people) -> {summary['results']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
