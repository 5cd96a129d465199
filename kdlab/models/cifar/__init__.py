"""The CIFAR model zoo of the CRD benchmark (Tian et al., ICLR 2020), which later KD papers reuse.

Every model name (``resnet8x4``, ``wrn_40_2``, ...) takes ``(num_classes=100, in_channels=3)`` so
a config names it by ``class_path`` (``kdlab.models.cifar.resnet8x4``) and the CLI links
``num_classes`` from the data. The names are thin subclasses of the family classes rather than
factory functions because jsonargparse cannot link arguments into a function's signature.
Every model has ``num_classes`` and ``feature_points`` (tap alias → module path; docs/taps.md).
Parameter names are the benchmark's (classifier: ``fc``); ``kdlab.models.cifar.reference``
converts its published checkpoints.
"""

from kdlab.models.cifar.mobilenetv2 import MobileNetV2, mobilenetv2
from kdlab.models.cifar.resnet import (
    ResNet,
    resnet8,
    resnet8x4,
    resnet14,
    resnet20,
    resnet32,
    resnet32x4,
    resnet44,
    resnet56,
    resnet110,
)
from kdlab.models.cifar.resnet50 import BottleneckResNet, resnet50
from kdlab.models.cifar.shufflenetv1 import ShuffleNetV1, shufflev1
from kdlab.models.cifar.shufflenetv2 import ShuffleNetV2, shufflev2
from kdlab.models.cifar.vgg import VGG, vgg8, vgg11, vgg13, vgg16, vgg19
from kdlab.models.cifar.wrn import WideResNet, wrn_16_1, wrn_16_2, wrn_40_1, wrn_40_2

# Model by name; the CRD tables' spelling of the last four is ResNet50, MobileNetV2, ShuffleV1/V2.
ZOO = {
    f.__name__: f
    for f in (
        resnet8,
        resnet14,
        resnet20,
        resnet32,
        resnet44,
        resnet56,
        resnet110,
        resnet8x4,
        resnet32x4,
        resnet50,
        wrn_16_1,
        wrn_16_2,
        wrn_40_1,
        wrn_40_2,
        vgg8,
        vgg11,
        vgg13,
        vgg16,
        vgg19,
        mobilenetv2,
        shufflev1,
        shufflev2,
    )
}

__all__ = [
    "VGG",
    "ZOO",
    "BottleneckResNet",
    "MobileNetV2",
    "ResNet",
    "ShuffleNetV1",
    "ShuffleNetV2",
    "WideResNet",
    "mobilenetv2",
    "resnet8",
    "resnet8x4",
    "resnet14",
    "resnet20",
    "resnet32",
    "resnet32x4",
    "resnet44",
    "resnet50",
    "resnet56",
    "resnet110",
    "shufflev1",
    "shufflev2",
    "vgg8",
    "vgg11",
    "vgg13",
    "vgg16",
    "vgg19",
    "wrn_16_1",
    "wrn_16_2",
    "wrn_40_1",
    "wrn_40_2",
]
