"""Whole-batch sampling that shards a split across DDP processes: disjoint, covering, reshuffled.

:class:`ShardedBatchSampler` yields lists of sample positions, one list per batch, for a dataset
that fetches a whole batch from one ``dataset[positions]`` call (see ``kdlab.data.cifar`` and
``kdlab.data.imagenet``). It is a ``DistributedSampler`` so that Lightning, which wraps any other
sampler in its own distributed sampler when ``use_distributed_sampler=True``, leaves it in place;
it shards by itself (the rank and world size come from the Trainer or ``torch.distributed``).

Unlike ``torch.utils.data.DistributedSampler`` it neither repeats samples to even out the shards
nor drops any: the shards are disjoint and together cover the split exactly once per epoch, and
every rank still gets the same number of batches (DDP's collectives require it), by letting each
rank's last batch absorb its remainder.

:class:`ResumableLoader` is the DataLoader around it. Lightning saves a loader's ``state_dict`` in
every checkpoint, so a run resumed from a checkpoint written in the middle of an epoch continues
that epoch at the next batch, in the same order, instead of starting it over. It also gives
DataLoader workers their seeds from its own generator rather than from torch's global one, so
that creating an iterator does not shift the random numbers the training draws.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from kdlab.data.hashing import counter_key


def process_group() -> tuple[int, int]:
    """``(world_size, rank)`` of the initialised default process group, ``(1, 0)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


class ShardedBatchSampler(DistributedSampler):
    """Batches of positions in ``range(size)`` for one rank, reshuffled per (seed, epoch).

    Each epoch the split is permuted by a generator seeded from ``(seed, epoch)`` (when
    ``shuffle``), rank ``r`` of ``W`` takes positions ``r, r + W, ...`` of that order, and cuts
    them into ``len(self)`` batches of ``batch_size``; the last batch holds the rest (between 1
    and ``batch_size + 1`` samples). Call :meth:`set_epoch` before each epoch (Lightning does).

    Args:
        size: Number of samples in the split.
        batch_size: Samples per batch on each rank.
        shuffle: Reshuffle every epoch (training) or keep the split's order (evaluation).
        seed: Seed of the shuffle.
        num_replicas: World size; default from ``torch.distributed`` (1 without a process group).
        rank: This process's rank; default from ``torch.distributed`` (0 without a process group).
    """

    def __init__(
        self,
        size: int,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        world, this_rank = process_group()
        num_replicas = world if num_replicas is None else num_replicas
        rank = this_rank if rank is None else rank
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if size < num_replicas:
            raise ValueError(
                f"the split has {size} samples, fewer than the {num_replicas} processes: every process "
                "needs at least one; use fewer devices or a larger subset"
            )
        super().__init__(range(size), num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
        self.size = size
        self.batch_size = batch_size
        self._resume: tuple[int, int] | None = None  # (epoch, batches of it already consumed)
        self.started_at = (self.epoch, 0)  # (epoch, first batch) of the latest iteration

    def resume_at(self, epoch: int, batches: int) -> None:
        """Make the next iteration over ``epoch`` skip its first ``batches`` batches (once)."""
        self.set_epoch(epoch)
        self._resume = (epoch, batches)

    def __len__(self) -> int:
        smallest_shard = self.size // self.num_replicas
        return -(-smallest_shard // self.batch_size)

    def order(self) -> torch.Tensor:
        """The permutation of the whole split used this epoch (identical on every rank)."""
        if not self.shuffle:
            return torch.arange(self.size)
        generator = torch.Generator().manual_seed(counter_key(self.seed, self.epoch) >> 1)
        return torch.randperm(self.size, generator=generator)

    def __iter__(self) -> Iterator[list[int]]:  # type: ignore[override]
        # A generator: the epoch is read when the first batch is requested, after set_epoch.
        resume, self._resume = self._resume, None
        first = resume[1] if resume is not None and resume[0] == self.epoch else 0
        self.started_at = (self.epoch, first)
        shard = self.order()[self.rank :: self.num_replicas].tolist()
        count, size = len(self), self.batch_size
        for batch in range(first, count):
            yield shard[batch * size : (batch + 1) * size if batch < count - 1 else None]


class ResumableLoader(DataLoader):
    """A DataLoader over a :class:`ShardedBatchSampler` whose position Lightning checkpoints.

    ``state_dict()`` is the epoch being iterated and how many of its batches were handed out;
    ``load_state_dict`` makes the next iteration over that epoch start after them. Since the
    ranks' batches ``k`` together are the ``k``-th slice of the epoch's permutation whatever the
    number of ranks, a run resumed on a different number of processes with the same global
    batch size (``batch_size × processes``) continues at the same sample too.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(self.sampler, ShardedBatchSampler):
            raise TypeError("ResumableLoader needs a ShardedBatchSampler as its sampler")
        self._delivered = 0

    def __iter__(self) -> Iterator[Any]:
        self._delivered = 0
        for batch in super().__iter__():
            self._delivered += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        sampler = self.sampler
        epoch, first = sampler.started_at
        return {
            "epoch": epoch,
            "batches": first + self._delivered,
            "global_batch": sampler.batch_size * sampler.num_replicas,
            "size": sampler.size,
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        sampler = self.sampler
        epoch, batches = int(state["epoch"]), int(state["batches"])
        size, global_batch = state.get("size", sampler.size), state.get("global_batch")
        if size != sampler.size:
            warnings.warn(
                f"the checkpoint was taken in epoch {epoch} of a split of {size} samples, this one has "
                f"{sampler.size}: the data changed, so that epoch restarts from its first batch",
                stacklevel=2,
            )
            batches = 0
        elif global_batch is not None and global_batch != sampler.batch_size * sampler.num_replicas:
            consumed, now = batches * global_batch, sampler.batch_size * sampler.num_replicas
            batches = consumed // now
            if batches * now != consumed:
                warnings.warn(
                    f"the checkpoint was taken after {consumed} samples of epoch {epoch} at {global_batch} "
                    f"per step (all processes); at this run's {now} per step the epoch continues after "
                    f"sample {batches * now} instead",
                    stacklevel=2,
                )
        sampler.resume_at(epoch, batches)


def batch_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    seed: int,
    num_workers: int,
    pin_memory: bool,
    trainer: Any = None,
) -> DataLoader:
    """A DataLoader over a batch-indexed ``dataset`` (``dataset[list_of_positions]`` is a batch).

    Args:
        dataset: Returns a whole batch for a list of positions.
        batch_size: Samples per batch on each rank.
        shuffle: Reshuffle each epoch (training) or keep the split's order.
        seed: Seed of the shuffle.
        num_workers: DataLoader worker processes (each builds whole batches).
        pin_memory: Pin batches in page-locked memory for fast host-to-GPU copies.
        trainer: The Lightning Trainer, whose world size and rank shard the split (default:
            ``torch.distributed``'s).
    """
    world, rank = process_group() if trainer is None else (trainer.world_size, trainer.global_rank)
    sampler = ShardedBatchSampler(len(dataset), batch_size, shuffle, seed, num_replicas=world, rank=rank)
    return ResumableLoader(
        dataset,
        batch_size=None,  # the sampler yields whole batches; the dataset builds each in one call
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
        generator=torch.Generator().manual_seed(counter_key(seed, rank) >> 1),
    )


class SplitLoaders(LightningDataModule):
    """A DataModule whose four loaders are ``self._loader(split, shuffle)``: training shuffles,
    evaluation keeps the split's order, and prediction reads the test split."""

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        raise NotImplementedError

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
