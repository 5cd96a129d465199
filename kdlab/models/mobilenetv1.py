"""MobileNetV1 for ImageNet, the student of the ResNet50→MobileNetV1 pair.

MobileNets: Efficient Convolutional Neural Networks for Mobile Vision Applications (Howard et
al., 2017), width 1.0 with BatchNorm (4,231,976 parameters at 1,000 classes), as used for the
ImageNet tables of CRD (Tian et al., ICLR 2020) and ReviewKD (Chen et al., CVPR 2021).
Parameter names (``model.<i>.<j>``, ``fc``) match those papers' checkpoints.
"""

from __future__ import annotations

from torch import Tensor, nn

# (output channels, stride) of the depthwise-separable blocks after the stem.
_BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), *[(512, 1)] * 5, (1024, 2), (1024, 1)]
# Indices in ``model`` of the blocks ending the 128/256/512/1024-channel stages.
_STAGE_ENDS = (3, 5, 11, 13)


def _separable(in_channels: int, out_channels: int, stride: int, final_inplace: bool) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, in_channels, 3, stride, 1, groups=in_channels, bias=False),
        nn.BatchNorm2d(in_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(in_channels, out_channels, 1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=final_inplace),
    )


class MobileNetV1(nn.Module):
    """Stride-2 3×3 stem (32 channels), 13 depthwise-separable blocks, global pooling, linear.

    Tap aliases (``feature_points``): ``stem`` (``model.0``), ``stage1..4`` (``model.3``,
    ``model.5``, ``model.11``, ``model.13``; 128/256/512/1024 channels at ¼…⅛… of the input
    side: 56, 28, 14, 7 for 224×224), ``stageK_preact`` (``model.<i>.5:input``, those blocks'
    final ReLU, not in place), ``embedding`` (``pool``), ``logits`` (``fc``).

    Args:
        num_classes: Number of classes.
        in_channels: Input image channels.
    """

    def __init__(self, num_classes: int = 1000, in_channels: int = 3) -> None:
        super().__init__()
        self.num_classes = num_classes
        layers = [
            nn.Sequential(
                nn.Conv2d(in_channels, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(inplace=True)
            )
        ]
        channels = 32
        for index, (out_channels, stride) in enumerate(_BLOCKS, start=1):
            layers.append(_separable(channels, out_channels, stride, final_inplace=index not in _STAGE_ENDS))
            channels = out_channels
        self.model = nn.Sequential(*layers)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        self.fc = nn.Linear(channels, num_classes)
        ends = enumerate(_STAGE_ENDS, start=1)
        self.feature_points = {"stem": "model.0"} | {f"stage{k}": f"model.{i}" for k, i in ends}
        ends = enumerate(_STAGE_ENDS, start=1)
        self.feature_points |= {f"stage{k}_preact": f"model.{i}.5:input" for k, i in ends}
        self.feature_points |= {"embedding": "pool", "logits": "fc"}

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.model(x)))
