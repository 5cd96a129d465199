"""The half-width CIFAR MobileNetV2 of the CRD benchmark ("MobileNetV2" in its tables).

MobileNetV2: Inverted Residuals and Linear Bottlenecks (Sandler et al., CVPR 2018), in the
CIFAR variant of Knowledge Distillation via Route Constrained Optimization (Jin et al., ICCV
2019) that the CRD benchmark (Tian et al., ICLR 2020) uses at width 0.5, expansion 6.
Parameter names match that benchmark's checkpoints except the classifier, ``fc`` here
(``classifier.0`` there).
"""

from __future__ import annotations

from torch import Tensor, nn

from kdlab.models.cifar._common import global_pool, init_normal, tap_aliases

# (expansion, output channels, blocks, stride of the first block); expansion None = the model's.
_SETTING: list[tuple[int | None, int, int, int]] = [
    (1, 16, 1, 1),
    (None, 24, 2, 1),
    (None, 32, 3, 2),
    (None, 64, 4, 2),
    (None, 96, 3, 1),
    (None, 160, 3, 2),
    (None, 320, 1, 1),
]
# Groups of blocks whose outputs are the four stages (ends of the 24/32/96/320-channel groups).
_STAGE_GROUPS = (1, 2, 4, 6)


def _conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class InvertedResidual(nn.Module):
    """1×1 expansion, 3×3 depthwise, linear 1×1 projection; residual when shapes allow.

    Unlike torchvision's, the expansion convolution is kept even at expansion 1 (as in the
    reference, which the parameter counts depend on).

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        stride: Stride of the depthwise convolution (1 or 2).
        expand_ratio: Expansion factor of the hidden channels.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = in_channels * expand_ratio
        self.use_res_connect = stride == 1 and in_channels == out_channels
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    """CIFAR MobileNetV2: stride-2 3×3 stem, seven groups of inverted residuals, 1×1 conv to
    1280 channels, global pooling, linear classifier. The defaults are the CRD benchmark's
    "MobileNetV2" (RepDistiller's ``mobile_half``).

    Stages end in linear bottlenecks (no ReLU), so there is no separate pre-activation:
    ``stageK_preact`` is the same tensor as ``stageK`` (``blocks.1``, ``blocks.2``,
    ``blocks.4``, ``blocks.6``), as in the reference. Other aliases: ``stem`` (``conv1``),
    ``embedding`` (``pool``), ``logits`` (``fc``).

    Args:
        num_classes: Number of classes.
        in_channels: Input image channels.
        expand_ratio: Expansion factor of the inverted residuals (after the first group).
        width_mult: Channel multiplier of the stem and the blocks.
    """

    def __init__(
        self, num_classes: int = 100, in_channels: int = 3, expand_ratio: int = 6, width_mult: float = 0.5
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        channels = int(32 * width_mult)
        self.conv1 = _conv_bn_relu(in_channels, channels, 3, stride=2)
        self.blocks = nn.ModuleList()
        for expansion, out, count, first_stride in _SETTING:
            out = int(out * width_mult)
            expansion = expansion or expand_ratio
            group = [InvertedResidual(channels, out, first_stride, expansion)]
            group += [InvertedResidual(out, out, 1, expansion) for _ in range(count - 1)]
            self.blocks.append(nn.Sequential(*group))
            channels = out
        last_channels = int(1280 * width_mult) if width_mult > 1.0 else 1280
        self.conv2 = _conv_bn_relu(channels, last_channels, 1, stride=1)
        self.pool = global_pool()
        self.fc = nn.Linear(last_channels, num_classes)
        init_normal(self, linear_std=0.01)
        stages = [f"blocks.{g}" for g in _STAGE_GROUPS]
        self.feature_points = tap_aliases("conv1", stages, stages)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(x)
        for group in self.blocks:
            x = group(x)
        return self.fc(self.pool(self.conv2(x)))


class mobilenetv2(MobileNetV2):
    """The CRD benchmark's "MobileNetV2": width 0.5, expansion 6 (RepDistiller's ``mobile_half``)."""

    def __init__(self, num_classes: int = 100, in_channels: int = 3) -> None:
        super().__init__(num_classes=num_classes, in_channels=in_channels, expand_ratio=6, width_mult=0.5)
