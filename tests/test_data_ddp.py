"""A real 2-process DDP run (gloo on CPU): disjoint shards that cover the split, every epoch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kdlab.data.augment import draw_views

from .datagen import write_cifar10

WORKER = Path(__file__).with_name("ddp_data_worker.py")


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    write_cifar10(root, per_batch=21)  # 105 images: 84 train / 21 val, odd shards on 2 ranks
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(WORKER.parents[1]), os.environ.get("PYTHONPATH", "")]),
    }
    env.pop("LOCAL_RANK", None)
    result = subprocess.run(
        [sys.executable, str(WORKER), str(root), str(root)],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return [torch.load(root / f"rank{r}.pt", weights_only=False) for r in (0, 1)]


def _epoch(record: dict, key: str, epoch: int) -> list[tuple]:
    return [b for b in record[key] if b[0] == epoch]


@pytest.mark.ddp
def test_lightning_keeps_the_rank_aware_sampler(ranks):
    assert [(r["sampler"], r["num_replicas"], r["rank"]) for r in ranks] == [
        ("ShardedBatchSampler", 2, 0),
        ("ShardedBatchSampler", 2, 1),
    ]


@pytest.mark.ddp
def test_training_shards_are_disjoint_cover_the_split_and_reshuffle(ranks):
    size = len(ranks[0]["train_targets"])
    orders = []
    for epoch in (0, 1):
        batches = [_epoch(r, "train", epoch) for r in ranks]
        assert len(batches[0]) == len(batches[1])  # DDP needs the same number of steps
        shards = [torch.cat([b[2] for b in rank_batches]) for rank_batches in batches]
        assert set(shards[0].tolist()).isdisjoint(shards[1].tolist())
        assert sorted(torch.cat(shards).tolist()) == list(range(size))
        for rank_batches, record in zip(batches, ranks, strict=True):
            for _, targets, indices, views, _ in rank_batches:
                assert torch.equal(targets, record["train_targets"][indices])
                assert torch.equal(views, draw_views(indices, epoch, seed=11))
        orders.append(shards)
    assert not torch.equal(orders[0][0], orders[1][0])


@pytest.mark.ddp
def test_validation_shards_are_disjoint_and_cover_without_repeats(ranks):
    size = len(ranks[0]["val_targets"])
    shards = [torch.cat([b[2] for b in _epoch(r, "val", 0)]) for r in ranks]
    assert len(shards[0]) + len(shards[1]) == size
    assert sorted(torch.cat(shards).tolist()) == list(range(size))
