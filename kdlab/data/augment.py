"""The standard CIFAR training augmentation, batch-wise on any device, as a finite set of views.

The KD literature trains on CIFAR with a random 32×32 crop of the image zero-padded by 4 pixels,
then a random horizontal flip. That is a finite set: 9 vertical × 9 horizontal crop offsets × 2
flip states = 162 views. A view id in ``[0, 162)`` encodes ``(offset_y * 9 + offset_x) * 2 + flip``;
:data:`IDENTITY_VIEW` (offset 4, 4, no flip) is the unaugmented image.

:func:`draw_views` chooses each sample's view from a counter-based hash of (seed, epoch, sample
index), so the view does not depend on batch composition, process, device or resume, and
:func:`apply_views` renders views for a whole uint8 batch at once. Together they let anyone (the
teacher-output cache, a test) recompute exactly what a sample looked like in a given epoch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from kdlab.data.hashing import as_int64, counter_key, mix64_tensor, nonnegative

PADDING = 4
OFFSETS = 2 * PADDING + 1
NUM_VIEWS = OFFSETS * OFFSETS * 2
IDENTITY_VIEW = (PADDING * OFFSETS + PADDING) * 2

Stats = Sequence[float] | Tensor


class ChannelStats:
    """A dataset's per-channel mean and std, kept as tensors on each device that uses them.

    Built once per device: a fresh host-to-device copy every step would stall the stream.

    Args:
        mean: Per-channel mean, in [0, 1].
        std: Per-channel standard deviation, in [0, 1].
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean, self.std = tuple(mean), tuple(std)
        self._tensors: dict[torch.device, tuple[Tensor, Tensor]] = {}

    def on(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """``(mean, std)`` as float32 tensors on ``device``."""
        if device not in self._tensors:
            self._tensors[device] = (
                torch.tensor(self.mean, device=device),
                torch.tensor(self.std, device=device),
            )
        return self._tensors[device]


def draw_views(indices: Tensor, epoch: int, seed: int) -> Tensor:
    """The view id (int64 in ``[0, NUM_VIEWS)``) of each sample in ``epoch`` under ``seed``.

    Args:
        indices: Int64 positions of the samples in their split, on any device.
        epoch: The training epoch (0-based).
        seed: The augmentation seed (the DataModule's ``seed``).
    """
    key = as_int64(counter_key(seed, epoch))
    hashed = mix64_tensor(indices.to(torch.int64) + key)
    return nonnegative(hashed) % NUM_VIEWS


def view_parameters(view_ids: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Decode view ids into ``(offset_y, offset_x, flip)``; offsets index the padded image."""
    offset, flip = view_ids // 2, view_ids % 2
    return offset // OFFSETS, offset % OFFSETS, flip.bool()


def normalize(images: Tensor, mean: Stats, std: Stats) -> Tensor:
    """Uint8 images ``(B, C, H, W)`` in [0, 255] to float32 ``(x / 255 - mean) / std``, per channel."""
    mean = torch.as_tensor(mean, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    std = torch.as_tensor(std, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    return images.float().sub_(mean * 255.0).mul_((std * 255.0).reciprocal())


def apply_views(images: Tensor, view_ids: Tensor, mean: Stats, std: Stats) -> Tensor:
    """Render each image's view (crop from the zero-padded image, then flip) and normalise.

    Equivalent to torchvision's ``RandomCrop(size, padding=4)``, ``RandomHorizontalFlip()``,
    ``ToTensor()``, ``Normalize(mean, std)`` with the crop offset and flip given by the view id.

    Args:
        images: Uint8 images ``(B, C, H, W)``.
        view_ids: Int64 view ids ``(B,)`` on the same device, e.g. from :func:`draw_views`.
        mean: Per-channel mean of the dataset, in [0, 1].
        std: Per-channel standard deviation of the dataset, in [0, 1].

    Returns:
        Float32 images ``(B, C, H, W)``.
    """
    if images.ndim != 4 or view_ids.shape != images.shape[:1]:
        raise ValueError(
            f"apply_views expects images (B, C, H, W) and view_ids (B,), got {tuple(images.shape)} "
            f"and {tuple(view_ids.shape)}"
        )
    b, _, h, w = images.shape
    offset_y, offset_x, flip = view_parameters(view_ids.to(images.device))
    # One gather does crop and flip: the flipped copies sit behind the originals, and a crop of
    # the flipped padded image at offset x is the flip of the crop at offset 2 * PADDING - x.
    both = F.pad(torch.cat([images, images.flip(-1)]), (PADDING, PADDING, PADDING, PADDING))
    windows = both.unfold(2, h, 1).unfold(3, w, 1)  # (2B, C, OFFSETS, OFFSETS, h, w), a view
    source = torch.arange(b, device=images.device) + b * flip
    offset_x = torch.where(flip, 2 * PADDING - offset_x, offset_x)
    return normalize(windows[source, :, offset_y, offset_x], mean, std)
