r"""The embedded default: a small Pose2Seg that learns the synthetic people on 2 CPU cores.

`make demo` runs it end to end (data, training, evaluation, pictures):

  python train.py --config configs/synthetic.py --workdir runs/demo

which first writes data/synthetic/{train,val}.json when absent (as pose2seg-synth would with
--images 1500 / 150 and the split's default seed).

Measured on 2 CPU cores (README, benchmarks/RESULTS.md): 3000 steps of 2 images in about 11
minutes, COCO segm AP 0.453 (AP50 0.923) on the synthetic val split. The schedule was tuned on
this split with 500-step runs: Adam at 5e-3 beat 1e-3, 3e-3 and 1e-2; two images per step beat
four for the same images seen; turning the align-space augmentation off helped early and hurt
at the end (0.352); a wider backbone or SegModule, and zero-initialised residual BatchNorms,
gave too little for their cost.
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

    config.train.batch_size = 2
    config.train.learning_rate = 5e-3
    config.train.warmup_steps = 50
    config.train.num_steps = 3000
    config.train.decay_steps = (2400, 2850)
    config.train.eval_every = 1000
    config.train.log_every = 50
    config.train.checkpoint_every = 500
    config.train.keep_checkpoints = 2

    config.eval.batch_size = 8
    return config
