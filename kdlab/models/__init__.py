"""Model zoo: small models for the bundled digits, the CIFAR KD zoo and ImageNet adapters."""

from kdlab.models.imagenet import MobileNetV1, TorchvisionModel, torchvision_model
from kdlab.models.recurrent import RowLSTM
from kdlab.models.small import MLP, ConvNet

__all__ = ["MLP", "ConvNet", "MobileNetV1", "RowLSTM", "TorchvisionModel", "torchvision_model"]
