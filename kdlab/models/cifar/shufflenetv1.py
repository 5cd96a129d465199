"""The CIFAR ShuffleNetV1 of the CRD benchmark ("ShuffleV1" in its tables).

ShuffleNet: An Extremely Efficient Convolutional Neural Network for Mobile Devices (Zhang et
al., CVPR 2018), 3 groups, 240/480/960 channels, in the CIFAR form of the CRD benchmark
(Tian et al., ICLR 2020). Parameter names match that benchmark's checkpoints except the
classifier, ``fc`` here (``linear`` there).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from kdlab.models.cifar._common import ChannelShuffle, global_pool, tap_aliases

_STEM_CHANNELS = 24


class ShuffleUnit(nn.Module):
    """Grouped 1×1, shuffle, depthwise 3×3, grouped 1×1; added to the input, or concatenated
    with its 3×3 average pool when the unit halves the resolution.

    The final activation ``relu`` is a module of its own (not in place): its input is the
    pre-activation sum/concatenation.

    Args:
        in_planes: Input channels.
        out_planes: Channels produced by the convolutions (the shortcut's are added on top
            when ``stride`` is 2).
        stride: 1 (residual sum) or 2 (downsampling concatenation).
        groups: Groups of the 1×1 convolutions.
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int, groups: int) -> None:
        super().__init__()
        self.stride = stride
        mid_planes = out_planes // 4
        # The stem's 24 channels are too few to group: the first unit's 1×1 conv is dense.
        first_groups = 1 if in_planes == _STEM_CHANNELS else groups
        self.conv1 = nn.Conv2d(in_planes, mid_planes, kernel_size=1, groups=first_groups, bias=False)
        self.bn1 = nn.BatchNorm2d(mid_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.shuffle1 = ChannelShuffle(first_groups)
        self.conv2 = nn.Conv2d(
            mid_planes, mid_planes, kernel_size=3, stride=stride, padding=1, groups=mid_planes, bias=False
        )
        self.bn2 = nn.BatchNorm2d(mid_planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(mid_planes, out_planes, kernel_size=1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = nn.Sequential()
        if stride == 2:
            self.shortcut = nn.Sequential(nn.AvgPool2d(3, stride=2, padding=1))
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        out = self.shuffle1(self.relu1(self.bn1(self.conv1(x))))
        out = self.bn3(self.conv3(self.relu2(self.bn2(self.conv2(out)))))
        shortcut = self.shortcut(x)
        return self.relu(torch.cat([out, shortcut], 1) if self.stride == 2 else out + shortcut)


class ShuffleNetV1(nn.Module):
    """1×1 stem to 24 channels, three stages of shuffle units (each opening at stride 2),
    global pooling, linear classifier.

    Tap aliases: ``stem`` (``relu``), ``stage1..3`` (``layer1..3``), ``stageK_preact``
    (``layerK.<last>.relu:input``), ``embedding`` (``pool``), ``logits`` (``fc``).

    Args:
        num_classes: Number of classes.
        in_channels: Input image channels.
        out_planes: Output channels of the three stages.
        num_blocks: Units per stage.
        groups: Groups of the 1×1 convolutions.
    """

    def __init__(
        self,
        num_classes: int = 100,
        in_channels: int = 3,
        out_planes: tuple[int, int, int] = (240, 480, 960),
        num_blocks: tuple[int, int, int] = (4, 8, 4),
        groups: int = 3,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.conv1 = nn.Conv2d(in_channels, _STEM_CHANNELS, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(_STEM_CHANNELS)
        self.relu = nn.ReLU(inplace=True)
        planes = _STEM_CHANNELS
        for k, (out, count) in enumerate(zip(out_planes, num_blocks, strict=True), start=1):
            # The opening unit's output is concatenated with its pooled input: it adds the rest.
            units = [ShuffleUnit(planes, out - planes, 2, groups)]
            units += [ShuffleUnit(out, out, 1, groups) for _ in range(count - 1)]
            self.add_module(f"layer{k}", nn.Sequential(*units))
            planes = out
        self.pool = global_pool()
        self.fc = nn.Linear(planes, num_classes)
        stages = ["layer1", "layer2", "layer3"]
        preacts = [f"{s}.{count - 1}.relu:input" for s, count in zip(stages, num_blocks, strict=True)]
        self.feature_points = tap_aliases("relu", stages, preacts)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.pool(x))


class shufflev1(ShuffleNetV1):
    """The CRD benchmark's "ShuffleV1": groups 3, 240/480/960 channels, 4/8/4 units."""

    def __init__(self, num_classes: int = 100, in_channels: int = 3) -> None:
        super().__init__(num_classes=num_classes, in_channels=in_channels)
