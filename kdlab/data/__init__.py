"""LightningDataModules yielding ``(inputs, targets, indices)`` batches."""

from kdlab.data.digits import DigitsDataModule

__all__ = ["DigitsDataModule"]
