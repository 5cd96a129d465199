"""The CIFAR ShuffleNetV2 of the CRD benchmark ("ShuffleV2" in its tables).

ShuffleNet V2: Practical Guidelines for Efficient CNN Architecture Design (Ma et al., ECCV
2018), width 1× (116/232/464 channels, 1024 head), in the CIFAR form of the CRD benchmark
(Tian et al., ICLR 2020). Parameter names match that benchmark's checkpoints except the
classifier, ``fc`` here (``linear`` there).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from kdlab.models.cifar._common import ChannelShuffle, global_pool, tap_aliases

_STEM_CHANNELS = 24
# Stage channels and head channels by width (the reference's table).
WIDTHS: dict[float, tuple[int, int, int, int]] = {
    0.5: (48, 96, 192, 1024),
    1.0: (116, 232, 464, 1024),
    1.5: (176, 352, 704, 1024),
    2.0: (224, 488, 976, 2048),
}


class ShuffleV2Unit(nn.Module):
    """Split the channels in two halves, transform the second (1×1, depthwise 3×3, 1×1),
    concatenate, shuffle.

    In the reference the ReLU acts on the transformed half only and the pre-activation is the
    concatenation ``[first half, transformed half before ReLU]``. Here the ReLU module ``relu``
    acts on that concatenation: the first half is the output of earlier ReLUs (never negative),
    so the result is identical and ``relu:input`` is exactly the reference's pre-activation.

    Args:
        channels: Input and output channels.
        split_ratio: Fraction of the channels passed through untouched.
    """

    def __init__(self, channels: int, split_ratio: float = 0.5) -> None:
        super().__init__()
        self.split = int(channels * split_ratio)
        branch = channels - self.split
        self.conv1 = nn.Conv2d(branch, branch, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(branch)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(branch, branch, kernel_size=3, padding=1, groups=branch, bias=False)
        self.bn2 = nn.BatchNorm2d(branch)
        self.conv3 = nn.Conv2d(branch, branch, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(branch)
        self.relu = nn.ReLU()
        self.shuffle = ChannelShuffle(2)

    def forward(self, x: Tensor) -> Tensor:
        kept, transformed = x[:, : self.split], x[:, self.split :]
        transformed = self.relu1(self.bn1(self.conv1(transformed)))
        transformed = self.bn3(self.conv3(self.bn2(self.conv2(transformed))))
        return self.shuffle(self.relu(torch.cat([kept, transformed], 1)))


class ShuffleV2Down(nn.Module):
    """The stride-2 unit: two branches on the whole input (depthwise 3×3 → 1×1; 1×1 →
    depthwise 3×3 → 1×1), concatenated and shuffled.

    Args:
        in_channels: Input channels.
        out_channels: Output channels (half from each branch).
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        mid = out_channels // 2
        self.conv1 = nn.Conv2d(
            in_channels, in_channels, 3, stride=2, padding=1, groups=in_channels, bias=False
        )
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv2 = nn.Conv2d(in_channels, mid, kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(in_channels, mid, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(mid)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv4 = nn.Conv2d(mid, mid, kernel_size=3, stride=2, padding=1, groups=mid, bias=False)
        self.bn4 = nn.BatchNorm2d(mid)
        self.conv5 = nn.Conv2d(mid, mid, kernel_size=1, bias=False)
        self.bn5 = nn.BatchNorm2d(mid)
        self.relu3 = nn.ReLU(inplace=True)
        self.shuffle = ChannelShuffle(2)

    def forward(self, x: Tensor) -> Tensor:
        left = self.relu1(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
        right = self.bn4(self.conv4(self.relu2(self.bn3(self.conv3(x)))))
        right = self.relu3(self.bn5(self.conv5(right)))
        return self.shuffle(torch.cat([left, right], 1))


class ShuffleNetV2(nn.Module):
    """1×1 stem to 24 channels, three stages (a stride-2 unit, then split units), 1×1 conv
    head, global pooling, linear classifier.

    Tap aliases: ``stem`` (``relu``), ``stage1..3`` (``layer1..3``), ``stageK_preact``
    (``layerK.<last>.relu:input``, unshuffled, as in the reference), ``embedding`` (``pool``),
    ``logits`` (``fc``).

    Args:
        num_classes: Number of classes.
        in_channels: Input image channels.
        width: Width multiplier, one of ``WIDTHS`` (0.5, 1.0, 1.5, 2.0).
        num_blocks: Split units per stage (after each stage's stride-2 unit).
    """

    # Its channel splits are strided views in channels-last memory, and copying them made CPU
    # training steps 0.76x as fast (docs/performance.md): kdlab.callbacks.FastPaths' automatic
    # layout keeps this network contiguous.
    prefers_channels_last = False

    def __init__(
        self,
        num_classes: int = 100,
        in_channels: int = 3,
        width: float = 1.0,
        num_blocks: tuple[int, int, int] = (3, 7, 3),
    ) -> None:
        super().__init__()
        if width not in WIDTHS:
            raise ValueError(f"ShuffleNetV2: width must be one of {sorted(WIDTHS)}, got {width}")
        *stage_channels, head = WIDTHS[width]
        self.num_classes = num_classes
        self.conv1 = nn.Conv2d(in_channels, _STEM_CHANNELS, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(_STEM_CHANNELS)
        self.relu = nn.ReLU(inplace=True)
        channels = _STEM_CHANNELS
        for k, (out, count) in enumerate(zip(stage_channels, num_blocks, strict=True), start=1):
            units = [ShuffleV2Down(channels, out), *(ShuffleV2Unit(out) for _ in range(count))]
            self.add_module(f"layer{k}", nn.Sequential(*units))
            channels = out
        self.conv2 = nn.Conv2d(channels, head, kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(head)
        self.relu2 = nn.ReLU(inplace=True)
        self.pool = global_pool()
        self.fc = nn.Linear(head, num_classes)
        stages = ["layer1", "layer2", "layer3"]
        preacts = [f"{s}.{n}.relu:input" for s, n in zip(stages, num_blocks, strict=True)]
        self.feature_points = tap_aliases("relu", stages, preacts)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.pool(self.relu2(self.bn2(self.conv2(x)))))


class shufflev2(ShuffleNetV2):
    """The CRD benchmark's "ShuffleV2": width 1× (116/232/464 channels, 1024 head), 3/7/3 units."""

    def __init__(self, num_classes: int = 100, in_channels: int = 3) -> None:
        super().__init__(num_classes=num_classes, in_channels=in_channels)
