"""LightningDataModules yielding ``(inputs, targets, indices)`` batches."""

from kdlab.data.cifar import CIFARDataModule
from kdlab.data.digits import DigitsDataModule
from kdlab.data.image_folder import ImageFolderDataModule
from kdlab.data.imagenet import ImageNetDataModule

__all__ = ["CIFARDataModule", "DigitsDataModule", "ImageFolderDataModule", "ImageNetDataModule"]
