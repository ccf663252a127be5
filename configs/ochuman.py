r"""Pose2Seg on OCHuman (COCO-format files of DATASETS.md), the paper's recipe otherwise.

OCHuman has no training split of its own in the paper's protocol (the model trains on
COCOPersons); this config trains and evaluates on the OCHuman COCO-format files given, for
fine-tuning studies. Set the paths:

  python train.py --config configs/ochuman.py --workdir runs/ochuman \
    --config.data.train_annotations=/data/ochuman/ochuman_coco_format_val_range_0.00_1.00.json \
    --config.data.train_images=/data/ochuman/images \
    --config.data.val_annotations=/data/ochuman/ochuman_coco_format_test_range_0.00_1.00.json \
    --config.data.val_images=/data/ochuman/images

Expected with the released weights and GT keypoints: segm AP about 0.55 on OCHuman val/test.
"""

from configs import default


def get_config():
    """Returns the OCHuman configuration (schedule in epochs)."""
    config = default.get_config()
    config.data.kind = "coco"
    # OCHuman images hold up to about 10 people; evaluation keeps them all.
    config.data.eval_max_people = 16
    # Schedule in epochs of the training file.
    config.train.num_epochs = 25
    config.train.eval_every = 5000
    return config
