"""Each sample's fixed view order, and views_per_sample on the CIFAR DataModule."""

from __future__ import annotations

import pytest
import torch

from kdlab.data import CIFARDataModule
from kdlab.data.augment import NUM_VIEWS, draw_views
from kdlab.data.view_order import draw_subset_views, view_keys, view_ranks, views_at_ranks

from .datagen import write_cifar10


def test_every_sample_has_its_own_permutation_of_the_views():
    indices = torch.arange(300)
    order = view_keys(indices).argsort(dim=1)
    assert torch.equal(order.sort(dim=1).values, torch.arange(NUM_VIEWS).expand(300, -1))
    assert len({tuple(row[:5].tolist()) for row in order}) == 300  # not one shared order
    first = torch.bincount(order[:, 0], minlength=NUM_VIEWS)
    assert first.max() <= 10  # the first view is spread over the view set (~1.9 per view expected)


def test_ranks_and_views_are_inverse_on_any_device_and_batch_split():
    generator = torch.Generator().manual_seed(0)
    indices = torch.randint(0, 50_000, (2000,), generator=generator)
    ranks = torch.randint(0, NUM_VIEWS, (2000,), generator=generator)
    views = views_at_ranks(indices, ranks)
    assert torch.equal(view_ranks(indices, views), ranks)
    pieces = torch.cat([views_at_ranks(i, r) for i, r in zip(indices.split(7), ranks.split(7))])
    assert torch.equal(pieces, views)


def test_subset_views_cycle_through_k_views_the_same_for_every_seed():
    indices = torch.arange(500)
    k = 4
    for seed in (0, 1):
        epochs = torch.stack([draw_subset_views(indices, e, seed, k) for e in range(2 * k)], dim=1)
        ranks = torch.stack([view_ranks(indices, epochs[:, e]) for e in range(2 * k)], dim=1)
        # every k consecutive epochs show each of the sample's first k views exactly once
        assert torch.equal(ranks[:, :k].sort(dim=1).values, torch.arange(k).expand(500, -1))
        assert torch.equal(epochs[:, :k], epochs[:, k:])
    seed0 = torch.stack([draw_subset_views(indices, e, 0, k) for e in range(k)], dim=1)
    seed1 = torch.stack([draw_subset_views(indices, e, 1, k) for e in range(k)], dim=1)
    assert torch.equal(seed0.sort(dim=1).values, seed1.sort(dim=1).values)  # same subsets
    assert (seed0 != seed1).any(dim=1).float().mean() > 0.5  # visited in other orders


def test_datamodule_restricts_training_views_and_checks_the_option(tmp_path):
    write_cifar10(tmp_path, per_batch=10)
    dm = CIFARDataModule("cifar10", root=str(tmp_path), batch_size=16, views_per_sample=3, seed=5)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    seen = set()
    for epoch in range(6):
        _, _, indices, views = dm.augment_batch(batch, epoch)
        assert torch.equal(views, draw_subset_views(indices, epoch, 5, 3))
        assert torch.equal(views, dm.train_views(indices, epoch))
        seen |= set(zip(indices.tolist(), views.tolist()))
    assert len(seen) == 3 * len(batch[2])
    free = CIFARDataModule("cifar10", root=str(tmp_path), seed=5)
    assert torch.equal(free.train_views(batch[2], 2), draw_views(batch[2], 2, 5))
    with pytest.raises(ValueError, match="views_per_sample must be in"):
        CIFARDataModule("cifar10", root=str(tmp_path), views_per_sample=0)
    with pytest.raises(ValueError, match="needs augment=True"):
        CIFARDataModule("cifar10", root=str(tmp_path), views_per_sample=2, augment=False)


def test_view_set_identity_follows_the_pixels_of_the_selected_subset(tmp_path):
    write_cifar10(tmp_path, per_batch=20)
    identities = []
    for kwargs in ({}, {}, {"samples_per_class": 5}, {"dataset": "cifar10", "val_fraction": 0.2}):
        dm = CIFARDataModule(**{"dataset": "cifar10", **kwargs}, root=str(tmp_path))
        dm.setup()
        identities.append(dm.view_set_identity())
    assert identities[0] == identities[1]
    assert identities[0]["samples"] == 100 and identities[2]["samples"] == 50
    assert len({i["pixels_sha256"] for i in identities}) == 3
    assert identities[0]["mean"] == list(CIFARDataModule("cifar10").mean)
