"""Small networks sized for the bundled 8×8 digits (and any small image input)."""

from __future__ import annotations

import itertools

from torch import Tensor, nn


def _conv_block(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class ConvNet(nn.Module):
    """A three-stage CNN teacher: conv-BN-ReLU stages, global average pooling, linear head.

    Tap aliases (``feature_points``): ``stage1..3`` (``layer1..3``; 8×8, 4×4, 4×4 on the
    digits), ``stageK_preact`` (the input of the stage's last ReLU; stage 2's is taken before
    its max-pooling), ``embedding`` (``pool``), ``logits`` (``fc``).

    Args:
        in_channels: Input image channels (1 for the digits).
        num_classes: Number of classes.
        width: Channels of the first stage; later stages use 2× and 4×.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 32) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.layer1 = _conv_block(in_channels, width)
        self.layer2 = nn.Sequential(_conv_block(width, 2 * width), nn.MaxPool2d(2))
        self.layer3 = _conv_block(2 * width, 4 * width)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(4 * width, num_classes)
        self.feature_points = {
            **{f"stage{k}": f"layer{k}" for k in (1, 2, 3)},
            "stage1_preact": "layer1.2:input",
            "stage2_preact": "layer2.0.2:input",  # before the max-pooling
            "stage3_preact": "layer3.2:input",
            "embedding": "pool",
            "logits": "fc",
        }

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.layer3(self.layer2(self.layer1(x)))))


class StridedConvNet(nn.Module):
    """A three-stage CNN student with strided convolutions in its first and last stage.

    On 8×8 digits its stages are 4×4, 4×4 and 2×2, so paired with :class:`ConvNet` (8×8, 4×4,
    4×4; pre-activations 8×8, 8×8, 4×4) channels and spatial sizes differ, by the factors of
    2 typical of cross-architecture CIFAR pairs.

    Tap aliases (``feature_points``): ``stage1..3`` (``layer1..3``), ``stageK_preact``
    (``layerK.2:input``), ``embedding`` (``pool``), ``logits`` (``fc``).

    Args:
        in_channels: Input image channels (1 for the digits).
        num_classes: Number of classes.
        width: Channels of the first stage; later stages use 2× and 4×.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 12) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.layer1 = _conv_block(in_channels, width, stride=2)
        self.layer2 = _conv_block(width, 2 * width)
        self.layer3 = _conv_block(2 * width, 4 * width, stride=2)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(4 * width, num_classes)
        self.feature_points = {
            **{f"stage{k}": f"layer{k}" for k in (1, 2, 3)},
            **{f"stage{k}_preact": f"layer{k}.2:input" for k in (1, 2, 3)},
            "embedding": "pool",
            "logits": "fc",
        }

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.layer3(self.layer2(self.layer1(x)))))


class MLP(nn.Module):
    """A multi-layer perceptron student over flattened images.

    Tap points: ``hidden.<i>`` (the i-th hidden activation, e.g. ``hidden.0``) and ``fc``;
    aliases ``embedding`` (the last hidden activation) and ``logits``.

    Args:
        in_channels: Input image channels.
        image_size: Side of the (square) input image; the MLP reads ``in_channels*image_size²`` values.
        num_classes: Number of classes.
        hidden: Sizes of the hidden layers.
    """

    def __init__(
        self,
        in_channels: int = 1,
        image_size: int = 8,
        num_classes: int = 10,
        hidden: list[int] | None = None,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        sizes = [in_channels * image_size**2, *(hidden if hidden is not None else [32])]
        self.flatten = nn.Flatten()
        self.hidden = nn.ModuleList(
            nn.Sequential(nn.Linear(a, b), nn.ReLU(inplace=True)) for a, b in itertools.pairwise(sizes)
        )
        self.fc = nn.Linear(sizes[-1], num_classes)
        last = f"hidden.{len(self.hidden) - 1}" if len(self.hidden) else "flatten"
        self.feature_points = {"embedding": last, "logits": "fc"}

    def forward(self, x: Tensor) -> Tensor:
        x = self.flatten(x)
        for layer in self.hidden:
            x = layer(x)
        return self.fc(x)
