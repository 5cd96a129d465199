"""Seeded, per-class selection of samples: subsets by count or fraction, and a held-out split."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from kdlab.data.hashing import counter_key

_SUBSET_STREAM, _VALIDATION_STREAM = 1, 2


def _shuffled_members(targets: Tensor, rows: Tensor, class_id: int, seed: int, stream: int) -> Tensor:
    members = rows[targets[rows] == class_id]
    generator = torch.Generator().manual_seed(counter_key(seed, stream, class_id) >> 1)
    return members[torch.randperm(len(members), generator=generator)]


def select_per_class(
    targets: Tensor,
    classes: Sequence[int],
    names: Sequence[str],
    seed: int,
    count: int | None = None,
    fraction: float = 1.0,
    strict: bool = True,
) -> Tensor:
    """Sorted positions of a seeded sample of each class in ``classes``.

    Args:
        targets: The split's original labels, one per sample.
        classes: The label ids to keep.
        names: Display names of ``classes``, for error messages.
        seed: Seed of the choice; the same seed always picks the same samples.
        count: Samples per class (None: all, or ``fraction`` of each class).
        fraction: Fraction of each class to keep (at least one sample), when ``count`` is None.
        strict: A class with fewer than ``count`` samples is an error (else it keeps them all).
    """
    rows = torch.arange(len(targets))
    chosen = []
    for class_id, name in zip(classes, names, strict=True):
        members = _shuffled_members(targets, rows, class_id, seed, _SUBSET_STREAM)
        if len(members) == 0:
            raise ValueError(f"class '{name}' (id {class_id}) has no samples in this split")
        if count is not None:
            if strict and count > len(members):
                raise ValueError(
                    f"samples_per_class={count} but class '{name}' has only {len(members)} samples; "
                    f"use at most {len(members)}"
                )
            keep = min(count, len(members))
        else:
            keep = max(1, round(fraction * len(members)))
        chosen.append(members[:keep])
    return torch.cat(chosen).sort().values


def hold_out(
    targets: Tensor, rows: Tensor, fraction: float, seed: int, names: dict[int, str]
) -> tuple[Tensor, Tensor]:
    """Split ``rows`` into (kept, held out), holding out ``fraction`` of every class (at least one).

    Args:
        targets: The split's original labels, one per sample.
        rows: Positions to split (e.g. the selected training subset).
        fraction: Fraction of each class to hold out, in (0, 1).
        seed: Seed of the choice.
        names: Display name of each label id in ``rows``, for error messages.
    """
    kept, held = [], []
    for class_id in targets[rows].unique().tolist():
        members = _shuffled_members(targets, rows, class_id, seed, _VALIDATION_STREAM)
        count = max(1, round(fraction * len(members)))
        if count >= len(members):
            raise ValueError(
                f"val_fraction={fraction} would hold out all {len(members)} training samples of class "
                f"'{names[class_id]}'; lower val_fraction or select more samples per class"
            )
        held.append(members[:count])
        kept.append(members[count:])
    return torch.cat(kept).sort().values, torch.cat(held).sort().values
