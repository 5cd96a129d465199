"""Pieces shared by the CIFAR zoo: global pooling, weight initialisation, tap aliases."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn


def global_pool() -> nn.Sequential:
    """Global average pooling to a flat ``(batch, channels)`` embedding.

    The reference uses fixed ``AvgPool2d(8)``/``avg_pool2d(4)`` windows that equal global
    pooling at 32×32; the adaptive form gives the same numbers there and also runs on 8×8 inputs.
    """
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """A bias-free 3×3 convolution with padding 1."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def init_kaiming(model: nn.Module) -> None:
    """He-normal (fan-out) convolutions, unit BatchNorm (the CIFAR ResNets' initialisation)."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def init_normal(model: nn.Module, linear_std: float | None) -> None:
    """Normal(0, sqrt(2/fan-out)) convolutions with zero bias, unit BatchNorm, zero linear bias.

    Args:
        model: The network to initialise in place.
        linear_std: Std of the linear weights, or None to keep PyTorch's default for them.
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels
            nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            if linear_std is not None:
                nn.init.normal_(module.weight, 0.0, linear_std)
            nn.init.zeros_(module.bias)


def tap_aliases(stem: str, stages: Sequence[str], preacts: Sequence[str]) -> dict[str, str]:
    """The ``feature_points`` of a zoo model: stem, stageK, stageK_preact, embedding, logits."""
    points = {"stem": stem}
    points |= {f"stage{k}": path for k, path in enumerate(stages, start=1)}
    points |= {f"stage{k}_preact": path for k, path in enumerate(preacts, start=1)}
    return points | {"embedding": "pool", "logits": "fc"}


class ChannelShuffle(nn.Module):
    """ShuffleNet's channel shuffle: interleave the channels of ``groups`` groups.

    Args:
        groups: Number of channel groups.
    """

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        return x.view(n, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(n, c, h, w)
