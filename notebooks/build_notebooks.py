"""Writes notebooks/colab_tpu.ipynb and notebooks/convert_weights.ipynb (outputs cleared).

    python notebooks/build_notebooks.py [OUT_DIR]

Edit the cells here, not in the .ipynb files, so the notebooks stay reproducible. Each notebook
has one cell tagged ``parameters`` (papermill) whose values tests/test_notebooks.py shrinks.
"""

import os
import sys

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = os.path.dirname(os.path.abspath(__file__))


def _notebook(cells) -> nbformat.NotebookNode:
    for i, cell in enumerate(cells):
        cell["id"] = f"cell-{i:02d}"  # stable ids: rebuilding gives the same bytes
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.metadata["language_info"] = {"name": "python"}
    nb.metadata["accelerator"] = "TPU"
    return nb


def _parameters(source: str):
    cell = new_code_cell(source.strip())
    cell.metadata["tags"] = ["parameters"]
    return cell


def _code(source: str):
    return new_code_cell(source.strip())


def _md(source: str):
    return new_markdown_cell(source.strip())


def colab_tpu() -> nbformat.NotebookNode:
    return _notebook(
        [
            _md(
                """
# Pose2Seg in JAX on a Colab TPU

Trains Pose2Seg (pose-based human instance segmentation, CVPR 2019) with this repository's
JAX/Flax code, evaluates it (COCO segm AP) and shows its masks. It runs on whatever Colab gives
it: a TPU (Runtime > Change runtime type > TPU), a GPU, or the CPU.

The default trains the small model of `configs/synthetic.py` on generated images of overlapping
people (about 10 minutes on 2 CPU cores, far less on a TPU). Set `dataset = "ochuman"` to train
on OCHuman from your Google Drive instead.
"""
            ),
            _parameters(
                """
# Where the code comes from: this repository's git URL (Colab clones and installs it).
repo_url = "https://github.com/YOUR_ACCOUNT/pose2seg-jax.git"
repo_dir = "pose2seg-jax"
# Clone and pip install the repository; False when it is already installed (local runs, tests).
install = True
# "synthetic" (generated here) or "ochuman" (COCO-format files on a mounted Google Drive).
dataset = "synthetic"
ochuman_dir = "/content/drive/MyDrive/ochuman"
# Config file under configs/ and run length.
config_name = "synthetic"
num_steps = 1200
# Synthetic data: images per split and their height in pixels.
data_dir = "data/synthetic"
train_images = 1500
val_images = 150
image_size = 288
# Data-loading worker processes (0: in the notebook's process).
num_workers = 2
workdir = "runs/colab"
"""
            ),
            _md(
                "## Install\nClones the repository and installs it with pip (with `jax[tpu]` on a TPU)."
            ),
            _code(
                """
import glob
import os
import subprocess
import sys

on_tpu = bool(glob.glob("/dev/accel*") or os.environ.get("TPU_NAME") or os.environ.get("COLAB_TPU_ADDR"))
if install:
    if not os.path.isdir(repo_dir):
        subprocess.run(["git", "clone", "--depth", "1", repo_url, repo_dir], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", repo_dir], check=True)
    if on_tpu:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-U", "jax[tpu]"], check=True)
os.chdir(repo_dir)
sys.path.insert(0, os.getcwd())  # configs/ lives in the repository, not in the package
print("working in", os.getcwd())
"""
            ),
            _md(
                "## Devices\nJAX picks the TPU, else a GPU, else the CPU; training uses all local devices."
            ),
            _code(
                """
import jax

devices = jax.devices()
platform = devices[0].platform
print(f"JAX {jax.__version__}: {len(devices)} {platform.upper()} device(s)")
for d in devices:
    print("  ", d)
"""
            ),
            _md("## Data"),
            _code(
                """
from pose2seg_jax.data import synthetic

if dataset == "synthetic":
    for split, count in (("train", train_images), ("val", val_images)):
        if not os.path.exists(os.path.join(data_dir, f"{split}.json")):
            synthetic.write_dataset(data_dir, split, count, size=image_size, progress=False)
    train_annotations, train_dir = os.path.join(data_dir, "train.json"), data_dir
    val_annotations, val_dir = os.path.join(data_dir, "val.json"), data_dir
elif dataset == "ochuman":
    from google.colab import drive  # only on Colab

    drive.mount("/content/drive")
    train_annotations = os.path.join(ochuman_dir, "ochuman_coco_format_val_range_0.00_1.00.json")
    val_annotations = os.path.join(ochuman_dir, "ochuman_coco_format_test_range_0.00_1.00.json")
    train_dir = val_dir = os.path.join(ochuman_dir, "images")
else:
    raise ValueError(f"dataset must be 'synthetic' or 'ochuman', got {dataset!r}")
print(train_annotations, val_annotations, sep="\\n")
"""
            ),
            _md(
                "## Config\nThe config file's recipe, shortened to `num_steps` (warm-up and decays scaled with it)."
            ),
            _code(
                """
import importlib
import json

config = importlib.import_module(f"configs.{config_name}").get_config()
scale = num_steps / config.train.num_steps
config.train.num_steps = num_steps
config.train.num_epochs = 0
config.train.warmup_steps = max(1, round(config.train.warmup_steps * scale))
config.train.decay_steps = tuple(max(1, round(s * scale)) for s in config.train.decay_steps)
config.train.checkpoint_every = max(1, num_steps // 4)
config.train.log_every = max(1, min(config.train.log_every, num_steps // 10))
n = jax.device_count()
config.train.batch_size = max(n, config.train.batch_size // n * n)
config.eval.batch_size = max(n, config.eval.batch_size // n * n)
config.data.kind = "synthetic" if dataset == "synthetic" else "coco"
config.data.root = data_dir if dataset == "synthetic" else None
config.data.train_annotations, config.data.train_images = train_annotations, train_dir
config.data.val_annotations, config.data.val_images = val_annotations, val_dir
config.data.num_workers = num_workers
os.makedirs(workdir, exist_ok=True)
with open(os.path.join(workdir, "config.json"), "w") as f:  # the Predictor reads model sizes here
    f.write(config.to_json_best_effort(indent=2))
print(config.model)
"""
            ),
            _md(
                "## Train and evaluate\n`train_and_evaluate` checkpoints into the workdir and evaluates at the end."
            ),
            _code(
                """
from pose2seg_jax.training.train import train_and_evaluate

metrics = train_and_evaluate(config, workdir)
print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()}, indent=1))
"""
            ),
            _md(
                "## Pictures\nTraining curves and the evaluation's overlays (each person's mask in its colour, with the skeleton)."
            ),
            _code(
                """
from IPython.display import Image as ShowImage
from IPython.display import display

for name in ("curves.png", "eval/val_overlays.png"):
    path = os.path.join(workdir, name)
    if os.path.exists(path):
        print(path)
        display(ShowImage(filename=path))
"""
            ),
            _md("## Masks for one image with the Python API"),
            _code(
                """
import numpy as np
from PIL import Image

from pose2seg_jax import Predictor, figures, visualization
from pose2seg_jax.data import coco, images

predictor = Predictor.from_checkpoint(workdir)
records, _ = coco.load_coco_persons(val_annotations, val_dir, mode="eval")
record = next(r for r in records if r.num_people)
image = images.read_image(record.file_name)
masks = predictor.predict(image, record.keypoints)
print(f"{record.file_name}: {masks.shape[0]} people, mask shape {masks.shape[1:]}")
display(Image.fromarray(visualization.overlay(image, masks, record.keypoints)))
"""
            ),
            _md(
                "The alignment figure of the first person: the template chosen, the aligned crop, the skeleton features and the mask."
            ),
            _code(
                """
details = predictor.explain(image, record.keypoints)
picture = figures.alignment_figure(image, record.keypoints, details, 0, predictor.templates)
display(Image.fromarray(picture))
"""
            ),
        ]
    )


