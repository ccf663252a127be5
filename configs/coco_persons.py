r"""Pose2Seg on COCOPersons, exactly the paper's recipe (25 epochs at batch 4).

  python train.py --config configs/coco_persons.py --workdir runs/coco_persons \
    --config.data.train_annotations=/data/coco/person_keypoints_train2017_pose2seg.json \
    --config.data.train_images=/data/coco/train2017 \
    --config.data.val_annotations=/data/coco/person_keypoints_val2017_pose2seg.json \
    --config.data.val_images=/data/coco/val2017 \
    --config.train.init_from=/data/weights/resnet50-imagenet.pth

Expected: segm AP about 0.58 on COCOPersons val with GT keypoints (paper).
"""

from configs import default


def get_config():
    """Returns the COCOPersons configuration (schedule in epochs)."""
    config = default.get_config()
    config.data.kind = "coco"
    # 25 epochs; the decays fall at 15/25 and 20/25 of the run as in the reference.
    config.train.num_epochs = 25
    config.train.eval_every = 14_150
    return config
