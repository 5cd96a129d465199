"""Tiny datasets in the real on-disk formats, written into a test's tmp folder."""

from __future__ import annotations

import io
import pickle
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _pickle(path: Path, content: dict, protocol: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(content, f, protocol=protocol)


def cifar_images(count: int, seed: int) -> np.ndarray:
    """Random uint8 rows (count, 3072) whose first pixel encodes the row number (for tracing)."""
    data = np.random.default_rng(seed).integers(0, 256, size=(count, 3072), dtype=np.uint8)
    return data


def write_cifar10(root: Path, per_batch: int = 20, test: int = 30, protocol: int = 2) -> dict:
    """``root/cifar-10-batches-py`` with 5 train batches and a test batch; returns the arrays."""
    folder = root / "cifar-10-batches-py"
    out = {"train_data": [], "train_labels": []}
    for b in range(1, 6):
        data = cifar_images(per_batch, seed=b)
        labels = [(i + b) % 10 for i in range(per_batch)]
        _pickle(
            folder / f"data_batch_{b}", {"batch_label": f"b{b}", "data": data, "labels": labels}, protocol
        )
        out["train_data"].append(data)
        out["train_labels"] += labels
    data = cifar_images(test, seed=99)
    labels = [i % 10 for i in range(test)]
    _pickle(folder / "test_batch", {"batch_label": "test", "data": data, "labels": labels}, protocol)
    _pickle(folder / "batches.meta", {"label_names": CIFAR10_NAMES, "num_vis": 3072}, protocol)
    out.update(train_data=np.concatenate(out["train_data"]), test_data=data, test_labels=labels)
    return out


def write_cifar100(root: Path, train: int = 400, test: int = 200, protocol: int = 4) -> dict:
    """``root/cifar-100-python/{train,test,meta}`` with fine and coarse labels (fine // 5)."""
    folder = root / "cifar-100-python"
    fine_names = [f"fine{i:02d}" for i in range(100)]
    coarse_names = [f"coarse{i:02d}" for i in range(20)]
    out = {}
    for split, count, seed in (("train", train, 1), ("test", test, 2)):
        data = cifar_images(count, seed)
        fine = [i % 100 for i in range(count)]
        content = {"data": data, "fine_labels": fine, "coarse_labels": [f // 5 for f in fine]}
        _pickle(folder / split, content, protocol)
        out[f"{split}_data"], out[f"{split}_fine"] = data, fine
    _pickle(folder / "meta", {"fine_label_names": fine_names, "coarse_label_names": coarse_names}, protocol)
    return out


def jpeg_bytes(seed: int, size: tuple[int, int] = (40, 30)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def write_image_tree(
    root: Path, classes: list[str], per_class: int = 4, splits=("train", "val"), suffix: str = ".JPEG"
) -> None:
    """``root/<split>/<class>/<class>_<i><suffix>`` JPEG files of varied sizes."""
    for split in splits:
        for c, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                size = (32 + 8 * (i % 3), 24 + 8 * (c % 3))
                (folder / f"{name}_{i}{suffix}").write_bytes(jpeg_bytes(seed=1000 * c + i, size=size))


def shared_data() -> Path | None:
    """The bundled real CIFAR-10 (``shared/data`` beside the repository), or None where absent."""
    for candidate in (Path(__file__).parents[2] / "shared" / "data", Path("/work/shared/data")):
        if (candidate / "prepare_cifar10.py").is_file() and (candidate / "cifar10-jpeg.tar.gz").is_file():
            return candidate
    return None


def prepared_cifar10(tmp_path_factory) -> Path:
    """The real CIFAR-10 as pickle batches and an image folder (``prepare_cifar10.py``'s output).

    Prepared once into the system temp folder and reused by later test sessions (about 450 MB,
    20-100 s to write on contended cores), keyed by the archive's size and mtime. Written into a
    session temp folder first and renamed into place, so a half-written copy is never used.
    """
    shared = shared_data()
    archive = (shared / "cifar10-jpeg.tar.gz").stat()
    cache = Path(tempfile.gettempdir()) / f"kdlab-real-cifar10-{archive.st_size}-{int(archive.st_mtime)}"
    if (cache / "cifar-10-batches-py" / "batches.meta").is_file() and (cache / "imagefolder").is_dir():
        return cache
    staging = tmp_path_factory.mktemp("real_cifar10")
    subprocess.run(
        [sys.executable, str(shared / "prepare_cifar10.py"), str(staging)], check=True, capture_output=True
    )
    try:
        staging.rename(cache)
    except OSError:  # another session finished first, or the temp folders are on different disks
        if not (cache / "cifar-10-batches-py" / "batches.meta").is_file():
            return staging
        shutil.rmtree(staging, ignore_errors=True)
    return cache
