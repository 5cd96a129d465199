"""Listing an ImageFolder split and screening its files cheaply for damage before training."""

from __future__ import annotations

import difflib
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from torch import Tensor
from torchvision.io import ImageReadMode, decode_image, decode_jpeg

# torchvision 0.29 deprecates its image codecs in favour of TorchCodec and warns on every call;
# silence that one message (it would repeat per image) until kdlab moves to the successor.
warnings.filterwarnings(
    "ignore",
    message="The image decoding and encoding capabilities of TorchVision",
    category=DeprecationWarning,
)

EXTENSIONS = (".jpg", ".jpeg", ".png")
JPEG_START, _JPEG_END = b"\xff\xd8\xff", b"\xff\xd9"
_PNG_START = b"\x89PNG\r\n\x1a\n"


def layout_message(root: Path) -> str:
    """The expected folder layout and where the data comes from."""
    return (
        f"expected an ImageFolder tree {root}/{{train,val}}/<class>/<image>.JPEG (extensions "
        f"{', '.join(EXTENSIONS)}, any case). ImageNet cannot be downloaded by kdlab: get it from "
        "https://image-net.org (registration required), arrange train/ and val/ by class folder "
        "(wnid), and set root to the folder that holds them."
    )


def list_split(split_dir: Path, classes: list[str]) -> tuple[list[str], Tensor]:
    """Every image file of ``classes`` under ``split_dir``, sorted per class, with its label."""
    root = split_dir.parent
    if not split_dir.is_dir():
        raise FileNotFoundError(f"split folder {split_dir} is missing; {layout_message(root)}")
    files: list[str] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        folder = split_dir / name
        if not folder.is_dir():
            raise FileNotFoundError(
                f"class folder {folder} is missing; {_present(split_dir, name)}. {layout_message(root)}"
            )
        found = sorted(entry.path for entry in os.scandir(folder) if entry.name.lower().endswith(EXTENSIONS))
        if not found:
            raise ValueError(f"class folder {folder} holds no images ({', '.join(EXTENSIONS)}, any case)")
        files += found
        labels += [label] * len(found)
    return files, torch.tensor(labels, dtype=torch.int64)


def _present(split_dir: Path, wanted: str) -> str:
    """The class folders that do exist, closest to ``wanted`` first."""
    names = sorted(entry.name for entry in os.scandir(split_dir) if entry.is_dir())
    shown = ", ".join(names[:10]) + (f", ... ({len(names)} in all)" if len(names) > 10 else "")
    return f"{did_you_mean(wanted, names)}{split_dir} holds: {shown or 'no class folders'}"


def did_you_mean(wanted: str, names: list[str]) -> str:
    """``"did you mean 'a' or 'b'? "`` for the names closest to ``wanted``, or ``""``."""
    close = difflib.get_close_matches(wanted, names, n=3, cutoff=0.5)
    return f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""


def read_bytes(path: str) -> bytearray:
    """A file's bytes, writable (so a tensor can view them without a copy)."""
    with open(path, "rb") as f:
        return bytearray(f.read())


def decode(data: bytearray) -> Tensor:
    """Encoded image bytes to an RGB uint8 image ``(3, H, W)``; JPEGs via libjpeg-turbo."""
    encoded = torch.frombuffer(data, dtype=torch.uint8)
    if data.startswith(JPEG_START):
        return decode_jpeg(encoded, mode=ImageReadMode.RGB)
    return decode_image(encoded, mode=ImageReadMode.RGB)  # a PNG, possibly misnamed .JPEG


def damage(path: str) -> str | None:
    """Why ``path`` cannot be a usable image, or None. Reads only its first and last bytes.

    A JPEG that does not end in the end-of-image marker is decoded fully before being judged,
    since some valid files carry trailing data.
    """
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(8)
            f.seek(max(size - 2, 0))
            tail = f.read(2)
    except OSError as error:
        return f"unreadable ({error.strerror})"
    if head.startswith(JPEG_START):
        return None if tail == _JPEG_END else _decode_problem(path)
    if head.startswith(_PNG_START):
        return None
    return "empty file" if size == 0 else "not a JPEG or PNG image"


def _decode_problem(path: str) -> str | None:
    try:
        decode(read_bytes(path))
    except (RuntimeError, ValueError) as error:
        return f"truncated or corrupt JPEG ({describe(error)})"
    return None


def describe(error: Exception) -> str:
    """The gist of a decoding error, without torchvision's source location."""
    lines = str(error).strip().splitlines() or [type(error).__name__]
    return lines[0].rsplit(".cpp:", 1)[-1].split(", ", 1)[-1]


def find_damaged(paths: list[str], threads: int = 16) -> dict[str, str]:
    """``{path: reason}`` for every file of ``paths`` that :func:`damage` rejects."""
    with ThreadPoolExecutor(max_workers=threads) as pool:
        reasons = pool.map(damage, paths, chunksize=256)
        return {path: reason for path, reason in zip(paths, reasons, strict=True) if reason is not None}


def skipped_files_report(owner: str, skipped: dict[str, str], what: str) -> str | None:
    """A warning listing the files a DataModule left out (the first 20, and how many more), or None.

    Args:
        owner: The DataModule's name, which starts the message.
        skipped: ``{path: reason}`` of the files left out.
        what: What they are, e.g. ``"damaged image file(s)"``.
    """
    if not skipped:
        return None
    shown = [f"  {path}: {reason}" for path, reason in sorted(skipped.items())[:20]]
    more = len(skipped) - len(shown)
    return (
        f"{owner}: left out {len(skipped)} {what}:\n"
        + "\n".join(shown)
        + (f"\n  ... and {more} more (all listed in datamodule.skipped_files)" if more else "")
    )
