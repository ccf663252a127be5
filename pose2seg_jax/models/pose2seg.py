"""The full Pose2Seg network: ResNet-FPN, the align stage, and the SegModule (REFERENCE.md 1-7).

    images (B, 512, 512, 3) --ResNet + FPN--> P1 (B, 128, 128, 256)
    P1, keypoints, valid, templates --align_stage--> (B, P, 64, 64, 256) + (B, P, 64, 64, 55)
    --SegModule on their channel concatenation (never materialised)--> (B, P, 64, 64, 2)

Variables: ``backbone`` (ResNet), ``fpn`` and ``segnet`` (SegModule), named after the reference's
state dict so ``pose2seg_jax.conversion.convert`` is a name map.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from pose2seg_jax.models.fpn import FPN
from pose2seg_jax.models.resnet import ResNet
from pose2seg_jax.models.seg_module import SegModule
from pose2seg_jax.ops.stage import align_stage


class Pose2Seg(nn.Module):
    """Pose-based human instance segmentation.

    Attributes:
        backbone_depth: ResNet depth (18, 34, 50, 101).
        backbone_layout: 'reference' (stride on the first 1x1; the released weights) or
            'torchvision' (stride on the 3x3).
        backbone_width: ResNet base width (64 in the paper).
        fpn_features: channels of the FPN level fed to the align stage (256).
        seg_units: residual units of the SegModule (10).
        seg_width: bottleneck width of the SegModule (256).
        align_size: side of the align frame and of the logits (64).
        feature_stride: input pixels per P1 pixel (4).
        alignment: 'affine' (template fitting) or 'box' (keypoint-box ablation).
        skeleton: append the 55 skeleton channels to the aligned features.
        mapping: Affine-Align sampling convention, 'reference' or 'clean'.
        bn_axis_name: mesh axis for cross-device BatchNorm statistics, or None.
        backbone_stem_kernel_grad: ``ResNet.stem_kernel_grad`` ("patches").
        seg_stem_kernel_grad: ``SegModule.stem_kernel_grad`` ("taps").
        conv_kernel_grad: the 3x3 convs' kernel gradient in both networks ("taps").
        seg_chunk: people per SegModule pass at inference (``lax.map`` over chunks of the
            B*P people; 0: all at once). Eval-mode BatchNorm is per sample, so the result does
            not depend on it; smaller chunks keep fewer wide activations alive (peak memory).
            Training always runs all people together (BatchNorm batch statistics).
        dtype: computation dtype (e.g. bfloat16); logits come out in this dtype.
        param_dtype: parameter dtype.
    """

    backbone_depth: int = 50
    backbone_layout: str = "reference"
    backbone_width: int = 64
    fpn_features: int = 256
    seg_units: int = 10
    seg_width: int = 256
    align_size: int = 64
    feature_stride: int = 4
    alignment: str = "affine"
    skeleton: bool = True
    mapping: str = "reference"
    bn_axis_name: str | None = None
    backbone_stem_kernel_grad: str = "patches"
    seg_stem_kernel_grad: str = "taps"
    conv_kernel_grad: str = "taps"
    seg_chunk: int = 1
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self,
        images: jnp.ndarray,
        keypoints: jnp.ndarray,
        valid: jnp.ndarray,
        templates: jnp.ndarray,
        train: bool = False,
        augment: bool | None = None,
    ) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
        """Segments every (padded) person of a batch.

        Padded people (``valid == False``) are computed with the default matrix and must be
        masked by the caller; in training they are excluded from the SegModule's BatchNorm
        statistics (the reference ran only real people). The backbone's statistics are over
        the B images as usual. With ``bn_axis_name`` the per-device masked means are averaged
        with equal weight per device (flax's ``pmean``), not weighted by each device's count
        of real people. Flax stores the biased batch variance in the running variance where
        PyTorch stores the unbiased one (a factor n / (n - 1), n = samples x pixels, at least
        1024 in the SegModule, so at most 1e-3 relative).

        Args:
            images: (B, H, W, 3) normalised images (ImageNet mean/std, RGB), H = W = 512 by
                default.
            keypoints: (B, P, 17, 3) keypoints (x, y, v) in input-image coordinates.
            valid: (B, P) bool, False for padding.
            templates: (T, 17, 3) pose templates in unit coordinates.
            train: BatchNorm uses and updates batch statistics (``mutable=['batch_stats']``).
            augment: random align-space augmentation (REFERENCE.md section 6), drawn from the
                'augment' RNG stream; defaults to ``train``.

        Returns:
            logits: (B, P, A, A, 2) (background, person) in ``dtype``.
            aux: 'feature_to_align', 'input_to_align' (B, P, 3, 3), 'template_index' (B, P),
                'aligned' (B, P, A, A, C) the sampled features (without skeleton channels),
                and 'skeleton' (B, P, A, A, 55) when ``skeleton``.
        """
        if augment is None:
            augment = train
        common = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        stages = ResNet(
            depth=self.backbone_depth,
            layout=self.backbone_layout,
            width=self.backbone_width,
            bn_axis_name=self.bn_axis_name,
            stem_kernel_grad=self.backbone_stem_kernel_grad,
            conv_kernel_grad=self.conv_kernel_grad,
            name="backbone",
            **common,
        )(images.astype(self.dtype), train)
        features = FPN(features=self.fpn_features, name="fpn", **common)(stages)
        rng = self.make_rng("augment") if augment else None
        aligned, aux = align_stage(
            features,
            keypoints.astype(jnp.float32),
            valid,
            templates,
            rng=rng,
            align_size=self.align_size,
            feature_stride=self.feature_stride,
            alignment=self.alignment,
            use_skeleton=self.skeleton,
            mapping=self.mapping,
        )
        aux = dict(aux)
        aux["aligned"] = aligned
        batch, people = valid.shape
        groups = (aligned, aux["skeleton"]) if self.skeleton else (aligned,)
        flat = tuple(g.reshape(batch * people, *g.shape[2:]) for g in groups)
        segnet = SegModule(
            num_units=self.seg_units,
            width=self.seg_width,
            bn_axis_name=self.bn_axis_name,
            stem_kernel_grad=self.seg_stem_kernel_grad,
            conv_kernel_grad=self.conv_kernel_grad,
            name="segnet",
            **common,
        )
        chunk = self.seg_chunk
        if train or self.is_initializing() or chunk <= 0 or chunk >= batch * people:
            logits = segnet(flat, train, mask=valid.reshape(-1))
        else:
            logits = _chunked_inference(segnet, flat, chunk)
        return logits.reshape(batch, people, *logits.shape[1:]), aux


def _chunked_inference(segnet: SegModule, flat: tuple[jnp.ndarray, ...], chunk: int) -> jnp.ndarray:
    """Eval-mode SegModule over channel groups (N, ...) in ``lax.map`` chunks of ``chunk``."""
    count = flat[0].shape[0]
    steps = -(-count // chunk)

    def split(x):
        x = jnp.pad(x, [(0, steps * chunk - count)] + [(0, 0)] * (x.ndim - 1))
        return x.reshape(steps, chunk, *x.shape[1:])

    variables = segnet.variables
    unbound = segnet.clone(parent=None, name=None)
    run = lambda xs: unbound.apply(variables, xs, False)
    out = jax.lax.map(run, tuple(split(x) for x in flat))
    return out.reshape(steps * chunk, *out.shape[2:])[:count]


def count_params(variables: dict) -> int:
    """Number of trainable parameters (the 'params' collection) of a variables dict."""
    return sum(int(x.size) for x in jax.tree.leaves(variables["params"]))
