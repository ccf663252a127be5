"""PyTorch <-> Flax weights for Pose2Seg, as a name map (REFERENCE.md section 11).

The Flax variables have three top-level modules: ``backbone`` (ResNet), ``fpn`` and ``segnet``.
PyTorch names map one to one:

    backbone.layer1.0.conv1.weight       params/backbone/layer1_0/conv1/kernel  (OIHW -> HWIO)
    backbone.bn1.running_mean            batch_stats/backbone/bn1/mean
    backbone.fpn_c4p4.bias               params/fpn/fpn_c4p4/bias
    segnet.layer1.0.downsample.1.weight  params/segnet/layer1_0/downsample_1/scale

Accepted spellings on the way in: ``pose2seg.seg_branch.*`` for ``segnet.*``, a ``module.``
prefix (DataParallel), and, with ``backbone_only``, torchvision ImageNet ResNet files
(``downsample.0/1`` -> ``conv4``/``bn4``, ``fc`` ignored). BatchNorm's ``num_batches_tracked``
has no Flax counterpart: it is dropped on the way in and written as a constant on the way out.

CLI::

    pose2seg-convert from-torch IN.(pth|pkl) OUT_DIR [--backbone-only] [size flags]
    pose2seg-convert to-torch CKPT_DIR OUT.pth
"""

import argparse
import os
import pickle
import re
import sys
import zipfile
from collections.abc import Mapping, Sequence
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np

from pose2seg_jax.models.fpn import FPN
from pose2seg_jax.models.resnet import ResNet
from pose2seg_jax.models.seg_module import SegModule

SKELETON_CHANNELS = 55
_BN_LEAVES = {"running_mean": "mean", "running_var": "var"}
_MAX_LISTED = 30


def expected_shapes(
    *,
    backbone_depth: int = 50,
    backbone_layout: str = "reference",
    backbone_width: int = 64,
    fpn_features: int = 256,
    seg_units: int = 10,
    seg_width: int = 256,
    skeleton: bool = True,
    backbone_only: bool = False,
) -> dict[str, dict]:
    """Shapes of the Flax variables of a model of these sizes, without allocating them.

    Args:
        backbone_depth, backbone_layout, backbone_width, fpn_features, seg_units, seg_width,
        skeleton: the model's sizes (``Pose2Seg`` fields).
        backbone_only: only the ResNet (no FPN, no SegModule).

    Returns:
        {'params': {...}, 'batch_stats': {...}} of ``jax.ShapeDtypeStruct`` with top-level
        modules 'backbone', 'fpn', 'segnet'.
    """
    key = jax.random.key(0)
    resnet = ResNet(depth=backbone_depth, layout=backbone_layout, width=backbone_width)
    image = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
    parts = {"backbone": jax.eval_shape(resnet.init, key, image)}
    if not backbone_only:
        stages = jax.eval_shape(resnet.apply, parts["backbone"], image)
        parts["fpn"] = jax.eval_shape(FPN(features=fpn_features).init, key, stages)
        in_ch = fpn_features + (SKELETON_CHANNELS if skeleton else 0)
        aligned = jax.ShapeDtypeStruct((1, 16, 16, in_ch), jnp.float32)
        segnet = SegModule(num_units=seg_units, width=seg_width)
        parts["segnet"] = jax.eval_shape(segnet.init, key, aligned)
    out: dict[str, dict] = {"params": {}, "batch_stats": {}}
    for name, variables in parts.items():
        for collection in out:
            if collection in variables:
                out[collection][name] = flax.core.unfreeze(variables[collection])
    return out


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu()
        if value.dtype.is_floating_point:
            value = value.float()
        return value.numpy()
    return np.asarray(value)


def _torch_module_path(name: str) -> tuple[str, ...]:
    """'layer1.0.downsample.1' -> ('layer1_0', 'downsample_1'): a digit joins its parent."""
    out: list[str] = []
    for token in name.split("."):
        if token.isdigit() and out:
            out[-1] = f"{out[-1]}_{token}"
        else:
            out.append(token)
    return tuple(out)


def _canonical_key(key: str, backbone_only: bool) -> str | None:
    """Normalises accepted spellings to ``backbone.*``/``segnet.*``; None: ignore the key."""
    if key.startswith("module."):
        key = key[len("module.") :]
    if key.startswith("pose2seg.seg_branch."):
        key = "segnet." + key[len("pose2seg.seg_branch.") :]
    if backbone_only:
        if key.startswith("fc.") or key.startswith("backbone.fc."):
            return None
        if not key.startswith("backbone."):
            key = "backbone." + key
        key = key.replace(".downsample.0.", ".conv4.").replace(".downsample.1.", ".bn4.")
    return key


