"""Reading the official CIFAR-10/100 python release (Krizhevsky, 2009) into uint8 tensors.

The release stores each split as pickled dicts holding a numpy ``uint8`` array ``data`` of rows
``(N, 3072)`` (the red, green and blue 32×32 planes) and label lists. Reading that format needs
``pickle``; the unpickler here only resolves what the format uses (numpy's array reconstruction,
``numpy.dtype`` and the bytes codec), so a file that tries to build anything else is refused.
Extracted files are not md5-checked, so re-encoded copies in the same format load too.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor


@dataclass(frozen=True)
class CIFARFormat:
    """Where one CIFAR variant keeps its files, and the keys of its labels."""

    folder: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    meta: str
    url: str
    md5: str


FORMATS = {
    "cifar10": CIFARFormat(
        folder="cifar-10-batches-py",
        train=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test=("test_batch",),
        meta="batches.meta",
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        md5="c58f30108f718f92721af3b95e74349a",
    ),
    "cifar100": CIFARFormat(
        folder="cifar-100-python",
        train=("train",),
        test=("test",),
        meta="meta",
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        md5="eb9058c3a382ffc7106e4002c42a8d85",
    ),
}

# (label key in the batches, label-name key in the meta file) by (dataset, coarse)
_LABEL_KEYS = {
    ("cifar10", False): ("labels", "label_names"),
    ("cifar100", False): ("fine_labels", "fine_label_names"),
    ("cifar100", True): ("coarse_labels", "coarse_label_names"),
}

_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
}


class _CIFARUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(
                f"{module}.{name} is not part of the CIFAR python format; refusing to load it"
            )
        return super().find_class(module, name)


def _load(path: Path) -> dict[str, Any]:
    with open(path, "rb") as f:
        try:
            content = _CIFARUnpickler(f, encoding="latin1").load()
        except (pickle.UnpicklingError, EOFError, ValueError) as error:
            raise ValueError(f"{path} is not a CIFAR python batch file: {error}") from error
    if not isinstance(content, dict):
        raise ValueError(f"{path} holds a {type(content).__name__}, expected the CIFAR dict of arrays")
    # Python 2 pickles read with other encodings carry bytes keys; accept both.
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in content.items()}


def missing_files_message(root: Path, dataset: str) -> str:
    """What is missing under ``root``, the expected layout, and how to get it."""
    fmt = FORMATS[dataset]
    names = ", ".join((*fmt.train, *fmt.test, fmt.meta))
    return (
        f"{dataset} not found: expected the official python release at {root / fmt.folder}/ "
        f"with the files {names}. Pass download=True to fetch it from {fmt.url} (md5-checked), or "
        f"set root to the folder that contains {fmt.folder}/."
    )


def read_label_names(root: Path, dataset: str, coarse: bool) -> list[str]:
    """The class names in label-id order, from the meta file."""
    fmt = FORMATS[dataset]
    meta = _load(root / fmt.folder / fmt.meta)
    key = _LABEL_KEYS[(dataset, coarse)][1]
    if key not in meta:
        raise ValueError(f"{root / fmt.folder / fmt.meta} has no '{key}' entry (keys: {sorted(meta)})")
    return [n.decode() if isinstance(n, bytes) else str(n) for n in meta[key]]


def read_split(root: Path, dataset: str, split: str, coarse: bool = False) -> tuple[Tensor, Tensor]:
    """One split as ``(uint8 images (N, 3, 32, 32), int64 labels (N,))`` in file order."""
    fmt = FORMATS[dataset]
    label_key = _LABEL_KEYS[(dataset, coarse)][0]
    images, labels = [], []
    for name in fmt.train if split == "train" else fmt.test:
        path = root / fmt.folder / name
        batch = _load(path)
        if "data" not in batch or label_key not in batch:
            raise ValueError(f"{path} lacks 'data' or '{label_key}' (keys: {sorted(batch)})")
        data = batch["data"]
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.shape[1:] != (3 * 32 * 32,):
            found = f"{getattr(data, 'dtype', type(data).__name__)} of shape {getattr(data, 'shape', '?')}"
            raise ValueError(f"{path}: 'data' is {found}, expected uint8 rows (N, 3072)")
        if len(batch[label_key]) != len(data):
            raise ValueError(f"{path}: {len(data)} images but {len(batch[label_key])} labels")
        images.append(torch.tensor(data).reshape(-1, 3, 32, 32))
        labels.append(torch.as_tensor(batch[label_key], dtype=torch.int64))
    return torch.cat(images), torch.cat(labels)


def files_present(root: Path, dataset: str) -> bool:
    """Whether every file of the release is present under ``root``."""
    fmt = FORMATS[dataset]
    return all((root / fmt.folder / name).is_file() for name in (*fmt.train, *fmt.test, fmt.meta))
