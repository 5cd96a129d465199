"""The VGG networks of the CRD benchmark (vgg8, vgg11, vgg13, vgg16, vgg19, with BatchNorm).

Very Deep Convolutional Networks for Large-Scale Image Recognition (Simonyan & Zisserman,
ICLR 2015), in the CIFAR form of the CRD benchmark (Tian et al., ICLR 2020): five conv blocks,
no fully-connected hidden layers, global pooling and one linear classifier. Parameter names
match that benchmark's checkpoints except the classifier, ``fc`` here (``classifier`` there).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from kdlab.models.cifar._common import global_pool, init_normal, tap_aliases

# Output channels of each conv layer, per block.
CONFIGS: dict[str, list[list[int]]] = {
    "vgg8": [[64], [128], [256], [512], [512]],
    "vgg11": [[64], [128], [256, 256], [512, 512], [512, 512]],
    "vgg13": [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
    "vgg16": [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]],
    "vgg19": [[64, 64], [128, 128], [256, 256, 256, 256], [512, 512, 512, 512], [512, 512, 512, 512]],
}


def _block(channels: Sequence[int], in_channels: int, batch_norm: bool) -> nn.Sequential:
    """Conv(-BN)-ReLU layers, without the last ReLU (the network applies it as its own module)."""
    layers: list[nn.Module] = []
    for out_channels in channels:
        layers.append(nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(out_channels))
        layers.append(nn.ReLU(inplace=True))
        in_channels = out_channels
    return nn.Sequential(*layers[:-1])


class VGG(nn.Module):
    """Five conv blocks separated by 2×2 max-pooling, global average pooling, linear classifier.

    Each block's final ReLU is the module ``relu<k>`` (not in place). Tap aliases: ``stem``
    (``relu0``), ``stage1..4`` (``relu1..4``), ``stageK_preact`` (``reluK:input``),
    ``embedding`` (``pool``), ``logits`` (``fc``). As in the reference, the fourth max-pool
    (``pool3``) is applied only to 64×64 inputs, so 32×32 inputs end at 4×4 before pooling.

    Args:
        config: Channels of each conv layer, per block (five blocks); see ``CONFIGS``.
        num_classes: Number of classes.
        in_channels: Input image channels.
        batch_norm: Insert BatchNorm after every convolution (the benchmark's choice).
    """

    def __init__(
        self,
        config: Sequence[Sequence[int]] = CONFIGS["vgg8"],
        num_classes: int = 100,
        in_channels: int = 3,
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        if len(config) != 5:
            raise ValueError(f"VGG: config must list five blocks of channels, got {len(config)}")
        self.num_classes = num_classes
        widths = [in_channels] + [block[-1] for block in config]
        for k in range(5):
            self.add_module(f"block{k}", _block(config[k], widths[k], batch_norm))
            self.add_module(f"relu{k}", nn.ReLU())
        for k in range(4):
            self.add_module(f"pool{k}", nn.MaxPool2d(kernel_size=2, stride=2))
        self.pool = global_pool()
        self.fc = nn.Linear(widths[-1], num_classes)
        init_normal(self, linear_std=0.01)
        stages = ["relu1", "relu2", "relu3", "relu4"]
        self.feature_points = tap_aliases("relu0", stages, [f"{s}:input" for s in stages])

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[2]
        x = self.pool0(self.relu0(self.block0(x)))
        x = self.pool1(self.relu1(self.block1(x)))
        x = self.pool2(self.relu2(self.block2(x)))
        x = self.relu3(self.block3(x))
        if size == 64:
            x = self.pool3(x)
        x = self.relu4(self.block4(x))
        return self.fc(self.pool(x))


class vgg8(VGG):
    """VGG-8 with BatchNorm (one conv per block)."""

    def __init__(self, num_classes: int = 100, in_channels: int = 3) -> None:
        super().__init__(CONFIGS["vgg8"], num_classes=num_classes, in_channels=in_channels)


class vgg11(VGG):
    """VGG-11 with BatchNorm (configuration A)."""

    def __init__(self, num_classes: int = 100, in_channels: int = 3) -> None:
        super().__init__(CONFIGS["vgg11"], num_classes=num_classes, in_channels=in_channels)


class vgg13(VGG):
    """VGG-13 with BatchNorm (configuration B)."""

    def __init__(self, num_classes: int = 100, in_channels: int = 3) -> None:
        super().__init__(CONFIGS["vgg13"], num_classes=num_classes, in_channels=in_channels)


class vgg16(VGG):
    """VGG-16 with BatchNorm (configuration D)."""

    def __init__(self, num_classes: int = 100, in_channels: int = 3) -> None:
        super().__init__(CONFIGS["vgg16"], num_classes=num_classes, in_channels=in_channels)


class vgg19(VGG):
    """VGG-19 with BatchNorm (configuration E)."""

    def __init__(self, num_classes: int = 100, in_channels: int = 3) -> None:
        super().__init__(CONFIGS["vgg19"], num_classes=num_classes, in_channels=in_channels)