def _format_problems(problems: dict[str, list[str]]) -> str:
    lines = []
    for what, names in problems.items():
        if names:
            shown = ", ".join(names[:_MAX_LISTED])
            more = f" (and {len(names) - _MAX_LISTED} more)" if len(names) > _MAX_LISTED else ""
            lines.append(f"{len(names)} {what}: {shown}{more}")
    return "; ".join(lines)


def torch_to_flax(
    state_dict: Mapping[str, Any],
    *,
    backbone_only: bool = False,
    source: str = "state dict",
    **sizes: Any,
) -> dict[str, dict]:
    """Converts a PyTorch state dict (tensors or arrays) to Flax variables.

    Args:
        state_dict: name -> tensor, in the reference's names (see the module docstring).
        backbone_only: convert only the ResNet (e.g. torchvision ImageNet weights); the FPN and
            SegModule are then absent from the result.
        source: how to name the input in error messages (e.g. the file path).
        **sizes: model sizes for ``expected_shapes`` (defaults: the reference model).

    Returns:
        {'params': ..., 'batch_stats': ...} nested dicts of float32 NumPy arrays (kernels HWIO).

    Raises:
        ValueError: listing every missing, unexpected and mis-shaped tensor.
    """
    expected = expected_shapes(backbone_only=backbone_only, **sizes)
    flat_expected = {
        (collection, *path): leaf
        for collection in expected
        for path, leaf in flax.traverse_util.flatten_dict(expected[collection]).items()
    }
    bn_modules = {key[1:-1] for key in flat_expected if key[0] == "batch_stats"}
    flat: dict[tuple[str, ...], np.ndarray] = {}
    unexpected: list[str] = []
    misshaped: list[str] = []
    misshaped_targets: set[tuple[str, ...]] = set()
    for raw_key, value in state_dict.items():
        key = _canonical_key(raw_key, backbone_only)
        if key is None:
            continue
        top, _, rest = key.partition(".")
        module, _, leaf = rest.rpartition(".")
        path = _torch_module_path(module)
        if top == "backbone" and path and path[0].startswith("fpn_"):
            top = "fpn"
        path = (top, *path)
        if leaf == "num_batches_tracked":
            if path not in bn_modules:
                unexpected.append(raw_key)
            continue
        if leaf in _BN_LEAVES:
            target = ("batch_stats", *path, _BN_LEAVES[leaf])
        elif leaf == "bias":
            target = ("params", *path, "bias")
        elif leaf == "weight":
            name = "kernel" if ("params", *path, "kernel") in flat_expected else "scale"
            target = ("params", *path, name)
        else:
            target = None
        if target is None or target not in flat_expected:
            unexpected.append(raw_key)
            continue
        array = _to_numpy(value)
        if target[-1] == "kernel" and array.ndim == 4:
            array = array.transpose(2, 3, 1, 0)
        want = tuple(flat_expected[target].shape)
        if array.shape != want:
            misshaped.append(f"{raw_key} {tuple(array.shape)} (expected {want} in Flax layout)")
            misshaped_targets.add(target)
            continue
        flat[target] = array.astype(np.float32)
    missing = [
        "/".join(key) for key in flat_expected if key not in flat and key not in misshaped_targets
    ]
    if missing or unexpected or misshaped:
        problems = _format_problems(
            {
                "missing tensors (Flax names)": missing,
                "unexpected tensors": unexpected,
                "mis-shaped tensors": misshaped,
            }
        )
        fix = (
            "check the model sizes (depth, layout, widths, seg units) and, for a torchvision "
            "ImageNet ResNet, pass backbone_only=True (CLI: --backbone-only)"
        )
        raise ValueError(f"{source} does not match the Pose2Seg model: {problems}. Fix: {fix}.")
    variables: dict[str, dict] = {"params": {}, "batch_stats": {}}
    for key, array in flat.items():
        variables[key[0]][key[1:]] = array
    return {c: flax.traverse_util.unflatten_dict(v) for c, v in variables.items() if v}


def key_name(flax_key: tuple[str, ...]) -> str:
    """The PyTorch state-dict name of a flat Flax key ('params', 'backbone', 'layer1_0', ...)."""
    collection, top, *modules, leaf = flax_key
    prefix = "segnet" if top == "segnet" else "backbone"
    parts = [prefix]
    for module in modules:
        match = re.fullmatch(r"(.+)_(\d+)", module)
        parts.extend(match.groups() if match else (module,))
    if collection == "batch_stats":
        parts.append({"mean": "running_mean", "var": "running_var"}[leaf])
    else:
        parts.append("bias" if leaf == "bias" else "weight")
    return ".".join(parts)


