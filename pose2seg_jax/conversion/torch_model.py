"""The Pose2Seg network in PyTorch, with the reference's parameter names (REFERENCE.md 7, 11).

An independent implementation used as the parity reference for the Flax modules and as the
target of ``flax_to_torch``: ``TorchPose2Seg().load_state_dict(sd, strict=True)`` accepts the
released weights' layout (``backbone.*``, ``segnet.*``). The align step is written with
``F.grid_sample(align_corners=True, padding_mode='zeros')`` given the feature-to-align matrices;
template fitting and skeleton drawing are not part of this module (pass their results in).

Tensors are NCHW, as in PyTorch. Importing this file needs torch; the rest of the package does not.
"""

import torch
import torch.nn.functional as F
from torch import nn

STAGE_SIZES = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=1e-5, momentum=0.1)


class TorchBottleneck(nn.Module):
    """ResNet bottleneck without biases; shortcut ``conv4``/``bn4``; stride on 1x1 or 3x3."""

    def __init__(
        self, in_ch: int, width: int, stride: int, projection: bool, stride_on_3x3: bool
    ) -> None:
        super().__init__()
        s1, s2 = (1, stride) if stride_on_3x3 else (stride, 1)
        self.conv1 = nn.Conv2d(in_ch, width, 1, stride=s1, bias=False)
        self.bn1 = _bn(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=s2, padding=1, bias=False)
        self.bn2 = _bn(width)
        self.conv3 = nn.Conv2d(width, 4 * width, 1, bias=False)
        self.bn3 = _bn(4 * width)
        self.projection = projection
        if projection:
            self.conv4 = nn.Conv2d(in_ch, 4 * width, 1, stride=stride, bias=False)
            self.bn4 = _bn(4 * width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        shortcut = self.bn4(self.conv4(x)) if self.projection else x
        return F.relu(y + shortcut)


class TorchBasicBlock(nn.Module):
    """ResNet-18/34 block without biases; shortcut ``conv4``/``bn4``."""

    def __init__(self, in_ch: int, width: int, stride: int, projection: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, width, 3, stride=stride, padding=1, bias=False)
        self.bn1 = _bn(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn2 = _bn(width)
        self.projection = projection
        if projection:
            self.conv4 = nn.Conv2d(in_ch, width, 1, stride=stride, bias=False)
            self.bn4 = _bn(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        shortcut = self.bn4(self.conv4(x)) if self.projection else x
        return F.relu(y + shortcut)


class TorchResNetFPN(nn.Module):
    """ResNet trunk with the FPN layers under the same prefix (the reference's ``backbone``)."""

    def __init__(
        self, depth: int = 50, layout: str = "reference", width: int = 64, fpn_features: int = 256
    ) -> None:
        super().__init__()
        bottleneck = depth >= 50
        self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = _bn(width)
        in_ch = width
        channels = []
        for s, blocks in enumerate(STAGE_SIZES[depth]):
            w = width * 2**s
            out_ch = 4 * w if bottleneck else w
            layers = []
            for i in range(blocks):
                stride = 2 if (i == 0 and s > 0) else 1
                projection = i == 0 and (stride != 1 or in_ch != out_ch)
                if bottleneck:
                    block = TorchBottleneck(in_ch, w, stride, projection, layout == "torchvision")
                else:
                    block = TorchBasicBlock(in_ch, w, stride, projection)
                layers.append(block)
                in_ch = out_ch
            setattr(self, f"layer{s + 1}", nn.Sequential(*layers))
            channels.append(out_ch)
        c1, c2, c3, c4 = channels
        self.fpn_c4p4 = nn.Conv2d(c4, fpn_features, 1)
        self.fpn_c3p3 = nn.Conv2d(c3, fpn_features, 1)
        self.fpn_c2p2 = nn.Conv2d(c2, fpn_features, 1)
        self.fpn_c1p1 = nn.Conv2d(c1, fpn_features, 1)
        self.fpn_p4 = nn.Conv2d(fpn_features, fpn_features, 3, padding=1)
        self.fpn_p3 = nn.Conv2d(fpn_features, fpn_features, 3, padding=1)
        self.fpn_p2 = nn.Conv2d(fpn_features, fpn_features, 3, padding=1)
        self.fpn_p1 = nn.Conv2d(fpn_features, fpn_features, 3, padding=1)

    def stages(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(N, 3, H, W) -> (C1, C2, C3, C4) of strides 4, 8, 16, 32."""
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.max_pool2d(x, 3, stride=2, padding=1)
        c1 = self.layer1(x)
        c2 = self.layer2(c1)
        c3 = self.layer3(c2)
        c4 = self.layer4(c3)
        return c1, c2, c3, c4

    def pyramid(self, stages: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """(C1..C4) -> (P1, P2, P3, P4) after the 3x3 convs."""
        c1, c2, c3, c4 = stages

        def up(p: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
            return F.interpolate(p, size=c.shape[-2:], mode="bilinear", align_corners=False)

        p4 = self.fpn_c4p4(c4)
        p3 = up(p4, c3) + self.fpn_c3p3(c3)
        p2 = up(p3, c2) + self.fpn_c2p2(c2)
        p1 = up(p2, c1) + self.fpn_c1p1(c1)
        return self.fpn_p1(p1), self.fpn_p2(p2), self.fpn_p3(p3), self.fpn_p4(p4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) normalised images -> P1 (N, fpn_features, H/4, W/4)."""
        return self.pyramid(self.stages(x))[0]


class TorchSegBottleneck(nn.Module):
    """SegModule bottleneck: bias on every conv, stride on the 3x3, ``downsample.0/1``."""

    def __init__(self, in_ch: int, width: int, stride: int = 1, projection: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, width, 1)
        self.bn1 = _bn(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1)
        self.bn2 = _bn(width)
        self.conv3 = nn.Conv2d(width, 4 * width, 1)
        self.bn3 = _bn(4 * width)
        self.downsample = None
        if projection:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, 4 * width, 1, stride=stride), _bn(4 * width)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(y + shortcut)


class TorchSegModule(nn.Module):
    """(N, 311, 64, 64) aligned features -> (N, 2, 64, 64) logits."""

    def __init__(
        self, in_ch: int = 311, num_units: int = 10, width: int = 256, num_classes: int = 2
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, width, 7, stride=2, padding=3)
        self.bn1 = _bn(width)
        units = [TorchSegBottleneck(width, width, projection=True)]
        units += [TorchSegBottleneck(4 * width, width) for _ in range(num_units - 1)]
        self.layer1 = nn.Sequential(*units)
        self.decoder1 = nn.Sequential(TorchSegBottleneck(4 * width, width // 2, projection=True))
        self.pred_small = nn.Conv2d(2 * width, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer1(x)
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        x = self.decoder1(x)
        return self.pred_small(x)


def sampling_theta(
    feature_to_align: torch.Tensor, feature_size: int, align_size: int, mapping: str = "reference"
) -> torch.Tensor:
    """Normalised ``affine_grid`` theta reproducing the align mapping of REFERENCE.md section 4.

    Align pixel j maps to feature pixel ``src = c * M^-1 * (j / c)`` with ``c = (F - 1) / F``
    for 'reference' (the two small stretches of the reference) and ``c = 1`` for 'clean'.
    With ``align_corners=True`` a normalised coordinate n is pixel ``(n + 1) (size - 1) / 2``,
    so theta = N_feature * S(c) * M^-1 * S(1/c) * N_align^-1 (computed in float64).

    Args:
        feature_to_align: (..., 3, 3) matrices.
        feature_size: side F of the square feature map.
        align_size: side A of the align frame.
        mapping: 'reference' or 'clean'.

    Returns:
        (..., 2, 3) float64 theta for ``F.affine_grid(..., align_corners=True)``.
    """
    if mapping not in ("reference", "clean"):
        raise ValueError(f"mapping must be 'reference' or 'clean', got {mapping!r}")
    m = feature_to_align.to(torch.float64)

    def diag(sx: float, tx: float) -> torch.Tensor:
        return torch.tensor([[sx, 0.0, tx], [0.0, sx, tx], [0.0, 0.0, 1.0]], dtype=torch.float64)

    c = (feature_size - 1) / feature_size if mapping == "reference" else 1.0
    to_norm = diag(2.0 / (feature_size - 1), -1.0)
    from_norm = diag((align_size - 1) / 2.0, (align_size - 1) / 2.0)
    theta = to_norm @ diag(c, 0.0) @ torch.linalg.inv(m) @ diag(1.0 / c, 0.0) @ from_norm
    return theta[..., :2, :]


def align_features(
    features: torch.Tensor,
    feature_to_align: torch.Tensor,
    align_size: int = 64,
    mapping: str = "reference",
) -> torch.Tensor:
    """Affine-Align with ``grid_sample`` (bilinear, zeros outside, ``align_corners=True``).

    Args:
        features: (B, C, F, F) feature map.
        feature_to_align: (B, P, 3, 3) matrices.
        align_size: side A of the output.
        mapping: 'reference' or 'clean' (see ``sampling_theta``).

    Returns:
        (B, P, C, A, A) aligned features.
    """
    b, c, h, w = features.shape
    if h != w:
        raise ValueError(f"align_features expects a square feature map, got {h}x{w}")
    p = feature_to_align.shape[1]
    theta = sampling_theta(feature_to_align, h, align_size, mapping).to(features.dtype)
    grid = F.affine_grid(
        theta.reshape(b * p, 2, 3), [b * p, c, align_size, align_size], align_corners=True
    )
    # One grid of P*A rows per image: no per-person copy of the feature map.
    grid = grid.reshape(b, p * align_size, align_size, 2)
    out = F.grid_sample(features, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return out.reshape(b, c, p, align_size, align_size).permute(0, 2, 1, 3, 4)


class TorchPose2Seg(nn.Module):
    """Backbone + FPN, Affine-Align on given matrices, skeleton concat, SegModule.

    Args (constructor): the same sizes as the Flax ``Pose2Seg`` fields.
    """

    def __init__(
        self,
        backbone_depth: int = 50,
        backbone_layout: str = "reference",
        backbone_width: int = 64,
        fpn_features: int = 256,
        seg_units: int = 10,
        seg_width: int = 256,
        align_size: int = 64,
        skeleton: bool = True,
        mapping: str = "reference",
    ) -> None:
        super().__init__()
        self.align_size = align_size
        self.mapping = mapping
        self.skeleton = skeleton
        self.backbone = TorchResNetFPN(
            backbone_depth, backbone_layout, backbone_width, fpn_features
        )
        in_ch = fpn_features + (55 if skeleton else 0)
        self.segnet = TorchSegModule(in_ch, seg_units, seg_width)

    def forward(
        self,
        images: torch.Tensor,
        feature_to_align: torch.Tensor,
        skeleton: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Segments every person.

        Args:
            images: (B, 3, H, W) normalised images.
            feature_to_align: (B, P, 3, 3) matrices (from the template fit).
            skeleton: (B, P, 55, A, A) skeleton features, required when ``skeleton``.

        Returns:
            logits (B, P, 2, A, A).
        """
        features = self.backbone(images)
        aligned = align_features(features, feature_to_align, self.align_size, self.mapping)
        if self.skeleton:
            if skeleton is None:
                raise ValueError("TorchPose2Seg(skeleton=True) needs the skeleton features")
            aligned = torch.cat([aligned, skeleton.to(aligned.dtype)], dim=2)
        b, p = aligned.shape[:2]
        logits = self.segnet(aligned.flatten(0, 1))
        return logits.reshape(b, p, *logits.shape[1:])


def randomize_batch_norm(module: nn.Module, seed: int = 0) -> nn.Module:
    """Gives every BatchNorm random affine parameters and running statistics (for parity tests).

    Freshly built BatchNorms are the identity in eval mode, which would hide a mis-mapped
    scale, bias, mean or variance.

    Args:
        module: any module; its BatchNorm2d layers are modified in place.
        seed: seed of the generator.

    Returns:
        The same module.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, nn.BatchNorm2d):
                n = layer.num_features
                layer.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                layer.bias.copy_(torch.randn(n, generator=gen) * 0.1)
                layer.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
                layer.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
                layer.num_batches_tracked.fill_(int(torch.randint(1, 1000, (1,), generator=gen)))
    return module
