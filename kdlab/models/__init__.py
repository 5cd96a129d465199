"""Model zoo: small models for the bundled digits, the CIFAR KD zoo, ImageNet adapters, and
timm / Hugging Face models from local files (optional extras ``kdlab[timm]``, ``kdlab[hf]``)."""

from kdlab.models.hf_models import HuggingFaceClassifier
from kdlab.models.imagenet import MobileNetV1, TorchvisionModel, torchvision_model
from kdlab.models.recurrent import RowLSTM
from kdlab.models.small import MLP, ConvNet
from kdlab.models.timm_models import TimmModel, timm_model

__all__ = [
    "MLP",
    "ConvNet",
    "HuggingFaceClassifier",
    "MobileNetV1",
    "RowLSTM",
    "TimmModel",
    "TorchvisionModel",
    "timm_model",
    "torchvision_model",
]
