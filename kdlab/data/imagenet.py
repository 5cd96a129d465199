"""ImageNet and its class subsets (Imagenette, ImageNet-100, any ImageFolder tree) as a DataModule."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from kdlab.data.augment import ChannelStats, normalize
from kdlab.data.image_transforms import RandomResizedCropFlip, ResizeCenterCrop
from kdlab.data.imagenet_classes import resolve_classes
from kdlab.data.imagenet_files import (
    decode,
    describe,
    find_damaged,
    layout_message,
    list_split,
    read_bytes,
    skipped_files_report,
)
from kdlab.data.sampling import SplitLoaders, batch_loader
from kdlab.data.subsets import hold_out, select_per_class

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_REPORTED: set[str] = set()  # per process: damaged files already reported by this worker


class ImageFileBatches(Dataset):
    """Image files decoded and transformed into uint8 batches; ``dataset[positions]`` is a batch.

    A file that fails to decode is dropped from its batch (with its target and index, so nothing
    is mislabeled) and reported once per process; files screened out in ``setup`` never get here.
    """

    def __init__(self, files: list[str], targets: Tensor, transform: Callable[[Tensor], Tensor]) -> None:
        self.files, self.targets, self.transform = files, targets, transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, positions: list[int]) -> tuple[Tensor, Tensor, Tensor]:
        images, kept = [], []
        for position in positions:
            image = self._load(self.files[position])
            if image is not None:
                images.append(self.transform(image))
                kept.append(position)
        if not kept:
            paths = [self.files[p] for p in positions]
            raise RuntimeError(f"no image of a batch could be decoded; check the storage holding {paths}")
        index = torch.as_tensor(kept, dtype=torch.int64)
        return torch.stack(images), self.targets[index], index

    @staticmethod
    def _load(path: str) -> Tensor | None:
        try:
            return decode(read_bytes(path))
        except (RuntimeError, OSError, ValueError) as error:
            if path not in _REPORTED:
                _REPORTED.add(path)
                warnings.warn(
                    f"skipped an image that failed to decode: {path} ({describe(error)})", stacklevel=2
                )
            return None


class ImageNetDataModule(SplitLoaders):
    """An ImageFolder tree ``root/{train,val}/<class>/*.JPEG``: ImageNet, a subset, or any such tree.

    Files are decoded by libjpeg-turbo (``torchvision.io``) in DataLoader workers, which build
    whole uint8 batches (train: RandomResizedCrop + horizontal flip; eval: resize to
    ``image_size / eval_crop_ratio``, center crop). Batches are ``(images, targets, indices)``;
    after the transfer to the device the images are normalised to float. ``val`` is the test
    split; ``val_fraction > 0`` holds out part of train for validation. Damaged files (empty,
    truncated, not an image) are found in ``setup`` by reading each file's first and last bytes,
    left out, counted and reported once with their paths (``skipped_files``).

    Args:
        root: Folder holding ``train/`` and ``val/``.
        classes: Class folders in label order: a list, a preset (``imagenette``, ``imagenet100``),
            a file with one name per line, or None for every folder of ``root/train``.
        images_per_class: Keep at most this many training images per class (seeded).
        image_size: Side of the square crops the model sees.
        batch_size: Samples per batch on each process.
        num_workers: DataLoader worker processes decoding images.
        val_fraction: Fraction of each training class held out for validation (0: validate on val).
        eval_crop_ratio: Center-crop fraction of the resized image for evaluation (0.875 = 224/256).
        mean: Per-channel mean for normalisation, in [0, 1].
        std: Per-channel standard deviation for normalisation, in [0, 1].
        seed: Seed of subsets, validation split and shuffling.
        check_files: Screen files for damage in ``setup`` (two small reads per file).
        pin_memory: Pin host batches for fast GPU copies (default: when CUDA is available).
    """

    def __init__(
        self,
        root: str,
        classes: list[str] | str | None = None,
        images_per_class: int | None = None,
        image_size: int = 224,
        batch_size: int = 256,
        num_workers: int = 8,
        val_fraction: float = 0.0,
        eval_crop_ratio: float = 0.875,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        seed: int = 0,
        check_files: bool = True,
        pin_memory: bool | None = None,
    ) -> None:
        super().__init__()
        _check_arguments(images_per_class, image_size, val_fraction, eval_crop_ratio)
        self.save_hyperparameters()
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise FileNotFoundError(f"ImageNet root {self.root} does not exist; {layout_message(self.root)}")
        if classes is None and not (self.root / "train").is_dir():
            raise FileNotFoundError(f"{self.root / 'train'} is missing; {layout_message(self.root)}")
        self.class_names = resolve_classes(classes, self.root / "train")
        self.input_shape = (3, image_size, image_size)
        self.mean, self.std = tuple(mean), tuple(std)
        self._stats = ChannelStats(mean, std)
        self.batch_size, self.seed = batch_size, seed
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.skipped_files: dict[str, str] = {}
        self.splits: dict[str, ImageFileBatches] = {}

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        hp = self.hparams
        files, labels = list_split(self.root / "train", self.class_names)
        classes = list(range(self.num_classes))
        rows = select_per_class(
            labels, classes, self.class_names, self.seed, hp.images_per_class, strict=False
        )
        test_files, test_labels = list_split(self.root / "val", self.class_names)
        test_rows = torch.arange(len(test_files))
        if hp.check_files:
            rows, test_rows = (
                self._screen(files, labels, rows),
                self._screen(test_files, test_labels, test_rows),
            )
            self._report_skipped()
        train_transform, eval_transform = _transforms(hp.image_size, hp.eval_crop_ratio)
        splits = {"test": _subset(test_files, test_labels, test_rows, eval_transform)}
        splits["val"] = splits["test"]
        if hp.val_fraction > 0:
            names = dict(enumerate(self.class_names))
            rows, val_rows = hold_out(labels, rows, hp.val_fraction, self.seed, names)
            splits["val"] = _subset(files, labels, val_rows, eval_transform)
        splits["train"] = _subset(files, labels, rows, train_transform)
        self.splits = splits

    def _screen(self, files: list[str], labels: Tensor, rows: Tensor) -> Tensor:
        damaged = find_damaged([files[r] for r in rows.tolist()])
        self.skipped_files.update(damaged)
        keep = torch.tensor([files[r] not in damaged for r in rows.tolist()], dtype=torch.bool)
        emptied = set(labels[rows].tolist()) - set(labels[rows[keep]].tolist())
        if emptied:
            names = [self.class_names[c] for c in sorted(emptied)]
            raise ValueError(f"every image of class(es) {names} is damaged: {sorted(damaged)}")
        return rows[keep]

    def _report_skipped(self) -> None:
        report = skipped_files_report("ImageNetDataModule", self.skipped_files, "damaged image file(s)")
        if report:
            rank_zero_warn(report)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if split not in self.splits:
            raise RuntimeError("ImageNetDataModule: call setup() before asking for a DataLoader")
        workers = self.hparams.num_workers
        return batch_loader(
            self.splits[split], self.batch_size, shuffle, self.seed, workers, self.pin_memory, self.trainer
        )

    def on_after_batch_transfer(self, batch: tuple[Tensor, ...], dataloader_idx: int) -> tuple[Tensor, ...]:
        images, targets, indices = batch[:3]
        return normalize(images, *self._stats.on(images.device)), targets, indices


def _subset(
    files: list[str], labels: Tensor, rows: Tensor, transform: Callable[[Tensor], Tensor]
) -> ImageFileBatches:
    return ImageFileBatches([files[r] for r in rows.tolist()], labels[rows], transform)


def _transforms(size: int, crop_ratio: float) -> tuple[RandomResizedCropFlip, ResizeCenterCrop]:
    return RandomResizedCropFlip(size), ResizeCenterCrop(size, round(size / crop_ratio))


def _check_arguments(
    images_per_class: int | None, image_size: int, val_fraction: float, eval_crop_ratio: float
) -> None:
    if images_per_class is not None and images_per_class < 1:
        raise ValueError(f"images_per_class must be at least 1, got {images_per_class}")
    if image_size < 1:
        raise ValueError(f"image_size must be positive, got {image_size}")
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if not 0 < eval_crop_ratio <= 1:
        raise ValueError(f"eval_crop_ratio must be in (0, 1], got {eval_crop_ratio}")
