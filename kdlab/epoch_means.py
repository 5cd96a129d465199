"""Epoch means of the loss terms, accumulated on the device and reduced once per epoch.

Logging every term through ``LightningModule.log`` at every step costs about a millisecond of
Python per key and step (Lightning moves and checks its result objects on each call), more than
a small student's whole step on a GPU. The terms are summed here instead, on their device,
without host synchronisation, and logged once at the end of the epoch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor


class EpochMeans:
    """Sample-weighted means of named scalar values over one epoch."""

    def __init__(self) -> None:
        self._sums: dict[tuple[str, ...], Tensor] = {}
        self._counts: dict[tuple[str, ...], int] = {}

    def reset(self) -> None:
        self._sums.clear()
        self._counts.clear()

    def update(self, names: Iterable[str], values: Tensor, count: int) -> None:
        """Add one step's values ``(len(names),)``, each the mean over ``count`` samples."""
        key = tuple(names)
        total = self._sums.get(key)
        self._sums[key] = values * count if total is None else total.add_(values, alpha=count)
        self._counts[key] = self._counts.get(key, 0) + count

    def compute(self, reduce_sum: Callable[[Tensor], Tensor] | None = None) -> dict[str, Tensor]:
        """The mean of each name since the last reset (then resets).

        Args:
            reduce_sum: Sums a tensor over processes (e.g. ``strategy.reduce(t, reduce_op="sum")``),
                so that DDP gives the mean over every sample of every process.
        """
        sums: dict[str, Tensor] = {}
        counts: dict[str, Tensor] = {}
        for key, total in self._sums.items():
            packed = torch.cat([total.float(), total.new_tensor([self._counts[key]], dtype=torch.float32)])
            if reduce_sum is not None:
                packed = reduce_sum(packed)
            for name, value in zip(key, packed[:-1]):
                sums[name] = sums.get(name, 0) + value
                counts[name] = counts.get(name, 0) + packed[-1]
        self.reset()
        return {name: sums[name] / counts[name] for name in sums}
