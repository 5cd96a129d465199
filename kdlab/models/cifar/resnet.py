"""The CIFAR ResNets of the CRD benchmark (resnet8 … resnet110, resnet8x4, resnet32x4).

Deep Residual Learning for Image Recognition (He et al., CVPR 2016), in the three-stage
CIFAR layout used by the CRD benchmark (Tian et al., ICLR 2020) and the papers that reuse
it. Parameter names match that benchmark's checkpoints.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from kdlab.models.cifar._common import conv3x3, global_pool, init_kaiming, tap_aliases


class BasicBlock(nn.Module):
    """Two 3×3 conv-BN layers with an identity (or 1×1 conv-BN) shortcut.

    The final activation ``relu`` is a module of its own, not in place, so a forward hook
    sees the pre-activation sum as its input (``<block>.relu:input``).

    Args:
        in_planes: Input channels.
        planes: Output channels.
        stride: Stride of the first convolution (2 halves the resolution).
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


class ResNet(nn.Module):
    """A three-stage CIFAR ResNet of BasicBlocks: 3×3 stem, stages at 1×, ½×, ¼× resolution.

    Tap aliases (``feature_points``): ``stem`` (``relu``), ``stage1..3`` (``layer1..3``),
    ``stageK_preact`` (``layerK.<last>.relu:input``), ``embedding`` (``pool``), ``logits`` (``fc``).

    Args:
        depth: 6n+2 layers (n blocks per stage), e.g. 8, 20, 32, 110.
        widths: Channels of the stem and of the three stages.
        num_classes: Number of classes.
        in_channels: Input image channels.
    """

    def __init__(
        self,
        depth: int,
        widths: Sequence[int] = (16, 16, 32, 64),
        num_classes: int = 100,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6 != 0:
            raise ValueError(f"ResNet: depth must be 6n+2 with n >= 1 (8, 14, 20, 32, ...), got {depth}")
        blocks = (depth - 2) // 6
        self.num_classes = num_classes
        self.conv1 = nn.Conv2d(in_channels, widths[0], kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = _stage(widths[0], widths[1], blocks, stride=1)
        self.layer2 = _stage(widths[1], widths[2], blocks, stride=2)
        self.layer3 = _stage(widths[2], widths[3], blocks, stride=2)
        self.pool = global_pool()
        self.fc = nn.Linear(widths[3], num_classes)
        init_kaiming(self)
        stages = ["layer1", "layer2", "layer3"]
        self.feature_points = tap_aliases("relu", stages, [f"{s}.{blocks - 1}.relu:input" for s in stages])

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.pool(x))


def _stage(in_planes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    layers = [BasicBlock(in_planes, planes, stride)]
    layers += [BasicBlock(planes, planes) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


_THIN = (16, 16, 32, 64)
_WIDE = (32, 64, 128, 256)


class resnet8(ResNet):
    """ResNet-8 (1 block per stage, 16/32/64 channels)."""

    def __init__(self, num_classes: int = 100, in_channels: int = 3) -> None:
        super().__init__(8, _THIN, num_classes=num_classes, in_channels=in_channels)


class resnet14(ResNet):
    """ResNet-14 (2 blocks per stage, 16/32/64 channels)."""

    def __init__(self, num_classes: int = 100, in_channels: int = 3) -> None:
        super().__init__(14, _THIN, num_classes=num_classes, in_channels=in_channels)


class resnet20(ResNet):
    """ResNet-20 (3 blocks per stage, 16/32/64 channels)."""

    def __init__(self, num_classes: int = 100, in_channels: int = 3) -> None:
        super().__init__(20, _THIN, num_classes=num_classes, in_channels=in_channels)


class resnet32(ResNet):
    """ResNet-32 (5 blocks per stage, 16/32/64 channels)."""

    def __init__(self, num_classes: int = 100, in_channels: int = 3) -> None:
        super().__init__(32, _THIN, num_classes=num_classes, in_channels=in_channels)


class resnet44(ResNet):
    """ResNet-44 (7 blocks per stage, 16/32/64 channels)."""

    def __init__(self, num_classes: int = 100, in_channels: int = 3) -> None:
        super().__init__(44, _THIN, num_classes=num_classes, in_channels=in_channels)


class resnet56(ResNet):
    """ResNet-56 (9 blocks per stage, 16/32/64 channels)."""

    def __init__(self, num_classes: int = 100, in_channels: int = 3) -> None:
        super().__init__(56, _THIN, num_classes=num_classes, in_channels=in_channels)


class resnet110(ResNet):
    """ResNet-110 (18 blocks per stage, 16/32/64 channels)."""

    def __init__(self, num_classes: int = 100, in_channels: int = 3) -> None:
        super().__init__(110, _THIN, num_classes=num_classes, in_channels=in_channels)


class resnet8x4(ResNet):
    """ResNet-8×4 (1 block per stage, 4× wider: 32-channel stem, 64/128/256 channels)."""

    def __init__(self, num_classes: int = 100, in_channels: int = 3) -> None:
        super().__init__(8, _WIDE, num_classes=num_classes, in_channels=in_channels)


class resnet32x4(ResNet):
    """ResNet-32×4 (5 blocks per stage, 4× wider: 32-channel stem, 64/128/256 channels)."""

    def __init__(self, num_classes: int = 100, in_channels: int = 3) -> None:
        super().__init__(32, _WIDE, num_classes=num_classes, in_channels=in_channels)
