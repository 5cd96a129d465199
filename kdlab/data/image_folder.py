"""Any folder of images, one sub-folder per class, decoded once into memory and augmented on the device.

The images are decoded at ``setup`` (threads, :mod:`kdlab.data.decoded_images`) into one uint8
tensor per split at ``image_size``, so training runs exactly like CIFAR's: whole batches cut from
memory, the pad-4 crop + flip view set applied on the device (:mod:`kdlab.data.in_memory`), and a
teacher-output cache (:class:`~kdlab.callbacks.TeacherCache`) that works. Folders too big for
memory are for :class:`~kdlab.data.ImageNetDataModule`, which streams files from disk.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor

from kdlab.data.augment import ChannelStats
from kdlab.data.decoded_images import channel_stats, decode_files, decoded_bytes
from kdlab.data.image_folder_layout import FolderLayout, check_class_folders, find_layout, folder_classes
from kdlab.data.imagenet_classes import resolve_classes
from kdlab.data.imagenet_files import list_split, skipped_files_report
from kdlab.data.in_memory import InMemoryViews, TensorBatches
from kdlab.data.subsets import hold_out, select_per_class

_FLAT_VAL_FRACTION = 0.1  # held out of each class when the folder has no val/ or test/


class ImageFolderDataModule(InMemoryViews):
    """A folder of class folders (``root/<class>/*`` or ``root/{train,val,test}/<class>/*``), in memory.

    Layouts, detected from the folder:

    - ``root/train/<class>/*`` with ``root/val/<class>/*`` and/or ``root/test/<class>/*``:
      validation runs on ``val/`` (or ``test/`` where there is no ``val/``), testing on ``test/``
      (or ``val/``); ``val_fraction > 0`` holds out part of ``train/`` for validation instead.
    - ``root/<class>/*``: ``val_fraction`` (default 0.1) of each class is held out (seeded) for
      validation, which is also the test split.

    Classes are the class folders, sorted by name, or ``classes`` in the order given (labels
    ``0..k-1``). Images (JPEG, PNG) are decoded at ``setup`` into uint8 tensors at
    ``image_size`` (shorter side resized, then center-cropped; images already that size are
    kept as decoded). Batches are ``(uint8 images, targets, indices)`` on the host; on the device
    training batches become ``(views, targets, indices, view_ids)`` (the CIFAR crop + flip view
    set, :mod:`kdlab.data.augment`) and evaluation batches ``(images, targets, indices)``, all
    normalised. Files that fail to decode are left out and reported (``skipped_files``).

    Args:
        root: The image folder.
        image_size: Side of the square images the model sees (and that are kept in memory).
        channels: 3 (RGB) or 1 (grayscale).
        classes: Class folder names in label order (a list, or a file with one name per line);
            None: every class folder, sorted by name.
        val_fraction: Fraction of each training class held out for validation; None: 0.1 for
            ``root/<class>/*``, 0 (validate on ``val/``) for ``root/train/...``.
        images_per_class: Keep at most this many training images per class (seeded).
        train_fraction: Keep this fraction of each training class (seeded), if no images_per_class.
        mean: Per-channel mean for normalisation, in [0, 1]; None: computed from the training
            split's pixels at setup (and kept in checkpoints).
        std: Per-channel standard deviation, in [0, 1]; None: computed with the mean.
        batch_size: Samples per batch on each process.
        seed: Seed of subsets, validation split, shuffling and augmentation views.
        num_workers: DataLoader worker processes (0 is fastest for in-memory batches).
        pin_memory: Pin host batches for fast GPU copies (default: when CUDA is available).
        augment: Random crop (zero padding 4) + horizontal flip for training (else the image as is).
        views_per_sample: Restrict each training sample to this many of its 162 views, so that a
            teacher-output cache is complete after that many epochs (see CIFARDataModule).
        strong_view: Training batches also carry a RandAugment view (for MLKD); needs channels=3.
        max_memory_gb: Refuse to decode more than this many GB of pixels (each process holds a copy).
        decode_threads: Threads decoding images at setup (None: one per usable CPU core).
    """

    def __init__(
        self,
        root: str,
        image_size: int = 32,
        channels: int = 3,
        classes: list[str] | str | None = None,
        val_fraction: float | None = None,
        images_per_class: int | None = None,
        train_fraction: float = 1.0,
        mean: list[float] | None = None,
        std: list[float] | None = None,
        batch_size: int = 128,
        seed: int = 0,
        num_workers: int = 0,
        pin_memory: bool | None = None,
        augment: bool = True,
        views_per_sample: int | None = None,
        strong_view: bool = False,
        max_memory_gb: float = 8.0,
        decode_threads: int | None = None,
    ) -> None:
        super().__init__(batch_size, seed, num_workers, augment, pin_memory, views_per_sample, strong_view)
        _check_arguments(image_size, channels, val_fraction, images_per_class, train_fraction, mean, std)
        if strong_view and channels != 3:
            raise ValueError("strong_view needs channels=3 (RandAugment's colour operations need RGB)")
        self.save_hyperparameters()
        self.root = Path(root).expanduser()
        self.input_shape = (channels, image_size, image_size)
        self._layout: FolderLayout | None = None  # read from the folder when first needed
        self._class_names = resolve_classes(classes, self.root) if classes is not None else None
        self.mean = tuple(mean) if mean is not None else None
        self.std = tuple(std) if std is not None else None
        self.files: dict[str, list[str]] = {}
        self.skipped_files: dict[str, str] = {}

    @property
    def class_names(self) -> list[str]:
        """The class of each label id: ``classes``, or the folder's class folders, sorted by name."""
        if self._class_names is None:
            self._class_names = folder_classes(self.layout)
        return self._class_names

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def val_fraction(self) -> float:
        """The fraction of each training class held out for validation (resolved for the layout)."""
        given = self.hparams.val_fraction
        if given is not None:
            return given
        return _FLAT_VAL_FRACTION if self.layout.kind == "classes" else 0.0

    @property
    def layout(self) -> FolderLayout:
        """Where the folder's splits are (:func:`~kdlab.data.image_folder_layout.find_layout`)."""
        if self._layout is None:
            self._layout = find_layout(self.root)
        return self._layout

    def _dataset_name(self) -> str:
        return "imagefolder"

    # ----------------------------------------------------------------------------- setup
    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        started = time.perf_counter()
        sources = self._select()
        count = len({path for files, _ in sources.values() for path in files})
        self._check_memory(count)
        decoded: dict[int, tuple[TensorBatches, list[str]]] = {}  # val and test may be the same files
        for split, (files, labels) in sources.items():
            if id(files) not in decoded:
                decoded[id(files)] = self._decode(split, files, labels)
        self._report_skipped()
        splits = {split: decoded[id(files)][0] for split, (files, _) in sources.items()}
        if self.mean is None or self.std is None:
            mean, std = channel_stats(splits["train"].images)
            self.mean, self.std = self.mean or mean, self.std or std
        self._stats = ChannelStats(self.mean, self.std)
        self.files = {split: decoded[id(files)][1] for split, (files, _) in sources.items()}
        self.splits = splits  # last: a setup that failed half-way is done again
        sizes = ", ".join(f"{len(splits[name])} {name}" for name in ("train", "val", "test"))
        rank_zero_info(
            f"ImageFolderDataModule: {count - len(self.skipped_files)} images of {self.root} decoded at "
            f"{'×'.join(map(str, self.input_shape))} in {time.perf_counter() - started:.1f} s ({sizes}); "
            f"mean {self.mean}, std {self.std}"
        )

    def _select(self) -> dict[str, tuple[list[str], Tensor]]:
        """The files and labels of each split, subsets and held-out rows applied (nothing decoded)."""
        layout, names, hp = self.layout, self.class_names, self.hparams
        check_class_folders(layout.train, names)
        files, labels = list_split(layout.train, names)
        rows, held = torch.arange(len(files)), None
        if layout.kind == "classes" and self.val_fraction == 0:
            raise ValueError(
                f"{self.root} holds class folders but no val/ or test/ folder, so validation needs part of "
                "each class: set val_fraction > 0 (default 0.1), or add train/ and val/ folders"
            )
        if self.val_fraction > 0:
            rows, held = hold_out(labels, rows, self.val_fraction, self.seed, dict(enumerate(names)))
        classes = list(range(len(names)))
        chosen = select_per_class(
            labels[rows], classes, names, self.seed, hp.images_per_class, hp.train_fraction, strict=False
        )
        sources = {"train": _rows(files, labels, rows[chosen])}
        folders = {name: getattr(layout, name) for name in ("val", "test") if getattr(layout, name)}
        for name, folder in folders.items():
            check_class_folders(folder, names)
            sources[name] = list_split(folder, names)
        if held is not None:
            sources["val"] = _rows(files, labels, held)
        elif "val" not in sources:
            if "test" not in sources:
                raise FileNotFoundError(
                    f"{self.root} has train/ but neither val/ nor test/; add "
                    f"{self.root}/val/<class>/<image>, or set val_fraction (e.g. 0.1) to hold out part of "
                    "train/ for validation"
                )
            sources["val"] = sources["test"]
        sources.setdefault("test", sources["val"])
        return sources

    def _check_memory(self, count: int) -> None:
        needed = decoded_bytes(count, *self.input_shape[:2]) / 1e9
        if needed > self.hparams.max_memory_gb:
            c, size, _ = self.input_shape
            raise ValueError(
                f"ImageFolderDataModule: decoding the {count} images of {self.root} at {c}×{size}×{size} "
                f"would take {needed:.1f} GB of memory (per process), over max_memory_gb="
                f"{self.hparams.max_memory_gb}; raise max_memory_gb, lower image_size, decode a subset "
                "(images_per_class, train_fraction), or stream the folder from disk with "
                "kdlab.data.ImageNetDataModule (root/{train,val}/<class>/*)"
            )

    def _decode(self, split: str, files: list[str], labels: Tensor) -> tuple[TensorBatches, list[str]]:
        channels, size, _ = self.input_shape
        images, kept, damaged = decode_files(files, channels, size, self.hparams.decode_threads)
        self.skipped_files.update(damaged)
        emptied = set(labels.tolist()) - set(labels[kept].tolist())
        if emptied:
            names = [self.class_names[c] for c in sorted(emptied)]
            raise ValueError(f"every {split} image of class(es) {names} failed to decode: {sorted(damaged)}")
        return TensorBatches(images, labels[kept]), [files[k] for k in kept.tolist()]

    def _report_skipped(self) -> None:
        what = "image file(s) that failed to decode"
        report = skipped_files_report("ImageFolderDataModule", self.skipped_files, what)
        if report:
            rank_zero_warn(report)

    # ----------------------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """The normalisation the network is trained with (computed from the pixels when not given)."""
        return {"mean": list(self.mean), "std": list(self.std)} if self.mean is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "mean" not in state_dict:
            return
        mean, std = tuple(state_dict["mean"]), tuple(state_dict["std"])
        if (mean, std) != (self.mean, self.std):
            rank_zero_warn(
                f"ImageFolderDataModule: the checkpoint was trained with mean {mean}, std {std}, the "
                f"data now gives mean {self.mean}, std {self.std}; using the checkpoint's (the network "
                "expects them)"
            )
            self.mean, self.std, self._stats = mean, std, ChannelStats(mean, std)


def _rows(files: list[str], labels: Tensor, rows: Tensor) -> tuple[list[str], Tensor]:
    return [files[r] for r in rows.tolist()], labels[rows]


def _check_arguments(
    image_size: int,
    channels: int,
    val_fraction: float | None,
    images_per_class: int | None,
    train_fraction: float,
    mean: list[float] | None,
    std: list[float] | None,
) -> None:
    if image_size < 1:
        raise ValueError(f"image_size must be positive, got {image_size}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 3 (RGB) or 1 (grayscale), got {channels}")
    if val_fraction is not None and not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if images_per_class is not None and images_per_class < 1:
        raise ValueError(f"images_per_class must be at least 1, got {images_per_class}")
    if not 0 < train_fraction <= 1:
        raise ValueError(f"train_fraction must be in (0, 1], got {train_fraction}")
    for name, values in (("mean", mean), ("std", std)):
        if values is not None and len(values) != channels:
            raise ValueError(f"{name} needs one value per channel ({channels}), got {list(values)}")
    if std is not None and min(std) <= 0:
        raise ValueError(f"std must be positive, got {list(std)}")
