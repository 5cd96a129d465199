"""Small networks sized for the bundled 8×8 digits (and any small image input)."""

from __future__ import annotations

import itertools

from torch import Tensor, nn


def _conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class ConvNet(nn.Module):
    """A three-stage CNN teacher: conv-BN-ReLU stages, global average pooling, linear head.

    Tap points: ``layer1``, ``layer2``, ``layer3`` (stage outputs), ``pool`` (embedding), ``fc``.

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

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.layer3(self.layer2(self.layer1(x)))))


class MLP(nn.Module):
    """A multi-layer perceptron student over flattened images.

    Tap points: ``hidden.<i>`` (the i-th hidden activation, e.g. ``hidden.0``) and ``fc``.

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

    def forward(self, x: Tensor) -> Tensor:
        x = self.flatten(x)
        for layer in self.hidden:
            x = layer(x)
        return self.fc(x)
