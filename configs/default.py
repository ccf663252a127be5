r"""The paper's recipe (REFERENCE.md sections 6, 7 and 9): ResNet-50-FPN at 512, batch 4.

Train on COCOPersons (set the data paths, or use configs/coco_persons.py):

  python train.py --config configs/default.py --workdir runs/coco \
    --config.data.train_annotations=/data/coco/person_keypoints_train2017_pose2seg.json \
    --config.data.train_images=/data/coco/train2017 ...

Expected: COCO segm AP about 0.58 on COCOPersons val with GT keypoints (paper).
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    """Returns the default configuration: every hyperparameter of the reference."""
    config = ml_collections.ConfigDict()
    # Seed of parameter initialisation, data order and augmentation.
    config.seed = 0

    config.model = ml_collections.ConfigDict()
    # ResNet depth of the backbone: 18, 34, 50 or 101.
    config.model.backbone_depth = 50
    # 'reference': stride on the first 1x1 conv (released weights); 'torchvision': on the 3x3.
    config.model.backbone_layout = "reference"
    # Base width of the ResNet (64 in the paper); smaller for CPU demos.
    config.model.backbone_width = 64
    # Channels of the FPN outputs (P2 feeds the align stage).
    config.model.fpn_features = 256
    # Number of residual units of the SegModule.
    config.model.seg_units = 10
    # Bottleneck width of the SegModule (output is 4x this).
    config.model.seg_width = 256
    # Side of the align frame and of the predicted masks.
    config.model.align_size = 64
    # Input pixels per feature pixel (the FPN level used).
    config.model.feature_stride = 4
    # 'affine': Affine-Align by template fitting (the paper); 'box': keypoint-box RoI-Align.
    config.model.alignment = "affine"
    # Append the 55 skeleton channels (part maps and limb fields) to the aligned features.
    config.model.skeleton = True
    # Sampling convention: 'reference' (exact, as the released weights) or 'clean'.
    config.model.mapping = "reference"
    # Compute dtype: 'float32' or 'bfloat16' (parameters stay float32).
    config.model.dtype = "float32"
    # How the two 7x7/2 stems' kernel gradients are computed: 'xla', 'patches' (one product
    # over the patch matrix) or 'taps' (one product per kernel tap); the same numbers. These
    # are the fastest at the paper's sizes on XLA's CPU backend, where XLA's own ran up to 10x
    # slower (benchmarks/bench_stem_grad.py, RESULTS.md); not measured on GPU or TPU, where
    # 'xla' (cuDNN's and the TPU compiler's own gradients) is the natural first choice.
    config.model.backbone_stem_kernel_grad = "patches"
    config.model.seg_stem_kernel_grad = "taps"
    # The same for every 3x3 convolution of both networks: 'taps' or 'xla'.
    config.model.conv_kernel_grad = "taps"
    # JAX backends (jax.default_backend()) on which the three choices above apply; on any other
    # every convolution takes XLA's own gradients, so a GPU or TPU run gets cuDNN's and the TPU
    # compiler's rather than these CPU-measured ones. Add 'gpu' or 'tpu' to measure them there.
    config.model.custom_grad_backends = ("cpu",)

    # Pose template file (REFERENCE.md section 12); None: the packaged default.
    config.templates = ml_collections.config_dict.placeholder(str)

    config.data = ml_collections.ConfigDict()
    # 'coco' (any COCO-format person file: COCOPersons, OCHuman) or 'synthetic'.
    config.data.kind = "coco"
    # Folder of generated data (synthetic only; made by the demo if absent).
    config.data.root = ml_collections.config_dict.placeholder(str)
    # Images generated per split (synthetic only).
    config.data.synthetic_train_images = 0
    config.data.synthetic_val_images = 0
    # COCO-format annotation file and image folder of the training split.
    config.data.train_annotations = ml_collections.config_dict.placeholder(str)
    config.data.train_images = ml_collections.config_dict.placeholder(str)
    # COCO-format annotation file and image folder of the evaluation split.
    config.data.val_annotations = ml_collections.config_dict.placeholder(str)
    config.data.val_images = ml_collections.config_dict.placeholder(str)
    # Side of the square letterboxed network input.
    config.data.input_size = 512
    # People per training image (padded with a validity mask; sampled at random when more).
    config.data.max_people = 8
    # People per image slot at evaluation (more people take several passes).
    config.data.eval_max_people = 8
    # Data-loading worker processes per host (0: in-process).
    config.data.num_workers = 2
    # Batches prefetched per worker.
    config.data.prefetch = 2

    config.train = ml_collections.ConfigDict()
    # Global batch size (images), split over all devices of all hosts.
    config.train.batch_size = 4
    # Adam learning rate (no weight decay).
    config.train.learning_rate = 2e-4
    # "step" (the reference's: x decay_factor at each decay step) or "cosine" (a half cosine to 0
    # at the last step after the same warm-up; decay_steps/decay_epochs unused).
    config.train.schedule = "step"
    # Linear warm-up length (steps) and starting factor of the learning rate.
    config.train.warmup_steps = 1000
    config.train.warmup_factor = 1.0 / 3.0
    # Steps at which the learning rate is multiplied by decay_factor (used when num_epochs == 0).
    config.train.decay_steps = (212_250, 283_000)
    config.train.decay_factor = 0.1
    # Total training steps (25 epochs of 14,150 steps on COCOPersons train).
    config.train.num_steps = 353_750
    # When > 0, the run length in epochs of the training file, overriding num_steps.
    config.train.num_epochs = 0
    # Epochs at which the learning rate decays (used when num_epochs > 0).
    config.train.decay_epochs = (15, 20)
    # BatchNorm statistics across all devices (cross-replica) instead of per device.
    config.train.sync_batch_norm = False
    # Augmentation in align space (rotation/scale/translation) during training.
    config.train.augment = True
    # Augmentation rotation range (degrees, +-).
    config.train.aug_rotation_deg = 30.0
    # Augmentation scale range.
    config.train.aug_scale = (0.8, 1.2)
    # Augmentation translation range (fraction of the align frame, +-).
    config.train.aug_translation = 0.1
    # Steps between log lines (progress bar, TensorBoard).
    config.train.log_every = 50
    # Steps between (asynchronous) checkpoints.
    config.train.checkpoint_every = 2000
    # How many of the latest checkpoints to keep.
    config.train.keep_checkpoints = 3
    # Steps between evaluations on the val split (0: only at the end).
    config.train.eval_every = 0
    # Initialise from a PyTorch file: an ImageNet ResNet (backbone only) or a released model.
    config.train.init_from = ml_collections.config_dict.placeholder(str)
    config.train.init_backbone_only = True

    config.eval = ml_collections.ConfigDict()
    # Evaluation batch size (images).
    config.eval.batch_size = 4
    # COCO keypoint results file to use instead of ground-truth keypoints (None: GT).
    config.eval.keypoints_file = ml_collections.config_dict.placeholder(str)
    # Minimum person score and joint confidence when reading a keypoints results file.
    config.eval.min_person_score = 0.0
    config.eval.min_joint_score = 0.0
    # Number of val overlays written as pictures.
    config.eval.num_overlays = 8
    return config
