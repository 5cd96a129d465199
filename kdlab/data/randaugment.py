"""RandAugment on a whole uint8 batch on its device, drawn per sample from a counter-based hash.

RandAugment: Practical automated data augmentation with a reduced search space (Cubuk et al.,
NeurIPS Workshops 2020): each image gets ``num_ops`` operations chosen uniformly from a fixed
list, all at one ``magnitude``. The list, the magnitude scale (31 bins) and the random sign of
signed operations follow torchvision's ``RandAugment(num_ops, magnitude)``; the draws are not
from a random generator but from a SplitMix64 hash of ``(seed, epoch, sample index, round)``, as
the crop/flip views are (:mod:`kdlab.data.augment`): reproducible on any device, in any process,
after a resume. Samples that drew the same operation and sign are transformed together, with
torchvision's batched tensor functions.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

from kdlab.data.hashing import as_int64, counter_key, mix64_tensor, nonnegative

OPERATIONS = (
    "identity", "shear_x", "shear_y", "translate_x", "translate_y", "rotate", "brightness",
    "color", "contrast", "sharpness", "posterize", "solarize", "autocontrast", "equalize",
)  # fmt: skip
_STREAM = 0x5261_6E64  # "Rand": keeps these draws apart from the views'


def _strength(operation: str, magnitude: int, width: int) -> float:
    """torchvision's magnitude of ``operation`` at bin ``magnitude`` of 31 (before the sign)."""
    fraction = magnitude / 30
    return {
        "shear_x": 0.3 * fraction,
        "shear_y": 0.3 * fraction,
        "translate_x": 150.0 / 331.0 * width * fraction,
        "translate_y": 150.0 / 331.0 * width * fraction,
        "rotate": 30.0 * fraction,
        "brightness": 0.9 * fraction,
        "color": 0.9 * fraction,
        "contrast": 0.9 * fraction,
        "sharpness": 0.9 * fraction,
        "posterize": float(8 - round(magnitude / 7.5)),  # bits kept
        "solarize": 255.0 * (1 - fraction),  # threshold
    }.get(operation, 0.0)


def _apply(images: Tensor, operation: str, value: float) -> Tensor:
    """One operation with one signed strength on a uint8 batch."""
    if operation in ("shear_x", "shear_y"):
        shear = (
            [math.degrees(math.atan(value)), 0.0]
            if operation == "shear_x"
            else [0.0, math.degrees(math.atan(value))]
        )
        return TF.affine(images, angle=0.0, translate=[0, 0], scale=1.0, shear=shear, center=[0, 0])
    if operation in ("translate_x", "translate_y"):
        shift = [int(value), 0] if operation == "translate_x" else [0, int(value)]
        return TF.affine(images, angle=0.0, translate=shift, scale=1.0, shear=[0.0, 0.0])
    if operation == "rotate":
        return TF.rotate(images, value)
    if operation in ("brightness", "color", "contrast", "sharpness"):
        adjust = {
            "brightness": TF.adjust_brightness,
            "color": TF.adjust_saturation,
            "contrast": TF.adjust_contrast,
            "sharpness": TF.adjust_sharpness,
        }[operation]
        return adjust(images, 1.0 + value)
    if operation == "posterize":
        return TF.posterize(images, int(value))
    if operation == "solarize":
        return TF.solarize(images, value)
    if operation == "autocontrast":
        return TF.autocontrast(images)
    if operation == "equalize":
        return TF.equalize(images)
    return images


def rand_augment(
    images: Tensor, indices: Tensor, epoch: int, seed: int, num_ops: int = 2, magnitude: int = 10
) -> Tensor:
    """RandAugment(``num_ops``, ``magnitude``) of each uint8 image ``(B, C, H, W)``, on its device.

    Args:
        images: Uint8 images.
        indices: Int64 positions of the samples in their split (the draws' counters).
        epoch: The training epoch.
        seed: The augmentation seed.
        num_ops: Operations per image.
        magnitude: Strength bin in ``[0, 30]``, as torchvision's.
    """
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(
            f"rand_augment expects uint8 images (B, C, H, W), got {images.dtype} {tuple(images.shape)}"
        )
    if not 0 <= magnitude <= 30:
        raise ValueError(f"rand_augment: magnitude must be in [0, 30], got {magnitude}")
    images = images.clone()
    indices = indices.to(images.device, torch.int64)
    for round_ in range(num_ops):
        draws = nonnegative(mix64_tensor(indices + as_int64(counter_key(seed, epoch, _STREAM, round_))))
        choice, negative = (draws % len(OPERATIONS)).tolist(), ((draws // len(OPERATIONS)) % 2).tolist()
        groups: dict[tuple[int, int], list[int]] = {}
        for position, (op, sign) in enumerate(zip(choice, negative)):
            groups.setdefault((op, sign), []).append(position)
        for (op, sign), positions in groups.items():
            operation = OPERATIONS[op]
            value = _strength(operation, magnitude, images.shape[-1])
            if sign and operation not in ("posterize", "solarize"):
                value = -value
            rows = torch.as_tensor(positions, device=images.device)
            images[rows] = _apply(images.index_select(0, rows), operation, value)
    return images
