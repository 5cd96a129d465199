"""The ImageNet training and evaluation transforms on uint8 image tensors, with little overhead.

Same operations as torchvision's ``RandomResizedCrop`` + ``RandomHorizontalFlip`` and ``Resize`` +
``CenterCrop`` (bilinear, antialiased), called directly on the tensor kernels: at small image sizes
the per-call cost of the transform classes, not the pixels, limits throughput. Random parameters
come from Python's ``random``, which every DataLoader worker seeds on its own.
"""

from __future__ import annotations

import math
import random

import torch.nn.functional as F
from torch import Tensor


def resize(image: Tensor, height: int, width: int) -> Tensor:
    """Bilinear, antialiased resize of a uint8 ``(C, H, W)`` image (returned as is if the size matches)."""
    if image.shape[-2:] == (height, width):
        return image
    batch = F.interpolate(
        image[None], size=(height, width), mode="bilinear", antialias=True, align_corners=False
    )
    return batch[0]


class RandomResizedCropFlip:
    """A random crop of random area and aspect ratio, resized to ``size``², flipped half the time.

    The Inception-style crop: up to 10 draws of an area fraction in ``scale`` and a log-uniform
    aspect ratio in ``ratio`` until the box fits; else the largest central box within ``ratio``.

    Args:
        size: Side of the output square.
        scale: Range of the crop's area as a fraction of the image's.
        ratio: Range of the crop's aspect ratio (width / height).
    """

    def __init__(
        self, size: int, scale: tuple[float, float] = (0.08, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3)
    ) -> None:
        self.size, self.scale = size, scale
        self.log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
        self.ratio = ratio

    def box(self, height: int, width: int) -> tuple[int, int, int, int]:
        """``(top, left, box_height, box_width)`` of one random crop."""
        area = height * width
        for _ in range(10):
            target = area * random.uniform(*self.scale)
            aspect = math.exp(random.uniform(*self.log_ratio))
            w = round(math.sqrt(target * aspect))
            h = round(math.sqrt(target / aspect))
            if 0 < w <= width and 0 < h <= height:
                return random.randint(0, height - h), random.randint(0, width - w), h, w
        aspect = width / height
        h, w = height, width
        if aspect < self.ratio[0]:
            h = round(width / self.ratio[0])
        elif aspect > self.ratio[1]:
            w = round(height * self.ratio[1])
        return (height - h) // 2, (width - w) // 2, h, w

    def __call__(self, image: Tensor) -> Tensor:
        top, left, h, w = self.box(*image.shape[-2:])
        crop = resize(image[:, top : top + h, left : left + w], self.size, self.size)
        return crop.flip(-1) if random.random() < 0.5 else crop


class ResizeCenterCrop:
    """Resize the shorter side to ``resize`` (aspect kept), then take the central ``size``² square.

    Args:
        size: Side of the output square.
        resize: Length of the shorter side after resizing (at least ``size``).
    """

    def __init__(self, size: int, resize: int) -> None:
        if resize < size:
            raise ValueError(f"the resized side ({resize}) must be at least the crop size ({size})")
        self.size, self.short_side = size, resize

    def __call__(self, image: Tensor) -> Tensor:
        height, width = image.shape[-2:]
        if height <= width:
            new_height, new_width = self.short_side, int(self.short_side * width / height)
        else:
            new_height, new_width = int(self.short_side * height / width), self.short_side
        image = resize(image, new_height, new_width)
        top = round((new_height - self.size) / 2)
        left = round((new_width - self.size) / 2)
        return image[:, top : top + self.size, left : left + self.size]
