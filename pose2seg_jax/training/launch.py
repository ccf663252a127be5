"""What the entry scripts do: multi-host set-up, logging, then one library call."""

import json
import os

import jax
import ml_collections
from absl import flags, logging

_COORDINATOR = flags.DEFINE_string(
    "coordinator", None, "host:port of process 0 for multi-host runs (jax.distributed)."
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes (hosts).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")


def initialise_distributed() -> None:
    """Starts jax.distributed when asked for (flags) or when the cluster is auto-detected."""
    if not flags.FLAGS["verbosity"].present:
        # orbax and grain log every save and worker at INFO; --verbosity=0 brings them back.
        logging.set_verbosity(logging.WARNING)
    if _COORDINATOR.value:
        jax.distributed.initialize(
            coordinator_address=_COORDINATOR.value,
            num_processes=_NUM_PROCESSES.value,
            process_id=_PROCESS_ID.value,
        )
    logging.info(
        "process %d of %d, %d local devices, %d in all (%s)",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
        jax.devices()[0].platform,
    )


def train_main(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """``train.py``: trains and evaluates, then prints the final metrics as JSON."""
    from pose2seg_jax.training import train

    initialise_distributed()
    os.makedirs(workdir, exist_ok=True)
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json_best_effort(indent=2))
    metrics = train.train_and_evaluate(config, workdir)
    if metrics and jax.process_index() == 0:
        print(json.dumps({k: v for k, v in metrics.items()}, indent=2))
    return metrics


def eval_main(config, workdir: str, checkpoint: str | None, split: str) -> dict:
    """``eval.py``: evaluates and prints the metrics as JSON."""
    from pose2seg_jax.evaluation import evaluate

    initialise_distributed()
    metrics = evaluate.evaluate(config, workdir, checkpoint, split=split)
    if jax.process_index() == 0:
        print(json.dumps(metrics, indent=2))
    return metrics
