"""The 8×8 handwritten digits that ship with scikit-learn, as a LightningDataModule."""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch.utils.data import DataLoader, TensorDataset

from kdlab.data.sampling import SplitLoaders, batch_loader


class DigitsDataModule(SplitLoaders):
    """scikit-learn's 1,797 handwritten digits (8×8, 10 classes), no download needed.

    The stratified train/val/test split is fixed by ``seed``; pixels (0–16) are scaled to
    [0, 1] and normalised by the training split's mean and std. Batches are
    ``(images, targets, indices)`` with images of shape ``(batch, 1, 8, 8)``. The training
    order is reshuffled every epoch from ``(seed, epoch)`` alone, so a resumed run sees the
    same batches; under DDP each process takes an interleaved shard of that order, so the
    batches of all processes together are the single-process batches.

    Args:
        batch_size: Samples per batch.
        val_fraction: Fraction of all images held out for validation.
        test_fraction: Fraction of all images held out for the test split.
        train_fraction: Fraction of the remaining training images to keep (a low-data regime).
        seed: Seed of the split and of the shuffling.
        num_workers: DataLoader worker processes.
    """

    num_classes = 10
    input_shape = (1, 8, 8)

    def __init__(
        self,
        batch_size: int = 64,
        val_fraction: float = 0.2,
        test_fraction: float = 0.2,
        train_fraction: float = 1.0,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if not 0 < value < 1:
                raise ValueError(f"DigitsDataModule: {name} must be in (0, 1), got {value}")
        if val_fraction + test_fraction >= 1:
            raise ValueError("DigitsDataModule: val_fraction + test_fraction must leave training images")
        if not 0 < train_fraction <= 1:
            raise ValueError(f"DigitsDataModule: train_fraction must be in (0, 1], got {train_fraction}")
        self.save_hyperparameters()
        self.batch_size = batch_size
        self.splits: dict[str, TensorDataset] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        digits = load_digits()
        images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
        targets = torch.tensor(digits.target, dtype=torch.long)
        hp = self.hparams
        index = torch.arange(len(targets)).numpy()
        rest, test = train_test_split(
            index, test_size=hp.test_fraction, stratify=targets, random_state=hp.seed
        )
        train, val = train_test_split(
            rest,
            test_size=hp.val_fraction / (1 - hp.test_fraction),
            stratify=targets[rest],
            random_state=hp.seed,
        )
        if hp.train_fraction < 1:
            keep = _subset_size(hp.train_fraction, len(train), self.num_classes)
            if len(train) - keep >= self.num_classes:  # else the fraction keeps (almost) all
                train, _ = train_test_split(
                    train, train_size=keep, stratify=targets[train], random_state=hp.seed
                )
        mean, std = images[train].mean(), images[train].std()
        images = (images - mean) / std
        for name, rows in (("train", train), ("val", val), ("test", test)):
            rows = torch.as_tensor(sorted(rows))
            self.splits[name] = TensorDataset(images[rows], targets[rows], torch.arange(len(rows)))

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        # TensorDataset returns a whole batch for a list of positions, so batches are cut by a
        # seeded, DDP-aware batch sampler (kdlab.data.sampling), the same one CIFAR uses.
        hp = self.hparams
        return batch_loader(
            self.splits[split], self.batch_size, shuffle, hp.seed, hp.num_workers, False, self.trainer
        )


def _subset_size(fraction: float, available: int, classes: int) -> int:
    keep = int(fraction * available)
    if keep < classes:
        raise ValueError(
            f"DigitsDataModule: train_fraction={fraction} keeps {keep} of the {available} training "
            f"images, fewer than one per class ({classes}); raise train_fraction to at least "
            f"{classes / available:.3f}"
        )
    return keep
