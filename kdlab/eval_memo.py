"""The frozen teacher's logits on validation data, computed in the first validation epoch and reused.

Validation batches are not augmented and the teacher does not change, so its logits for a
validation sample are the same in every epoch: recomputing them costs one teacher inference over
the whole validation set per epoch (as much as a quarter of a small student's epoch) for nothing.
The memo keeps them per sample index (kdlab batches carry ``indices``) in a table on the device,
so later epochs gather them without running the teacher or waiting for the device.
"""

from __future__ import annotations

from collections.abc import Callable, Sized

import torch
from torch import Tensor


class EvalLogitsMemo:
    """Teacher logits by (dataset, sample index), filled on first use.

    A table belongs to one dataset object: a different validation dataset (another datamodule, a
    reloaded dataloader) starts a new table, never reads a stale one.

    Args:
        max_bytes: Largest table kept per dataset (``samples × classes × 4`` bytes, on the
            logits' device); beyond it the teacher runs every time.
    """

    def __init__(self, max_bytes: int = 256 * 2**20) -> None:
        self.max_bytes = max_bytes
        self._tables: dict[int, tuple[Sized, Tensor, Tensor]] = {}  # key -> (dataset, values, filled)

    def logits(self, key: int, dataset: object, indices: Tensor, compute: Callable[[], Tensor]) -> Tensor:
        """The logits of samples ``indices`` of ``dataset``: remembered, or ``compute()``d and kept.

        Args:
            key: Which evaluation dataloader (its index).
            dataset: The dataloader's dataset; sized, or nothing is remembered.
            indices: Int64 positions of the batch's samples in ``dataset``, on the logits' device.
            compute: Runs the teacher on the batch; returns float logits ``(batch, classes)``.
        """
        entry = self._tables.get(key)
        if entry is not None and entry[0] is dataset:
            _, values, filled = entry
            if bool(filled[indices].all()):  # one small sync per batch, instead of a teacher forward
                return values.index_select(0, indices)
        logits = compute()
        if not isinstance(dataset, Sized):
            return logits
        if entry is None or entry[0] is not dataset:
            size = len(dataset)
            if size * logits.shape[1] * logits.element_size() > self.max_bytes:
                return logits
            values = logits.new_zeros(size, logits.shape[1])
            filled = torch.zeros(size, dtype=torch.bool, device=logits.device)
            self._tables[key] = (dataset, values, filled)
        _, values, filled = self._tables[key]
        values[indices] = logits
        filled[indices] = True
        return logits

    def clear(self) -> None:
        """Forget every table (call it if the teacher's outputs change)."""
        self._tables.clear()
