"""Counts XLA compilations per function during a tiny training run with periodic evaluation.

  python compile_worker.py TRAIN_JSON IMAGES VAL_JSON WORKDIR OUT_JSON

Used by tests/training/test_compilation.py; a separate process so the counts start from zero.
"""

import collections
import json
import sys

import jax

from configs import tiny
from pose2seg_jax.training import train

counts: collections.Counter = collections.Counter()


def listener(event: str, duration: float, **kwargs) -> None:
    if event == "/jax/core/compile/backend_compile_duration":
        counts[str(kwargs.get("fun_name"))] += 1


def main():
    train_json, images, val_json, workdir, out = sys.argv[1:6]
    config = tiny.get_config()
    config.data.train_annotations = train_json
    config.data.train_images = images
    config.data.val_annotations = val_json
    config.data.val_images = images
    config.train.num_steps = 3
    config.train.eval_every = 1
    config.train.checkpoint_every = 1
    jax.monitoring.register_event_duration_secs_listener(listener)
    train.train_and_evaluate(config, workdir)
    with open(out, "w") as f:
        json.dump(dict(counts), f, indent=1)


if __name__ == "__main__":
    main()
