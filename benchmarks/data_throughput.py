"""Images per second of kdlab's data pipelines against torchvision's PIL pipelines, on the CPU.

    python benchmarks/data_throughput.py [--root PREPARED] [--workers 2] [--batches 150]

``PREPARED`` is the output of ``shared/data/prepare_cifar10.py`` (``cifar-10-batches-py/`` and
``imagefolder/``); without ``--root`` the script prepares it in a temporary folder (about 20 s).
Two comparisons, each with the same DataLoader workers and batch size on both sides:

1. CIFAR-10 training batches: ``CIFARDataModule`` (in-memory uint8 split, whole-batch gather,
   crop/flip/normalise by ``augment_batch`` on the CPU) against ``torchvision.datasets.CIFAR10``
   with ``RandomCrop(32, padding=4)``, ``RandomHorizontalFlip``, ``ToTensor``, ``Normalize``.
   Both are timed with 0 workers and with ``--workers``, and best against best: kdlab's
   intended setting is 0 workers (a batch is one gather, cheaper than shipping it from a
   worker process), torchvision's is as many workers as cores.
2. ImageFolder training batches: ``ImageNetDataModule`` (libjpeg-turbo decoding, tensor
   transforms, normalisation) against ``torchvision.datasets.ImageFolder`` with PIL
   ``RandomResizedCrop``, ``RandomHorizontalFlip``, ``ToTensor``, ``Normalize``.

The first batch of each run (worker start-up) is not timed. Numbers depend on the machine and on
whatever else runs on it; compare ratios taken in one run.
"""

from __future__ import annotations

import argparse
import itertools
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from kdlab.data import CIFARDataModule, ImageNetDataModule
from kdlab.data.augment import normalize
from kdlab.data.cifar_files import read_label_names


def images_per_second(batches: Iterable, limit: int, step: Callable = lambda b: b) -> float:
    """Throughput over ``limit`` batches after the first, with ``step`` applied to each batch."""
    iterator = iter(batches)
    step(next(iterator))
    count, start = 0, time.perf_counter()
    for batch in itertools.islice(iterator, limit):
        out = step(batch)
        count += len(out[0])
    return count / (time.perf_counter() - start)


class _UncheckedCIFAR10(datasets.CIFAR10):
    # torchvision md5-checks the extracted files; the bundled copy is a JPEG re-encoding of the
    # same layout, so its checksums differ. The format and the reading code are unchanged.
    def _check_integrity(self) -> bool:
        return True

    def _load_meta(self) -> None:  # the same file, read without its md5 check
        self.classes = read_label_names(Path(self.root), "cifar10", coarse=False)
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}


def cifar(root: Path, workers: int, batch_size: int, limit: int) -> tuple[float, float]:
    """Images/s of kdlab's CIFAR pipeline and of torchvision+PIL, both with ``workers`` workers."""
    dm = CIFARDataModule("cifar10", root=str(root), batch_size=batch_size, num_workers=workers)
    dm.setup()
    ours = images_per_second(dm.train_dataloader(), limit, lambda b: dm.augment_batch(b, 0))
    pil = transforms.Compose(
        [
            transforms.RandomCrop(32, padding=4),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(dm.mean, dm.std),
        ]
    )
    dataset = _UncheckedCIFAR10(str(root), train=True, transform=pil)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers)
    return ours, images_per_second(loader, limit)


def folder(root: Path, workers: int, batch_size: int, limit: int, size: int) -> tuple[float, float]:
    dm = ImageNetDataModule(str(root), image_size=size, batch_size=batch_size, num_workers=workers)
    start = time.perf_counter()
    dm.setup()
    print(f"  ImageNetDataModule.setup (listing + damage screen): {time.perf_counter() - start:.1f} s")
    ours = images_per_second(dm.train_dataloader(), limit, lambda b: (normalize(b[0], dm.mean, dm.std),))
    pil = transforms.Compose(
        [
            transforms.RandomResizedCrop(size),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(dm.mean, dm.std),
        ]
    )
    dataset = datasets.ImageFolder(str(root / "train"), transform=pil)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers)
    return ours, images_per_second(loader, limit)


def prepared(root: str | None) -> Path:
    if root is not None:
        return Path(root)
    script = Path(__file__).resolve().parents[2] / "shared" / "data" / "prepare_cifar10.py"
    if not script.is_file():
        script = Path("/work/shared/data/prepare_cifar10.py")
    out = Path(tempfile.mkdtemp(prefix="kdlab-bench-"))
    print(f"preparing CIFAR-10 into {out} ...")
    subprocess.run([sys.executable, str(script), str(out)], check=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", help="output folder of prepare_cifar10.py (default: prepare one)")
    parser.add_argument("--folder-root", help="ImageFolder root with train/ (default: ROOT/imagefolder)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers on both sides")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads of the main process")
    parser.add_argument("--batches", type=int, default=150, help="timed batches per pipeline")
    parser.add_argument("--image-size", type=int, default=32, help="crop side for the folder pipelines")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    root = prepared(args.root)
    folder_root = Path(args.folder_root) if args.folder_root else root / "imagefolder"
    print(f"threads={args.threads}, {args.batches} timed batches per pipeline")
    rows = []
    for workers in sorted({0, args.workers}):
        rows.append(("CIFAR-10 b64", workers, *cifar(root, workers, 64, args.batches)))
    ours = max(r[2] for r in rows)
    theirs = max(r[3] for r in rows)
    rows.append(("CIFAR-10 b64, best of each", "-", ours, theirs))
    size = args.image_size
    rows.append(
        (
            f"ImageFolder {size}px b128",
            args.workers,
            *folder(folder_root, args.workers, 128, args.batches, size),
        )
    )
    print(f"{'pipeline':<28}{'workers':>8}{'kdlab img/s':>13}{'torchvision+PIL img/s':>23}{'ratio':>8}")
    for name, workers, ours, theirs in rows:
        print(f"{name:<28}{workers!s:>8}{ours:>13,.0f}{theirs:>23,.0f}{ours / theirs:>7.1f}x")


if __name__ == "__main__":
    main()
