r"""A tiny configuration for tests: every code path, seconds on one CPU core.

  python train.py --config configs/tiny.py --workdir /tmp/tiny \
    --config.data.train_annotations=DATA/train.json --config.data.train_images=DATA
"""

from configs import default


def get_config():
    """Returns the tiny test configuration."""
    config = default.get_config()
    config.model.backbone_depth = 18
    config.model.backbone_width = 8
    config.model.fpn_features = 16
    config.model.seg_units = 1
    config.model.seg_width = 8
    config.model.align_size = 16

    config.data.kind = "synthetic"
    config.data.input_size = 64
    config.data.max_people = 3
    config.data.eval_max_people = 3
    config.data.num_workers = 0

    config.train.batch_size = 2
    config.train.learning_rate = 1e-3
    config.train.warmup_steps = 2
    config.train.num_steps = 4
    config.train.decay_steps = (3,)
    config.train.log_every = 1
    config.train.checkpoint_every = 2
    config.train.keep_checkpoints = 2

    config.eval.batch_size = 2
    config.eval.num_overlays = 2
    return config
