"""The CIFAR ResNet50 of the CRD benchmark ("ResNet50" in its tables).

Deep Residual Learning for Image Recognition (He et al., CVPR 2016): the ImageNet layout
(64-channel stem, four bottleneck stages of 3/4/6/3 blocks) with a 3×3 stride-1 stem and no
max-pool, as in the CRD benchmark (Tian et al., ICLR 2020; RepDistiller's ``resnetv2``).
Parameter names match that benchmark's checkpoints except the classifier, ``fc`` here
(``linear`` there).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from kdlab.models.cifar._common import global_pool, init_kaiming, tap_aliases


class Bottleneck(nn.Module):
    """1×1 reduce, 3×3, 1×1 expand (×4), each with BN; identity or 1×1-conv-BN shortcut.

    The final activation ``relu`` is its own module (not in place): ``relu:input`` is the
    pre-activation sum.

    Args:
        in_planes: Input channels.
        planes: Bottleneck channels (the block outputs ``4 * planes``).
        stride: Stride of the 3×3 convolution.
    """

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_planes = self.expansion * planes
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(planes, out_planes, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != out_planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_planes),
            )
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu2(self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x))))))
        return self.relu(self.bn3(self.conv3(out)) + self.shortcut(x))


class BottleneckResNet(nn.Module):
    """Four-stage bottleneck ResNet for 32×32 inputs (stages at 1×, ½×, ¼×, ⅛× resolution).

    Tap aliases: ``stem`` (``relu``), ``stage1..4`` (``layer1..4``), ``stageK_preact``
    (``layerK.<last>.relu:input``), ``embedding`` (``pool``), ``logits`` (``fc``).

    Args:
        num_blocks: Blocks in each of the four stages.
        num_classes: Number of classes.
        in_channels: Input image channels.
    """

    def __init__(
        self, num_blocks: Sequence[int] = (3, 4, 6, 3), num_classes: int = 100, in_channels: int = 3
    ) -> None:
        super().__init__()
        if len(num_blocks) != 4 or min(num_blocks) < 1:
            raise ValueError(f"BottleneckResNet: num_blocks must be four counts >= 1, got {list(num_blocks)}")
        self.num_classes = num_classes
        self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        in_planes = 64
        for k, (planes, count) in enumerate(zip((64, 128, 256, 512), num_blocks, strict=True), start=1):
            stride = 1 if k == 1 else 2
            blocks = [Bottleneck(in_planes, planes, stride)]
            in_planes = planes * Bottleneck.expansion
            blocks += [Bottleneck(in_planes, planes) for _ in range(count - 1)]
            self.add_module(f"layer{k}", nn.Sequential(*blocks))
        self.pool = global_pool()
        self.fc = nn.Linear(in_planes, num_classes)
        init_kaiming(self)
        stages = ["layer1", "layer2", "layer3", "layer4"]
        preacts = [f"{s}.{n - 1}.relu:input" for s, n in zip(stages, num_blocks, strict=True)]
        self.feature_points = tap_aliases("relu", stages, preacts)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.pool(x))


class resnet50(BottleneckResNet):
    """The CRD benchmark's CIFAR "ResNet50": bottleneck blocks 3/4/6/3, 64-channel 3×3 stem."""

    def __init__(self, num_classes: int = 100, in_channels: int = 3) -> None:
        super().__init__((3, 4, 6, 3), num_classes=num_classes, in_channels=in_channels)
