"""Each sample's own fixed order of the CIFAR views: view subsets and teacher-output cache rows.

Every sample gets a pseudo-random permutation of the :data:`~kdlab.data.augment.NUM_VIEWS` views,
keyed on its index alone (a SplitMix64 hash of ``(index, view)`` on a stream of its own, sorted),
and deliberately *not* on the training seed. Two uses:

- ``views_per_sample=K`` (:func:`draw_subset_views`) restricts a sample to the
  first K views of its order. Because the order ignores the seed, runs with different seeds,
  students or hyper-parameters draw from the same K views of each image, which is what lets one
  teacher-output cache serve all of them. This is the idea of Fast Knowledge Distillation (Shen &
  Xing, ECCV 2022), which stores the teacher's outputs for a fixed number of crops per image and
  reuses them across trainings; here the crops are the standard CIFAR crop+flip views.
- The cache stores a view's teacher outputs at row ``(rank, index)``, the rank being the view's
  position in the sample's order. The first K views of every sample then fill the first K rank
  planes of the file, so a cache built for K views is a contiguous prefix of the full table and
  serves any larger K, or unrestricted augmentation, from the same file.
"""

from __future__ import annotations

import torch
from torch import Tensor

from kdlab.data.augment import NUM_VIEWS
from kdlab.data.hashing import as_int64, counter_key, mix64_tensor, nonnegative

_ORDER_KEY = as_int64(counter_key(0x76696577, 0x6F72646572))  # "view", "order": its own stream
_START_STREAM = 0x7374617274  # "start": where a sample's round-robin over its subset begins


def view_keys(indices: Tensor) -> Tensor:
    """Int64 sort keys ``(B, NUM_VIEWS)``: sorting a row gives that sample's view order."""
    views = torch.arange(NUM_VIEWS, device=indices.device)
    return mix64_tensor(indices.to(torch.int64)[:, None] * NUM_VIEWS + views + _ORDER_KEY)


def views_at_ranks(indices: Tensor, ranks: Tensor) -> Tensor:
    """The view id at position ``ranks[i]`` of sample ``indices[i]``'s order.

    Args:
        indices: Int64 sample positions ``(B,)``.
        ranks: Int64 positions in the order, in ``[0, NUM_VIEWS)``, shape ``(B,)``.
    """
    order = view_keys(indices).argsort(dim=1)
    return order.gather(1, ranks.to(torch.int64).view(-1, 1)).view(-1)


def view_ranks(indices: Tensor, views: Tensor) -> Tensor:
    """The position of ``views[i]`` in sample ``indices[i]``'s order (inverse of :func:`views_at_ranks`)."""
    keys = view_keys(indices)
    own = keys.gather(1, views.to(torch.int64).view(-1, 1))
    return (keys < own).sum(dim=1)


def draw_subset_views(indices: Tensor, epoch: int, seed: int, per_sample: int) -> Tensor:
    """Like :func:`kdlab.data.augment.draw_views`, but from each sample's first ``per_sample`` views.

    A sample visits its K views round-robin from a start seeded by ``(seed, index)``, so every K
    consecutive epochs show it each of its views exactly once (a lazily filled teacher cache is
    complete after K epochs), while different seeds still see them in different orders.

    Args:
        indices: Int64 positions of the samples in their split, on any device.
        epoch: The training epoch (0-based).
        seed: The augmentation seed (the DataModule's ``seed``).
        per_sample: K, the number of views each sample may get, in ``[1, NUM_VIEWS]``.
    """
    if not 1 <= per_sample <= NUM_VIEWS:
        raise ValueError(f"views_per_sample must be in [1, {NUM_VIEWS}], got {per_sample}")
    indices = indices.to(torch.int64)
    start = nonnegative(mix64_tensor(indices + as_int64(counter_key(seed, _START_STREAM))))
    return views_at_ranks(indices, (start + epoch) % per_sample)
