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
    return normalize(render_views(images, view_ids), mean, std)


def render_views(images: Tensor, view_ids: Tensor) -> Tensor:
    """Each uint8 image's view (crop from the zero-padded image, then flip), still uint8."""
    if images.ndim != 4 or view_ids.shape != images.shape[:1]:
        raise ValueError(
            f"apply_views expects images (B, C, H, W) and view_ids (B,), got {tuple(images.shape)} "
            f"and {tuple(view_ids.shape)}"
        )
    b, c, h, w = images.shape
    # One gather does crop and flip: each view is a fixed map from output pixels to pixels of
    # the zero-padded image (see _view_pixels).
    padded = F.pad(images, (PADDING, PADDING, PADDING, PADDING)).view(b, c, -1)
    pixels = _view_pixels(h, w, images.device).index_select(0, view_ids.to(images.device))
    return padded.gather(2, pixels.unsqueeze(1).expand(b, c, h * w)).view(b, c, h, w)


_VIEW_PIXELS: dict[tuple[int, int, torch.device], Tensor] = {}


def _view_pixels(h: int, w: int, device: torch.device) -> Tensor:
    """``(NUM_VIEWS, h * w)``: for each view and output pixel, its flat index in the padded image.

    A crop at ``(offset_y, offset_x)`` of the image padded by ``PADDING``, flipped after the crop
    when the view says so (``RandomCrop`` then ``RandomHorizontalFlip``). Built once per size and
    device.
    """
    key = (h, w, torch.device(device))
    if key not in _VIEW_PIXELS:
        offset_y, offset_x, flip = view_parameters(torch.arange(NUM_VIEWS))
        rows = torch.arange(h)[None, :, None] + offset_y[:, None, None]
        columns = torch.arange(w)[None, None, :]
        columns = torch.where(flip[:, None, None], w - 1 - columns, columns) + offset_x[:, None, None]
        _VIEW_PIXELS[key] = (rows * (w + 2 * PADDING) + columns).reshape(NUM_VIEWS, h * w).to(device)
    return _VIEW_PIXELS[key]
