"""Predictor: masks for your own images from pose keypoints.

    predictor = Predictor.from_checkpoint("runs/demo")          # a training workdir
    masks = predictor.predict(image, keypoints)                 # (n, H, W) bool

``image`` is RGB uint8 (H, W, 3); ``keypoints`` (n, 17, 3) of (x, y, v) in image pixels, COCO
order, v = 0 for a missing joint. Each image is letterboxed to the model's input size and its
people padded to a bucketed count (1, 2, 4, 8, ...), so calls with any image size and a similar
number of people reuse one compiled network. The predicted maps are pasted back with
``warps.paste_masks_image`` (canvas bucketed to multiples of 128 pixels).

A checkpoint is a training workdir (its ``config.json`` gives the model sizes), its
``checkpoints`` folder or one step folder (the config is looked up two folders up, or given),
an orbax folder written by ``pose2seg-convert from-torch`` (give the config when it is not the
paper's model), or a PyTorch ``.pth``/``.pkl``/``.pt`` state dict (the paper's model unless a
config is given).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from pose2seg_jax.data import pipeline
from pose2seg_jax.models.pose2seg import Pose2Seg
from pose2seg_jax.ops import templates as templates_lib
from pose2seg_jax.ops import warps
from pose2seg_jax.ops.image import normalize_images
from pose2seg_jax.ops.keypoints import NUM_KEYPOINTS
from pose2seg_jax.training import steps

TORCH_SUFFIXES = (".pth", ".pkl", ".pt")
# Config fields (config.model.*) that are Pose2Seg fields; the rest of a config is ignored here.
_MODEL_FIELDS = (
    "backbone_depth",
    "backbone_layout",
    "backbone_width",
    "fpn_features",
    "seg_units",
    "seg_width",
    "align_size",
    "feature_stride",
    "alignment",
    "skeleton",
    "mapping",
    "dtype",
)
_TORCH_SIZES = (
    "backbone_depth",
    "backbone_layout",
    "backbone_width",
    "fpn_features",
    "seg_units",
    "seg_width",
    "skeleton",
)


def people_bucket(n: int) -> int:
    """The padded person count for ``n`` people: the next power of two (at least 1)."""
    return 1 if n <= 1 else 1 << (int(n) - 1).bit_length()


def _as_dict(config: Any) -> dict:
    """A config (ConfigDict, dict, json/py file or workdir path) as a plain nested dict."""
    if config is None:
        return {}
    if isinstance(config, str | os.PathLike):
        path = os.fspath(config)
        if os.path.isdir(path):
            path = os.path.join(path, "config.json")
        if path.endswith(".py"):
            spec = importlib.util.spec_from_file_location("_pose2seg_config", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return _as_dict(module.get_config())
        if not os.path.isfile(path):
            raise FileNotFoundError(f"config {path} does not exist")
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    if hasattr(config, "to_dict"):
        return config.to_dict()
    if isinstance(config, Mapping):
        return {k: _as_dict(v) if isinstance(v, Mapping) else v for k, v in config.items()}
    raise TypeError(f"config must be a ConfigDict, a dict or a path, got {type(config).__name__}")


def _find_config(path: str) -> str | None:
    """``config.json`` of the workdir holding ``path`` (itself, checkpoints, or a step folder)."""
    folder = os.path.abspath(path)
    for _ in range(3):
        candidate = os.path.join(folder, "config.json")
        if os.path.isfile(candidate):
            return candidate
        folder = os.path.dirname(folder)
    return None


def _load_variables(path: str, sizes: dict) -> dict:
    """Variables of our checkpoint or of a PyTorch file (converted with ``sizes``)."""
    if os.path.isfile(path):
        if not path.endswith(TORCH_SUFFIXES):
            raise ValueError(
                f"{path} is a file but not a PyTorch weights file ({', '.join(TORCH_SUFFIXES)}); "
                "pass a training workdir, its checkpoints folder, a step folder or a .pth file"
            )
        from pose2seg_jax.conversion import convert

        state = convert.load_torch_file(path)
        return convert.torch_to_flax(
            state, source=path, **{k: sizes[k] for k in _TORCH_SIZES if k in sizes}
        )
    if not os.path.isdir(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    from pose2seg_jax.training import checkpoint

    if os.path.isdir(os.path.join(path, "checkpoints")):
        path = os.path.join(path, "checkpoints")
    return checkpoint.restore_variables(path)


def _check_shapes(model: Pose2Seg, variables: dict, input_size: int, source: str) -> None:
    """Raises a ValueError listing how ``variables`` differ from what ``model`` expects."""
    abstract = jax.eval_shape(
        lambda: model.init(
            jax.random.key(0),
            jnp.zeros((1, input_size, input_size, 3)),
            jnp.zeros((1, 1, NUM_KEYPOINTS, 3)),
            jnp.ones((1, 1), bool),
            jnp.zeros((2, NUM_KEYPOINTS, 3)),
        )
    )
    want = {
        jax.tree_util.keystr(k): v.shape
        for k, v in jax.tree_util.tree_leaves_with_path(
            {c: abstract.get(c, {}) for c in ("params", "batch_stats")}
        )
    }
    have = {
        jax.tree_util.keystr(k): np.shape(v)
        for k, v in jax.tree_util.tree_leaves_with_path(
            {c: variables.get(c, {}) for c in ("params", "batch_stats")}
        )
    }
    problems = [f"missing {k}" for k in want if k not in have]
    problems += [f"unexpected {k}" for k in have if k not in want]
    problems += [
        f"{k}: checkpoint {have[k]}, model {want[k]}"
        for k in want
        if k in have and tuple(have[k]) != tuple(want[k])
    ]
    if problems:
        listed = "; ".join(problems[:8]) + (
            f" (and {len(problems) - 8} more)" * (len(problems) > 8)
        )
        raise ValueError(
            f"{source} does not fit the configured model ({len(problems)} differences: {listed}). "
            "Pass the config the checkpoint was trained with (config=... or --config)."
        )


@dataclasses.dataclass
class _Prepared:
    """One image letterboxed, its people padded."""

    image: np.ndarray  # (S, S, 3) uint8
    keypoints: np.ndarray  # (P, 17, 3) input coordinates
    valid: np.ndarray  # (P,)
    letterbox: np.ndarray  # (3, 3) image -> input
    height: int
    width: int
    n: int


class Predictor:
    """Image + keypoints -> instance masks, with one compiled network per people bucket.

    Attributes:
      model: the Flax ``Pose2Seg``.
      variables: {'params', 'batch_stats'} on the default device.
      templates: (T, 17, 3) pose templates.
      input_size: side of the letterboxed network input.
      batch_size: images per network call in ``predict_batch`` (the batch is padded to it).
      traces: how many times the network was traced (compiled); for tests and curiosity.
    """

    def __init__(
        self,
        model: Pose2Seg,
        variables: Mapping[str, Any],
        templates: np.ndarray,
        *,
        input_size: int = 512,
        batch_size: int = 4,
    ):
        """Args:
        model: the network (sizes must match ``variables``).
        variables: {'params', 'batch_stats'}.
        templates: (T, 17, 3) templates in unit coordinates (``templates.load_templates``).
        input_size: side of the square network input.
        batch_size: images per call of ``predict_batch``.
        """
        self.model = model
        self.variables = jax.tree.map(jnp.asarray, dict(variables))
        self.templates = jnp.asarray(templates, jnp.float32)
        if self.templates.ndim != 3 or self.templates.shape[1:] != (NUM_KEYPOINTS, 3):
            raise ValueError(f"templates must be (T, 17, 3), got {self.templates.shape}")
        self.input_size = int(input_size)
        self.batch_size = max(1, int(batch_size))
        self.traces = 0

        def forward(variables, batch, templates):
            self.traces += 1  # Runs at trace time only: counts compilations.
            return steps.predict_step(variables, batch, templates, apply_fn=model.apply)

        def explain(variables, batch, templates):
            self.traces += 1
            logits, aux = model.apply(
                variables,
                normalize_images(batch["image"]),
                batch["keypoints"],
                batch["valid"],
                templates,
                train=False,
            )
            aux = dict(aux)
            aux["probs"] = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)[..., 1]
            return aux

        self._forward = jax.jit(forward)
        self._explain = jax.jit(explain)

    # ---- construction ----------------------------------------------------------------------

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike,
        templates: str | os.PathLike | np.ndarray | None = None,
        config: Any = None,
        *,
        batch_size: int | None = None,
    ) -> Predictor:
        """Loads a checkpoint (see the module docstring for what ``path`` may be).

        Args:
          path: workdir, checkpoints folder, step folder, converted orbax folder, or PyTorch file.
          templates: a template file, a (T, 17, 3) array, or None (the config's, else the
            packaged default).
          config: the run's config (ConfigDict, dict, ``config.json`` or ``configs/*.py`` path);
            None: the ``config.json`` found at or above ``path``, else the paper's model.
          batch_size: images per network call of ``predict_batch`` (default: the config's
            ``eval.batch_size``, else 4).

        Raises:
          FileNotFoundError: no such checkpoint.
          ValueError: the checkpoint does not fit the model of the config.
        """
        path = os.fspath(path)
        if config is None and not path.endswith(TORCH_SUFFIXES):
            config = _find_config(path)
        cfg = _as_dict(config)
        model_cfg = dict(cfg.get("model", {}))
        model = model_from_config(model_cfg)
        sizes = {f.name: getattr(model, f.name) for f in dataclasses.fields(model)}
        input_size = int(cfg.get("data", {}).get("input_size", 512))
        variables = _load_variables(path, sizes)
        variables = {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}
        _check_shapes(model, variables, input_size, path)
        if templates is None:
            templates = cfg.get("templates")
        if templates is None or isinstance(templates, str | os.PathLike):
            templates = templates_lib.load_templates(templates)
        if batch_size is None:
            batch_size = int(cfg.get("eval", {}).get("batch_size", 4))
        return cls(model, variables, templates, input_size=input_size, batch_size=batch_size)

    # ---- host-side preparation -------------------------------------------------------------

    def _prepare(self, image: np.ndarray, keypoints: np.ndarray, people: int, where: str):
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"{where}: image must be RGB (H, W, 3), got shape {image.shape}")
        if image.dtype != np.uint8:
            raise ValueError(
                f"{where}: image must be uint8 (0..255), got {image.dtype}; "
                "convert with np.clip(x, 0, 255).astype(np.uint8)"
            )
        keypoints = np.asarray(keypoints, np.float32).reshape(-1, NUM_KEYPOINTS, 3)
        n = len(keypoints)
        warps.check_keypoints(keypoints[None], np.ones((1, n), bool), source=where)
        h, w = image.shape[:2]
        matrix = warps.letterbox_matrix(h, w, self.input_size)
        padded = np.zeros((people, NUM_KEYPOINTS, 3), np.float32)
        padded[:n] = pipeline.letterbox_keypoints(keypoints, matrix)
        valid = np.zeros((people,), bool)
        valid[:n] = True
        return _Prepared(
            image=pipeline.letterbox_image(image, matrix, self.input_size),
            keypoints=padded,
            valid=valid,
            letterbox=matrix,
            height=h,
            width=w,
            n=n,
        )

    @staticmethod
    def _batch(prepared: Sequence[_Prepared], batch_size: int) -> dict[str, np.ndarray]:
        pad = batch_size - len(prepared)
        image = np.stack([p.image for p in prepared])
        keypoints = np.stack([p.keypoints for p in prepared])
        valid = np.stack([p.valid for p in prepared])
        if pad:
            image = np.concatenate([image, np.zeros((pad, *image.shape[1:]), np.uint8)])
            keypoints = np.concatenate([keypoints, np.zeros((pad, *keypoints.shape[1:]))])
            valid = np.concatenate([valid, np.zeros((pad, valid.shape[1]), bool)])
        return {"image": image, "keypoints": keypoints.astype(np.float32), "valid": valid}

    @staticmethod
    def _paste(probs: np.ndarray, input_to_align: np.ndarray, p: _Prepared) -> np.ndarray:
        # All padded people are pasted (then dropped) so the paste compiles once per bucket.
        image_to_align = input_to_align @ p.letterbox.astype(np.float32)
        masks = warps.paste_masks_image(probs, image_to_align, p.height, p.width)
        return masks[: p.n]

    # ---- public API ------------------------------------------------------------------------

    def predict(self, image: np.ndarray, keypoints: np.ndarray) -> np.ndarray:
        """Masks of the people of one image.

        Args:
          image: (H, W, 3) uint8 RGB.
          keypoints: (n, 17, 3) of (x, y, v) in image pixels (v = 0: missing joint); n may be 0.

        Returns:
          (n, H, W) bool masks, in the order of ``keypoints``.

        Raises:
          ValueError: a wrong shape or dtype, or NaN/inf keypoints (naming the person and joints).
        """
        return self.predict_batch([image], [keypoints], batch_size=1)[0]

    def predict_batch(
        self,
        images: Sequence[np.ndarray],
        keypoints_list: Sequence[np.ndarray],
        *,
        batch_size: int | None = None,
    ) -> list[np.ndarray]:
        """Masks for many images, ``batch_size`` images per network call.

        Args:
          images: (H_i, W_i, 3) uint8 RGB images (sizes may differ).
          keypoints_list: (n_i, 17, 3) keypoints per image.
          batch_size: images per call (default ``self.batch_size``); the last call is padded.

        Returns:
          A list of (n_i, H_i, W_i) bool masks.
        """
        if len(images) != len(keypoints_list):
            raise ValueError(
                f"predict_batch: {len(images)} images but {len(keypoints_list)} keypoint arrays"
            )
        batch_size = self.batch_size if batch_size is None else max(1, int(batch_size))
        out: list[np.ndarray] = []
        for start in range(0, len(images), batch_size):
            chunk_images = images[start : start + batch_size]
            chunk_kpts = [
                np.asarray(k, np.float32).reshape(-1, NUM_KEYPOINTS, 3)
                for k in keypoints_list[start : start + batch_size]
            ]
            people = people_bucket(max(len(k) for k in chunk_kpts))
            prepared = [
                self._prepare(img, kp, people, f"image {start + i}")
                for i, (img, kp) in enumerate(zip(chunk_images, chunk_kpts))
            ]
            if not any(p.n for p in prepared):
                out.extend(np.zeros((0, p.height, p.width), bool) for p in prepared)
                continue
            batch = self._batch(prepared, batch_size)
            result = jax.device_get(self._forward(self.variables, batch, self.templates))
            for b, p in enumerate(prepared):
                if p.n == 0:
                    out.append(np.zeros((0, p.height, p.width), bool))
                else:
                    out.append(self._paste(result["probs"][b], result["input_to_align"][b], p))
        return out

    def explain(self, image: np.ndarray, keypoints: np.ndarray) -> dict[str, np.ndarray]:
        """Masks plus what the network saw, per person (for ``figures.alignment_figure``).

        Args:
          image: (H, W, 3) uint8 RGB.
          keypoints: (n, 17, 3) in image pixels.

        Returns:
          dict of NumPy arrays: 'masks' (n, H, W) bool, 'probs' (n, A, A) person probability in
          the align frame, 'template_index' (n,) (-1: default matrix), 'image_to_align'
          (n, 3, 3), 'aligned' (n, A, A, C) sampled features, 'skeleton' (n, A, A, 55) when the
          model uses it, 'keypoints_align' (n, 17, 3) the keypoints in the align frame.
        """
        keypoints = np.asarray(keypoints, np.float32).reshape(-1, NUM_KEYPOINTS, 3)
        p = self._prepare(image, keypoints, people_bucket(len(keypoints)), "image")
        batch = self._batch([p], 1)
        aux = jax.device_get(self._explain(self.variables, batch, self.templates))
        n = p.n
        image_to_align = aux["input_to_align"][0] @ p.letterbox.astype(np.float32)
        masks = warps.paste_masks_image(aux["probs"][0], image_to_align, p.height, p.width)[:n]
        details = {
            "masks": masks,
            "probs": np.asarray(aux["probs"][0][:n]),
            "template_index": np.asarray(aux["template_index"][0][:n]),
            "image_to_align": np.asarray(image_to_align[:n]),
            "aligned": np.asarray(aux["aligned"][0][:n], np.float32),
            "keypoints_align": np.stack(
                [pipeline.letterbox_keypoints(keypoints[i], image_to_align[i]) for i in range(n)]
            )
            if n
            else np.zeros((0, NUM_KEYPOINTS, 3), np.float32),
        }
        if "skeleton" in aux:
            details["skeleton"] = np.asarray(aux["skeleton"][0][:n], np.float32)
        return details


def model_from_config(model_config: Mapping[str, Any] | None = None, **overrides) -> Pose2Seg:
    """A ``Pose2Seg`` from ``config.model`` fields (missing fields: the paper's model).

    Args:
      model_config: the ``model`` section of a config, as a dict or ConfigDict.
      **overrides: further Pose2Seg fields (e.g. ``seg_chunk``).
    """
    model_config = dict(model_config or {})
    fields = {k: model_config[k] for k in _MODEL_FIELDS if k in model_config}
    if "dtype" in fields:
        fields["dtype"] = jnp.dtype(fields["dtype"])
    fields.update(overrides)
    return Pose2Seg(**fields)
