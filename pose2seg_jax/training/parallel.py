"""Data parallelism over every device of every host, in ``jax.pmap``'s model.

A per-device step (``training/steps.py``) runs under ``jax.shard_map`` over a one-axis mesh
named ``data`` that spans all devices of all processes; the state is replicated (``P()``) and
the batch is split on its leading axis (``P('data')``). Each process feeds only its own shard of
the data (``jax.make_array_from_process_local_data``).
"""

import ctypes
import functools
import json
from collections.abc import Callable

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

AXIS = "data"


def data_mesh() -> Mesh:
    """A 1-D mesh named ``data`` over all devices (Auto axis type: plain arrays are accepted)."""
    return Mesh(np.asarray(jax.devices()), (AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(AXIS))


def global_batch(mesh: Mesh, local_batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    """Assembles each process's local batch into global arrays split over the ``data`` axis."""
    sharding = sharded(mesh)
    return {
        k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
        for k, v in local_batch.items()
    }


def replicate(mesh: Mesh, tree):
    """Places a pytree (e.g. the train state) on every device."""
    return jax.device_put(tree, replicated(mesh))


def shard_step(step: Callable, mesh: Mesh, *, donate_state: bool = True, **static) -> Callable:
    """Jits ``step(state, batch, templates)`` as a per-device function over the ``data`` axis.

    Args:
      step: a step function taking ``axis_name`` and the keyword arguments in ``static``.
      mesh: the data mesh.
      donate_state: donate the input state's buffers to the output state.
      **static: keyword arguments bound into the step (sizes, flags, schedule).

    Returns:
      ``f(state, batch, templates) -> (state, metrics)``, jitted.
    """
    per_device = functools.partial(step, axis_name=AXIS, **static)
    mapped = jax.shard_map(
        per_device, mesh=mesh, in_specs=(P(), P(AXIS), P()), out_specs=(P(), P())
    )
    return jax.jit(mapped, donate_argnums=(0,) if donate_state else ())


def compile_ahead(jitted: Callable, *args):
    """Compiles ``jitted`` for ``args`` now and returns the executable, then frees host memory.

    The executable refuses arguments of other shapes or shardings instead of recompiling (the
    training loop's shapes are static, so a change is a bug to report, not to absorb). After
    compiling, the heap that the compiler freed is handed back to the OS (``release_free_heap``).

    Args:
      jitted: a ``jax.jit``-ed function (e.g. from ``shard_step``).
      *args: arguments of the shapes, dtypes and shardings it will be called with.

    Returns:
      The compiled executable, called like ``jitted``.
    """
    compiled = jitted.lower(*args).compile()
    release_free_heap()
    return compiled


def release_free_heap() -> None:
    """Returns glibc's free heap pages to the OS (``malloc_trim(0)``); a no-op elsewhere.

    Why by hand: XLA's compiler frees hundreds of MiB into glibc's arenas, in pieces that the
    step's large buffers (allocated with ``mmap``) never reuse, so on a CPU host they stay in
    the process's resident memory for the whole run: 666 MiB at the paper's sizes
    (benchmarks/RESULTS.md). No library exposes the call.
    """
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def shard_predict(step: Callable, mesh: Mesh, **static) -> Callable:
    """Jits ``step(variables, batch, templates) -> outputs`` split over the ``data`` axis."""
    per_device = functools.partial(step, **static)
    mapped = jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P(AXIS), P()), out_specs=P(AXIS))
    return jax.jit(mapped)


def allgather_json(obj) -> list:
    """Every process's JSON-serialisable ``obj``, in process order (a collective: all call it).

    Used for what orbax's ``JsonSave`` and file writing see only on process 0: the input
    iterator states of all processes and process 0's evaluation metrics.
    """
    if jax.process_count() == 1:
        return [obj]
    from jax.experimental import multihost_utils

    data = np.frombuffer(json.dumps(obj).encode(), np.uint8)
    sizes = multihost_utils.process_allgather(np.int32(data.size))
    padded = np.zeros(int(np.max(sizes)), np.uint8)
    padded[: data.size] = data
    rows = multihost_utils.process_allgather(padded)
    return [json.loads(bytes(row[:n]).decode()) for row, n in zip(rows, np.ravel(sizes))]


def allgather_rows(tree):
    """A pytree of per-process NumPy batches (leading axis) -> the global batches, on every
    process, rows in process order (the order of ``global_batch``'s mesh)."""
    if jax.process_count() == 1:
        return tree
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(tree, tiled=True)
