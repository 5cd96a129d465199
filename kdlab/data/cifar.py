"""CIFAR-10 and CIFAR-100 (Krizhevsky, 2009) as a LightningDataModule with on-device augmentation.

Each split is held in memory as one uint8 tensor and batches are cut from it whole, so loading
costs one gather per batch. The standard KD augmentation runs on the batch's device after the
transfer (``on_after_batch_transfer``), so the accelerator, not the data workers, does the work.

The view set
------------
The CIFAR recipe of the KD literature (a random 32×32 crop of the image zero-padded by 4 pixels,
then a random horizontal flip) can produce exactly 162 distinct images of a sample: 9 vertical ×
9 horizontal crop offsets (0..8 in the 40×40 padded image) × 2 flip states. A training batch
therefore carries, besides the images, the id of the view each sample got
(:mod:`kdlab.data.augment`). The view is not drawn from a random-number generator but from a
SplitMix64 hash of ``(seed, epoch, sample index)`` computed on the device: a sample gets the same
view in a given epoch whatever batch or process it lands in and after a resume, and anyone can
recompute it with ``draw_views(indices, epoch, seed)`` and ``apply_views(images, view_ids, mean,
std)``. Teacher and student consume the one augmented tensor, so they always see the same view.
With ``views_per_sample=K`` each sample is restricted to K of its views, the same K for every
seed (:mod:`kdlab.data.view_order`), which makes a teacher-output cache fill up after K epochs.
"""

from __future__ import annotations

from pathlib import Path

import torch

from kdlab.data.augment import ChannelStats
from kdlab.data.cifar_files import FORMATS, files_present, missing_files_message, read_label_names, read_split
from kdlab.data.in_memory import InMemoryViews, TensorBatches
from kdlab.data.subsets import hold_out, select_per_class

__all__ = ["CIFARDataModule", "TensorBatches"]

_STATS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
_NUM_CLASSES = {("cifar10", False): 10, ("cifar100", False): 100, ("cifar100", True): 20}


