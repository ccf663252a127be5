"""Checkpoints with orbax: asynchronous, keep the last N, state plus the input iterator's state.

A checkpoint step holds two items: ``state`` (params, optimiser state, BatchNorm statistics,
step, random key) and ``data`` (the input iterator's state as JSON). Steps are written to a
temporary directory and renamed when complete, so a run killed mid-save leaves the previous step
as the latest; restarting with the same workdir resumes from it.
"""

import os
from typing import Any

import jax
import orbax.checkpoint as ocp


class Checkpointer:
    """A thin wrapper over ``ocp.CheckpointManager`` with the two items of a training run."""

    def __init__(self, directory: str, *, keep: int = 3, asynchronous: bool = True):
        """Args:
        directory: where step folders go (created if needed).
        keep: how many of the latest checkpoints to keep.
        asynchronous: write in a background thread (the step loop goes on).
        """
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep,
            enable_async_checkpointing=asynchronous,
            cleanup_tmp_directories=True,
            create=True,
        )
        self.manager = ocp.CheckpointManager(
            self.directory, item_names=("state", "data"), options=options
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: Any, data_state: dict | None = None, *, force=False) -> bool:
        """Starts saving ``state`` (and the iterator state) as ``step``; returns whether it did."""
        items = {"state": ocp.args.StandardSave(state)}
        if data_state is not None:
            items["data"] = ocp.args.JsonSave(data_state)
        return self.manager.save(step, args=ocp.args.Composite(**items), force=force)

    def restore(self, state_template: Any, step: int | None = None) -> tuple[Any, dict | None]:
        """Restores ``(state, data_state)`` of ``step`` (default: latest) into the template's
        structure, shapes and shardings."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state_template)
        items = {"state": ocp.args.StandardRestore(abstract)}
        if self._has_item(step, "data"):
            items["data"] = ocp.args.JsonRestore()
        restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        return restored["state"], restored.get("data") if "data" in items else None

    def _has_item(self, step: int, name: str) -> bool:
        return os.path.isdir(os.path.join(self.directory, str(step), name))

    def wait(self) -> None:
        """Blocks until pending asynchronous saves are on disk."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def restore_variables(path: str, sharding: jax.sharding.Sharding | None = None) -> dict:
    """Reads ``{'params', 'batch_stats'}`` from a checkpoint written by training or conversion.

    Args:
      path: a workdir's ``checkpoints`` folder (latest step), one step folder, or an orbax
        folder written by ``pose2seg-convert from-torch``.
      sharding: where to place every array (e.g. replicated over the data mesh). Needed with
        several processes: without it orbax restores each array with its saved sharding, which
        may name devices another process cannot address. None: the saved placement.
    """
    path = os.path.abspath(path)
    if os.path.isdir(os.path.join(path, "state")):
        return restore_variables(os.path.join(path, "state"), sharding)
    steps = [int(d) for d in os.listdir(path) if d.isdigit()] if os.path.isdir(path) else []
    if steps:
        return restore_variables(os.path.join(path, str(max(steps))), sharding)
    checkpointer = ocp.StandardCheckpointer()
    if sharding is None:
        return _variables_of(checkpointer.restore(path))
    metadata = checkpointer.metadata(path)
    tree = getattr(metadata, "item_metadata", metadata)
    tree = getattr(tree, "tree", tree)
    target = jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype, sharding=sharding),
        dict(tree),
        is_leaf=lambda m: hasattr(m, "shape") and hasattr(m, "dtype"),
    )
    return _variables_of(checkpointer.restore(path, target))


def _variables_of(tree: dict) -> dict:
    if "params" not in tree:
        raise ValueError(f"checkpoint has no 'params' (keys: {sorted(tree)})")
    return {"params": tree["params"], "batch_stats": tree.get("batch_stats", {})}