def flax_to_torch(variables: Mapping[str, Any], *, num_batches_tracked: int = 0) -> dict:
    """Converts Flax variables to a PyTorch state dict with the reference's names.

    Args:
        variables: {'params': ..., 'batch_stats': ...} (arrays of any float dtype).
        num_batches_tracked: value written for every BatchNorm's ``num_batches_tracked``.

    Returns:
        dict name -> torch.Tensor (float32; kernels OIHW), loadable with
        ``TorchPose2Seg(...).load_state_dict(sd, strict=True)``.
    """
    import torch

    state: dict[str, torch.Tensor] = {}
    for collection in ("params", "batch_stats"):
        flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(variables.get(collection, {})))
        for path, value in flat.items():
            array = np.asarray(value, dtype=np.float32)
            if path[-1] == "kernel":
                array = array.transpose(3, 2, 0, 1)
            name = key_name((collection, *path))
            state[name] = torch.from_numpy(np.ascontiguousarray(array))
            if collection == "batch_stats" and path[-1] == "mean":
                prefix = name[: -len("running_mean")]
                state[prefix + "num_batches_tracked"] = torch.tensor(
                    num_batches_tracked, dtype=torch.int64
                )
    return state


def load_torch_file(path: str | os.PathLike) -> dict:
    """Reads a PyTorch weights file safely (``torch.load(weights_only=True)``: no code runs).

    Accepts a plain state dict or a checkpoint dict holding one under 'state_dict' or 'model'.

    Args:
        path: a .pth/.pkl file written by ``torch.save``.

    Returns:
        dict name -> torch.Tensor.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is truncated, corrupt, holds code or objects other than tensors.
    """
    import torch

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights file {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"{path} was refused by the safe loader (torch.load weights_only=True): it holds "
            f"Python objects or code besides tensors, which are never executed. Re-save it "
            f"as a plain state dict, torch.save(model.state_dict(), path). Detail: {error}"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as error:
        raise ValueError(
            f"{path} is not a readable PyTorch weights file (truncated or corrupt?): "
            f"{type(error).__name__}: {error}. Fix: download or export it again."
        ) from None
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict) or not all(torch.is_tensor(v) for v in obj.values()):
        raise ValueError(
            f"{path} does not hold a state dict of tensors (got {type(obj).__name__}); "
            "save one with torch.save(model.state_dict(), path)"
        )
    return obj


def save_variables(directory: str | os.PathLike, variables: Mapping[str, Any]) -> None:
    """Writes variables as an orbax checkpoint at ``directory`` (must not exist)."""
    import orbax.checkpoint as ocp

    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(os.path.abspath(directory), dict(variables))
    checkpointer.wait_until_finished()


def load_variables(directory: str | os.PathLike) -> dict:
    """Reads variables written by ``save_variables`` (NumPy/JAX arrays, plain dicts)."""
    import orbax.checkpoint as ocp

    directory = os.path.abspath(directory)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"checkpoint directory {directory} does not exist")
    return ocp.StandardCheckpointer().restore(directory)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pose2seg-convert", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    a = sub.add_parser("from-torch", help="PyTorch .pth/.pkl -> orbax checkpoint of variables")
    a.add_argument("input")
    a.add_argument("output_dir")
    a.add_argument("--backbone-only", action="store_true", help="ImageNet ResNet (torchvision)")
    a.add_argument("--depth", type=int, default=50)
    a.add_argument("--layout", default="reference", choices=("reference", "torchvision"))
    a.add_argument("--width", type=int, default=64)
    a.add_argument("--fpn-features", type=int, default=256)
    a.add_argument("--seg-units", type=int, default=10)
    a.add_argument("--seg-width", type=int, default=256)
    a.add_argument("--no-skeleton", action="store_true")
    b = sub.add_parser("to-torch", help="orbax checkpoint of variables -> PyTorch .pth")
    b.add_argument("checkpoint")
    b.add_argument("output")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point ``pose2seg-convert``."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "from-torch":
            state = load_torch_file(args.input)
            variables = torch_to_flax(
                state,
                backbone_only=args.backbone_only,
                source=args.input,
                backbone_depth=args.depth,
                backbone_layout=args.layout,
                backbone_width=args.width,
                fpn_features=args.fpn_features,
                seg_units=args.seg_units,
                seg_width=args.seg_width,
                skeleton=not args.no_skeleton,
            )
            save_variables(args.output_dir, variables)
            count = sum(a.size for a in jax.tree.leaves(variables.get("params", {})))
            print(f"wrote {args.output_dir}: {count:,} parameters")
        else:
            import torch

            state = flax_to_torch(load_variables(args.checkpoint))
            torch.save(state, args.output)
            print(f"wrote {args.output}: {len(state)} tensors")
    except (ValueError, FileNotFoundError) as error:
        print(f"pose2seg-convert: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
