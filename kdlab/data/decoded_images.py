"""Image files decoded once into one uint8 tensor ``(N, C, size, size)``, with threads.

Decoding (libjpeg-turbo and libpng through ``torchvision.io``, :mod:`kdlab.data.imagenet_files`)
releases the GIL, so threads decode in parallel; files are handed out in chunks because a task
per file costs more in the pool than a small JPEG takes to decode. A file that cannot be decoded
is left out and reported with the reason (the screening of :func:`~kdlab.data.imagenet_files.damage`
when it recognises the damage, else the decoder's message).
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import Tensor
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms.v2.functional import rgb_to_grayscale

from kdlab.data.image_transforms import ResizeCenterCrop
from kdlab.data.imagenet_files import JPEG_START, damage, decode, describe, read_bytes

_CHUNK = 256  # files per pool task


def decoded_bytes(count: int, channels: int, size: int) -> int:
    """Memory of ``count`` decoded images of ``channels × size × size`` uint8 pixels."""
    return count * channels * size * size


def decode_files(
    paths: list[str], channels: int, size: int, threads: int | None = None
) -> tuple[Tensor, Tensor, dict[str, str]]:
    """Decode, convert and fit every file to ``size``² (shorter side resized, center crop).

    Images already ``size × size`` are copied as decoded (no resampling); others are resized
    bilinearly with antialiasing so that their shorter side is ``size``, then center-cropped.

    Args:
        paths: Image files (JPEG or PNG).
        channels: 3 for RGB, 1 for grayscale (ITU-R 601 luma of the RGB image).
        size: Side of the square output images.
        threads: Decoding threads (None: one per CPU core this process may use).

    Returns:
        ``(images, kept, damaged)``: the uint8 images of the files that decoded, in order, the
        positions in ``paths`` they came from, and ``{path: reason}`` for the others.
    """
    images = torch.empty(len(paths), channels, size, size, dtype=torch.uint8)
    ok = torch.ones(len(paths), dtype=torch.bool)
    fit = ResizeCenterCrop(size, size)

    def work(start: int) -> dict[str, str]:
        damaged = {}
        for position, image in _decode_chunk(paths, range(start, min(start + _CHUNK, len(paths))), damaged):
            image = fit(image)
            images[position] = rgb_to_grayscale(image) if channels == 1 else image
        for position in range(start, min(start + _CHUNK, len(paths))):
            if paths[position] in damaged:
                ok[position] = False
        return damaged

    damaged: dict[str, str] = {}
    with ThreadPoolExecutor(max_workers=threads or _usable_cores()) as pool:
        for found in pool.map(work, range(0, len(paths), _CHUNK)):
            damaged.update(found)
    kept = ok.nonzero().flatten()
    return (images if not damaged else images[kept]), kept, damaged


def _decode_chunk(
    paths: list[str], positions: range, damaged: dict[str, str]
) -> Iterator[tuple[int, Tensor]]:
    """``(position, RGB image)`` for each file of ``positions`` that decodes; the others go to ``damaged``.

    The JPEGs go to the decoder as one list: torchvision's per-call overhead (API logging, a
    deprecation warning) costs about as much as decoding a 32×32 JPEG. If one file spoils the
    list, each file is decoded on its own to find it.
    """
    data = {}
    for position in positions:
        try:
            data[position] = read_bytes(paths[position])
        except OSError as error:
            damaged[paths[position]] = damage(paths[position]) or describe(error)
    jpegs = [position for position, content in data.items() if content.startswith(JPEG_START)]
    decoded: dict[int, Tensor] = {}
    if jpegs:
        with contextlib.suppress(RuntimeError, ValueError):
            encoded = [torch.frombuffer(data[position], dtype=torch.uint8) for position in jpegs]
            decoded = dict(zip(jpegs, decode_jpeg(encoded, mode=ImageReadMode.RGB), strict=True))
    for position, content in data.items():
        if position in decoded:
            yield position, decoded[position]
            continue
        try:
            yield position, decode(content)
        except (RuntimeError, ValueError) as error:
            damaged[paths[position]] = damage(paths[position]) or describe(error)


def _usable_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def channel_stats(images: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of uint8 images ``(N, C, H, W)``, in [0, 1].

    From each channel's exact histogram of the 256 values, so the result does not depend on
    threads or summation order; rounded to 4 decimals, like published dataset statistics.
    """
    values = torch.arange(256, dtype=torch.float64)
    means, stds = [], []
    for channel in range(images.shape[1]):
        counts = torch.bincount(images[:, channel].reshape(-1), minlength=256).double()
        count = counts.sum()
        mean = (counts * values).sum() / count
        variance = (counts * (values - mean).square()).sum() / count
        means.append(round(float(mean) / 255, 4))
        stds.append(round(math.sqrt(float(variance)) / 255, 4))
    return tuple(means), tuple(stds)
