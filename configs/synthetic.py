r"""The embedded default: a small Pose2Seg that learns the synthetic people on 2 CPU cores.

`make demo` runs it end to end (data, training, evaluation, pictures):

  python train.py --config configs/synthetic.py --workdir runs/demo

which first writes data/synthetic/{train,val}.json when absent (as pose2seg-synth would with
--images 1500 / 150 and the split's default seed).

Measured on 2 CPU cores: 1000 steps in about 8 minutes, COCO segm AP 0.286 (AP50 0.784) on the
synthetic val split, still rising at the end (README, benchmarks/RESULTS.md).
"""

from configs import default


def get_config():
    """Returns the synthetic-data configuration."""
    config = default.get_config()
    config.model.backbone_depth = 18
    config.model.backbone_width = 16
    config.model.fpn_features = 32
    config.model.seg_units = 2
    config.model.seg_width = 16
    config.model.align_size = 64

    config.data.kind = "synthetic"
    config.data.root = "data/synthetic"
    config.data.train_annotations = "data/synthetic/train.json"
    config.data.train_images = "data/synthetic"
    config.data.val_annotations = "data/synthetic/val.json"
    config.data.val_images = "data/synthetic"
    # Images the demo generates for each split.
    config.data.synthetic_train_images = 1500
    config.data.synthetic_val_images = 150
    config.data.input_size = 256
    config.data.max_people = 4
    config.data.eval_max_people = 5

    config.train.batch_size = 4
    config.train.learning_rate = 1e-3
    config.train.warmup_steps = 50
    config.train.num_steps = 1000
    config.train.decay_steps = (800, 950)
    config.train.eval_every = 250
    config.train.log_every = 25
    config.train.checkpoint_every = 250
    config.train.keep_checkpoints = 2

    config.eval.batch_size = 8
    return config
