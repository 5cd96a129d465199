"""Model zoo: small models for the bundled digits, the CIFAR KD zoo and ImageNet adapters."""

from kdlab.models.small import MLP, ConvNet

__all__ = ["MLP", "ConvNet"]
