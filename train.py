r"""Trains Pose2Seg: `python train.py --config configs/ochuman.py --workdir DIR`.

Any config field can be overridden: `--config.train.batch_size=16`. Restarting with the same
workdir resumes from its latest checkpoint. On several hosts, run the same command on each
(jax.distributed reads the cluster from the environment on TPU pods and SLURM, or pass
--coordinator/--num_processes/--process_id).
"""

from absl import app, flags
from ml_collections import config_flags

from pose2seg_jax.training import launch

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder (checkpoints, metrics, pictures).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    launch.train_main(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    app.run(main)