class CIFARDataModule(InMemoryViews):
    """CIFAR-10/100 from the official python release, augmented batch-wise on the device.

    Batches from the DataLoaders are ``(uint8 images (B, 3, 32, 32), int64 targets, int64
    indices)``, ``indices`` being each sample's position in its split. After the transfer to the
    device, training batches become ``(float images, targets, indices, view_ids)`` (see the view
    set above) and evaluation batches ``(float images, targets, indices)``, normalised by the
    dataset's mean and std. Subsets (``classes``, ``samples_per_class``, ``train_fraction``) are
    seeded and per class; ``classes`` also restricts validation and test, relabelled ``0..k-1``
    in the order given. With ``val_fraction=0`` validation runs on the test split, as in KD papers.

    Args:
        dataset: ``"cifar10"`` or ``"cifar100"``.
        root: Folder holding ``cifar-10-batches-py/`` or ``cifar-100-python/``.
        download: Fetch and extract the official archive (md5-checked) into ``root`` if missing.
        batch_size: Samples per batch on each process.
        val_fraction: Fraction of each training class held out for validation (0: validate on test).
        classes: Keep only these classes (names from the meta file or label ids), in this order.
        samples_per_class: Keep this many training samples per class (seeded).
        train_fraction: Keep this fraction of each training class (seeded), if no samples_per_class.
        seed: Seed of subsets, validation split, shuffling and augmentation views.
        num_workers: DataLoader worker processes (0 is fastest for in-memory batches).
        coarse_labels: CIFAR-100's 20 superclasses instead of its 100 classes.
        augment: Random crop + flip for training (else every sample gets the identity view).
        pin_memory: Pin host batches for fast GPU copies (default: when CUDA is available).
        views_per_sample: Restrict each training sample to this many of its 162 views (the same
            ones for every seed), visited round-robin, one per epoch; a teacher-output cache
            (``kdlab.callbacks.TeacherCache``) is then complete after that many epochs, as in
            Fast Knowledge Distillation (Shen & Xing, ECCV 2022). None: all 162 views.
        strong_view: Training batches also carry a strong view of each sample (another crop +
            flip, then RandAugment(2, 10), :mod:`kdlab.data.randaugment`), for methods that
            train on weak and strong views together (MLKD): batches become ``(weak, targets,
            indices, view_ids, strong)``.
    """

    input_shape = (3, 32, 32)

    def __init__(
        self,
        dataset: str = "cifar100",
        root: str = "data",
        download: bool = False,
        batch_size: int = 64,
        val_fraction: float = 0.0,
        classes: list[str | int] | None = None,
        samples_per_class: int | None = None,
        train_fraction: float = 1.0,
        seed: int = 0,
        num_workers: int = 0,
        coarse_labels: bool = False,
        augment: bool = True,
        pin_memory: bool | None = None,
        views_per_sample: int | None = None,
        strong_view: bool = False,
    ) -> None:
        super().__init__(batch_size, seed, num_workers, augment, pin_memory, views_per_sample, strong_view)
        _check_arguments(dataset, coarse_labels, val_fraction, classes, samples_per_class, train_fraction)
        self.save_hyperparameters()
        self.dataset, self.root, self.download = dataset, Path(root).expanduser(), download
        self.classes = list(classes) if classes is not None else None
        self.coarse_labels = coarse_labels
        self.label_names: list[str] = []
        self._stats = ChannelStats(*_STATS[dataset])

    @property
    def num_classes(self) -> int:
        """Classes the model must predict: the selected classes, or all of the label set."""
        if self.classes is not None:
            return len(self.classes)
        return _NUM_CLASSES[(self.dataset, self.coarse_labels)]

    @property
    def mean(self) -> tuple[float, float, float]:
        return _STATS[self.dataset][0]

    @property
    def std(self) -> tuple[float, float, float]:
        return _STATS[self.dataset][1]

    # ----------------------------------------------------------------------------- files
    def prepare_data(self) -> None:
        if self.download and not files_present(self.root, self.dataset):
            from torchvision.datasets.utils import download_and_extract_archive

            fmt = FORMATS[self.dataset]
            download_and_extract_archive(fmt.url, str(self.root), md5=fmt.md5)

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        if not files_present(self.root, self.dataset):
            if not self.download:
                raise FileNotFoundError(missing_files_message(self.root, self.dataset))
            self.prepare_data()
        all_names = read_label_names(self.root, self.dataset, self.coarse_labels)
        class_ids = _resolve_classes(self.classes, all_names)
        self.label_names = [all_names[i] for i in class_ids]
        train_images, train_labels = read_split(self.root, self.dataset, "train", self.coarse_labels)
        test_images, test_labels = read_split(self.root, self.dataset, "test", self.coarse_labels)
        hp = self.hparams
        rows = select_per_class(
            train_labels, class_ids, self.label_names, self.seed, hp.samples_per_class, hp.train_fraction
        )
        relabel = torch.full((len(all_names),), -1, dtype=torch.int64)
        relabel[torch.as_tensor(class_ids)] = torch.arange(len(class_ids))
        test_rows = torch.isin(test_labels, torch.as_tensor(class_ids)).nonzero().flatten()
        splits = {"test": TensorBatches(test_images[test_rows], relabel[test_labels[test_rows]])}
        splits["val"] = splits["test"]
        if hp.val_fraction > 0:
            names = dict(zip(class_ids, self.label_names, strict=True))
            rows, val_rows = hold_out(train_labels, rows, hp.val_fraction, self.seed, names)
            splits["val"] = TensorBatches(train_images[val_rows], relabel[train_labels[val_rows]])
        splits["train"] = TensorBatches(train_images[rows], relabel[train_labels[rows]])
        self.splits = splits

    def _dataset_name(self) -> str:
        return self.dataset


def _resolve_classes(classes: list[str | int] | None, names: list[str]) -> list[int]:
    if classes is None:
        return list(range(len(names)))
    ids = []
    for item in classes:
        if isinstance(item, int) or (isinstance(item, str) and item.isdigit() and item not in names):
            if not 0 <= int(item) < len(names):
                raise ValueError(f"class id {item} is out of range: the label set has {len(names)} classes")
            ids.append(int(item))
        elif item in names:
            ids.append(names.index(item))
        else:
            raise ValueError(f"unknown class '{item}'; valid names: {', '.join(names)}")
    if len(set(ids)) != len(ids):
        raise ValueError(f"classes names the same class twice: {classes}")
    return ids


def _check_arguments(
    dataset: str,
    coarse: bool,
    val_fraction: float,
    classes: list[str | int] | None,
    samples_per_class: int | None,
    train_fraction: float,
) -> None:
    if dataset not in FORMATS:
        raise ValueError(f"dataset must be one of {sorted(FORMATS)}, got '{dataset}'")
    if coarse and dataset != "cifar100":
        raise ValueError("coarse_labels=True needs dataset='cifar100' (CIFAR-10 has no superclasses)")
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if not 0 < train_fraction <= 1:
        raise ValueError(f"train_fraction must be in (0, 1], got {train_fraction}")
    if samples_per_class is not None and samples_per_class < 1:
        raise ValueError(f"samples_per_class must be at least 1, got {samples_per_class}")
    if classes is not None:
        if len(classes) == 0:
            raise ValueError("classes is empty: list at least one class, or leave it unset for all")
        if len({str(c) for c in classes}) != len(classes):
            raise ValueError(f"classes lists a class twice: {classes}")