def convert_weights() -> nbformat.NotebookNode:
    return _notebook(
        [
            _md(
                """
# Released PyTorch weights -> JAX -> masks, and back to PyTorch

Converts the released Pose2Seg weights (`pose2seg_release.pkl`, a PyTorch state dict) to this
repository's Flax variables, predicts masks on an image, then converts ours back to a PyTorch
state dict and checks that the PyTorch twin of the network (`pose2seg_jax.conversion.torch_model`)
computes the same logits. Without the released file (e.g. on a CPU test machine) the notebook
makes a PyTorch file with random weights of the same layout, so every step still runs.
"""
            ),
            _parameters(
                """
# The released weights; absent: a random-weight PyTorch file of the same layout is written there.
weights_path = "pose2seg_release.pkl"
# Model sizes (Pose2Seg fields); {} is the paper's ResNet-50-FPN model of the released file.
model_sizes = {}
# Side of the letterboxed network input (512 in the paper).
input_size = 512
# An RGB image and a COCO keypoint results json for it; "" uses a generated image and its poses.
image_path = ""
keypoints_path = ""
out_dir = "converted"
"""
            ),
            _code(
                """
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import torch

from pose2seg_jax.conversion import convert, torch_model

os.makedirs(out_dir, exist_ok=True)
if not os.path.exists(weights_path):
    torch.manual_seed(0)
    twin = torch_model.TorchPose2Seg(**model_sizes)
    torch_model.randomize_batch_norm(twin)
    torch.save(twin.state_dict(), weights_path)
    print(f"{weights_path} not found: wrote random weights there (same layout) to run the notebook")
print(f"{weights_path}: {os.path.getsize(weights_path) / 1e6:.1f} MB")
"""
            ),
            _md("## PyTorch -> Flax\nThe same as `pose2seg-convert from-torch IN.pkl OUT_DIR`."),
            _code(
                """
state_dict = convert.load_torch_file(weights_path)
sizes = {k: v for k, v in model_sizes.items() if k in ("backbone_depth", "backbone_layout", "backbone_width", "fpn_features", "seg_units", "seg_width", "skeleton")}
variables = convert.torch_to_flax(state_dict, source=weights_path, **sizes)
flax_dir = os.path.abspath(os.path.join(out_dir, "flax"))
if not os.path.exists(flax_dir):
    convert.save_variables(flax_dir, variables)
count = sum(x.size for x in jax.tree.leaves(variables["params"]))
print(f"{len(state_dict)} PyTorch tensors -> {count:,} Flax parameters, saved to {flax_dir}")
"""
            ),
            _md("## Masks for an image"),
            _code(
                """
from IPython.display import display
from PIL import Image

from pose2seg_jax import Predictor, figures, visualization
from pose2seg_jax.data import images, synthetic
from pose2seg_jax.predict import read_keypoint_results

config = {"model": model_sizes, "data": {"input_size": input_size}}
predictor = Predictor.from_checkpoint(weights_path, config=config)
if image_path:
    image = images.read_image(image_path)
    detections, _ = read_keypoint_results(keypoints_path)
    keypoints = np.stack([d.keypoints for d in detections])
else:
    scene = synthetic.scene_for_index(seed=5, index=0, size=input_size // 2)
    image, keypoints = scene.image, scene.keypoints
masks = predictor.predict(image, keypoints)
print(f"{len(keypoints)} people -> masks {masks.shape}, {masks.mean(axis=(1, 2)).round(3)} of the image")
picture = visualization.overlay(image, masks, keypoints)
visualization.save_png(picture, os.path.join(out_dir, "overlay.png"))
display(Image.fromarray(picture))
"""
            ),
            _code(
                """
details = predictor.explain(image, keypoints)
display(Image.fromarray(figures.alignment_figure(image, keypoints, details, 0, predictor.templates)))
"""
            ),
            _md(
                """
## Flax -> PyTorch
The same as `pose2seg-convert to-torch OUT_DIR OUT.pth`. The PyTorch twin loads it strictly
and, given the matrices and skeleton features of the Flax run, computes the same logits.
"""
            ),
            _code(
                """
from pose2seg_jax.data import pipeline
from pose2seg_jax.ops import warps
from pose2seg_jax.ops.image import normalize_images

back = convert.flax_to_torch(convert.load_variables(flax_dir))
torch_path = os.path.join(out_dir, "pose2seg_from_jax.pth")
torch.save(back, torch_path)
twin = torch_model.TorchPose2Seg(**model_sizes).eval()
twin.load_state_dict(torch.load(torch_path, weights_only=True), strict=True)

matrix = warps.letterbox_matrix(*image.shape[:2], input_size)
batch_image = normalize_images(pipeline.letterbox_image(image, matrix, input_size)[None])
batch_kpts = pipeline.letterbox_keypoints(keypoints, matrix)[None]
valid = np.ones(batch_kpts.shape[:2], bool)
logits, aux = predictor.model.apply(predictor.variables, batch_image, batch_kpts, valid, predictor.templates)
with torch.no_grad():
    torch_logits = twin(
        torch.from_numpy(np.asarray(batch_image)).permute(0, 3, 1, 2),
        torch.from_numpy(np.asarray(aux["feature_to_align"])),
        torch.from_numpy(np.asarray(aux["skeleton"])).permute(0, 1, 4, 2, 3),
    )
diff = np.abs(np.asarray(logits) - torch_logits.permute(0, 1, 3, 4, 2).numpy()).max()
scale = np.abs(np.asarray(logits)).max()
print(f"wrote {torch_path}: {len(back)} tensors; max |logit difference| {diff:.2e} (logits up to {scale:.1f})")
assert diff <= 1e-3 * max(1.0, scale), diff
"""
            ),
        ]
    )


def main(out_dir: str = HERE) -> int:
    for name, build in (("colab_tpu.ipynb", colab_tpu), ("convert_weights.ipynb", convert_weights)):
        nb = build()
        nbformat.validate(nb)
        path = os.path.join(out_dir, name)
        nbformat.write(nb, path)
        print("wrote", path)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
