"""The Wide ResNets of the CRD benchmark (wrn_16_1, wrn_16_2, wrn_40_1, wrn_40_2).

Wide Residual Networks (Zagoruyko & Komodakis, BMVC 2016), pre-activation blocks, as used by
the CRD benchmark (Tian et al., ICLR 2020). Parameter names match that benchmark's checkpoints
(including the ``convShortcut`` spelling).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from kdlab.models.cifar._common import conv3x3, global_pool, init_normal, tap_aliases


class WideBlock(nn.Module):
    """BN-ReLU-conv, BN-ReLU-conv, plus an identity or 1×1-conv shortcut (pre-activation).

    ``relu1`` is not in place: in a stage's first block its input is the previous stage's
    pre-activation (BN of the stage output), which forward hooks tap as ``relu1:input``.

    Args:
        in_planes: Input channels.
        out_planes: Output channels.
        stride: Stride of the first convolution.
        drop_rate: Dropout probability between the two convolutions.
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU()
        self.conv1 = conv3x3(in_planes, out_planes, stride)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(out_planes, out_planes)
        self.drop_rate = drop_rate
        self.convShortcut: nn.Module | None = None  # the reference checkpoints' key
        if in_planes != out_planes:
            self.convShortcut = nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        activated = self.relu1(self.bn1(x))
        out = self.relu2(self.bn2(self.conv1(activated)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        out = self.conv2(out)
        # Widening blocks project the activated input; others add the raw input.
        shortcut = x if self.convShortcut is None else self.convShortcut(activated)
        return shortcut + out


class NetworkBlock(nn.Module):
    """One stage: ``layer`` holds its WideBlocks (the reference's parameter names)."""

    def __init__(self, blocks: int, in_planes: int, out_planes: int, stride: int, drop_rate: float) -> None:
        super().__init__()
        self.layer = nn.Sequential(
            *(
                WideBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1, drop_rate)
                for i in range(blocks)
            )
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """WRN-depth-k: 3×3 stem, three stages of pre-activation blocks, BN-ReLU, pooling, linear.

    Stage outputs are not activated (pre-activation design); a stage's pre-activation is the
    BN that opens the next stage: ``stage1_preact`` = ``block2.layer.0.relu1:input``,
    ``stage2_preact`` = ``block3.layer.0.relu1:input``, ``stage3_preact`` = ``relu:input``.
    Other aliases: ``stem`` (``conv1``), ``stage1..3`` (``block1..3``), ``embedding``
    (``pool``), ``logits`` (``fc``).

    Args:
        depth: 6n+4 layers (n blocks per stage), e.g. 16, 40.
        widen_factor: Width multiplier k of the stages (16k, 32k, 64k channels).
        num_classes: Number of classes.
        in_channels: Input image channels.
        drop_rate: Dropout probability inside the blocks.
    """

    def __init__(
        self,
        depth: int,
        widen_factor: int = 1,
        num_classes: int = 100,
        in_channels: int = 3,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6 != 0:
            raise ValueError(f"WideResNet: depth must be 6n+4 with n >= 1 (10, 16, 28, 40, ...), got {depth}")
        blocks = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.num_classes = num_classes
        self.conv1 = conv3x3(in_channels, widths[0])
        self.block1 = NetworkBlock(blocks, widths[0], widths[1], 1, drop_rate)
        self.block2 = NetworkBlock(blocks, widths[1], widths[2], 2, drop_rate)
        self.block3 = NetworkBlock(blocks, widths[2], widths[3], 2, drop_rate)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.relu = nn.ReLU()
        self.pool = global_pool()
        self.fc = nn.Linear(widths[3], num_classes)
        init_normal(self, linear_std=None)
        preacts = ["block2.layer.0.relu1:input", "block3.layer.0.relu1:input", "relu:input"]
        self.feature_points = tap_aliases("conv1", ["block1", "block2", "block3"], preacts)

    def forward(self, x: Tensor) -> Tensor:
        x = self.block3(self.block2(self.block1(self.conv1(x))))
        return self.fc(self.pool(self.relu(self.bn1(x))))


class wrn_16_1(WideResNet):
    """WRN-16-1 (2 blocks per stage, 16/32/64 channels)."""

    def __init__(self, num_classes: int = 100, in_channels: int = 3) -> None:
        super().__init__(16, 1, num_classes=num_classes, in_channels=in_channels)


class wrn_16_2(WideResNet):
    """WRN-16-2 (2 blocks per stage, 32/64/128 channels)."""

    def __init__(self, num_classes: int = 100, in_channels: int = 3) -> None:
        super().__init__(16, 2, num_classes=num_classes, in_channels=in_channels)


class wrn_40_1(WideResNet):
    """WRN-40-1 (6 blocks per stage, 16/32/64 channels)."""

    def __init__(self, num_classes: int = 100, in_channels: int = 3) -> None:
        super().__init__(40, 1, num_classes=num_classes, in_channels=in_channels)


class wrn_40_2(WideResNet):
    """WRN-40-2 (6 blocks per stage, 32/64/128 channels)."""

    def __init__(self, num_classes: int = 100, in_channels: int = 3) -> None:
        super().__init__(40, 2, num_classes=num_classes, in_channels=in_channels)
