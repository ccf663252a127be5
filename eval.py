r"""Evaluates Pose2Seg: `python eval.py --config configs/ochuman.py --workdir DIR`.

Uses the latest checkpoint of the workdir, or `--checkpoint PATH` (our checkpoint, or a PyTorch
weights file). Writes DIR/eval/<split>_metrics.json and DIR/eval/<split>_segm_results.json.
"""

from absl import app, flags
from ml_collections import config_flags

from pose2seg_jax.training import launch

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder (and checkpoints to evaluate).")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Checkpoint or PyTorch file to evaluate.")
_SPLIT = flags.DEFINE_string("split", "val", "Which split of the config: 'val' or 'train'.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    launch.eval_main(_CONFIG.value, _WORKDIR.value, _CHECKPOINT.value, _SPLIT.value)


if __name__ == "__main__":
    app.run(main)
