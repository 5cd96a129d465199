"""The view set, its counter-based draw, and the whole-batch sharded sampler."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from kdlab.data.augment import IDENTITY_VIEW, NUM_VIEWS, apply_views, draw_views, normalize, view_parameters
from kdlab.data.hashing import as_int64, counter_key, mix64, mix64_tensor
from kdlab.data.sampling import ShardedBatchSampler

MEAN, STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)


def test_the_tensor_hash_is_bit_identical_to_the_integer_reference():
    values = [0, 1, 2, 12345, 2**31, 2**62 + 7, -1, -(2**63), 2**63 - 1]
    values += torch.randint(-(2**63), 2**63 - 1, (1000,), generator=torch.Generator().manual_seed(0)).tolist()
    hashed = mix64_tensor(torch.tensor(values, dtype=torch.int64))
    assert hashed.tolist() == [as_int64(mix64(v)) for v in values]


def test_draw_views_follows_the_documented_hash_and_covers_all_views():
    indices = torch.arange(20_000)
    views = draw_views(indices, epoch=3, seed=7)
    key = counter_key(7, 3)
    expected = [(mix64((key + i) % 2**64) >> 1) % NUM_VIEWS for i in range(0, 20_000, 997)]
    assert views[::997].tolist() == expected
    counts = torch.bincount(views, minlength=NUM_VIEWS)
    assert len(counts) == NUM_VIEWS and counts.min() > 60  # ~123 expected per view


def test_a_samples_view_depends_only_on_seed_epoch_and_index():
    indices = torch.randperm(5000, generator=torch.Generator().manual_seed(1))
    whole = draw_views(indices, epoch=2, seed=0)
    in_pieces = torch.cat([draw_views(chunk, epoch=2, seed=0) for chunk in indices.split(37)])
    assert torch.equal(whole, in_pieces)
    reordered = draw_views(indices.flip(0), epoch=2, seed=0).flip(0)
    assert torch.equal(whole, reordered)
    for other in (draw_views(indices, epoch=3, seed=0), draw_views(indices, epoch=2, seed=1)):
        assert (whole != other).float().mean() > 0.9


def _torchvision_view(image: torch.Tensor, view: int) -> torch.Tensor:
    offset_y, offset_x, flip = (int(t) for t in view_parameters(torch.tensor(view)))
    padded = TF.pad(image, [4, 4, 4, 4], fill=0)
    crop = TF.crop(padded, offset_y, offset_x, image.shape[-2], image.shape[-1])
    crop = TF.horizontal_flip(crop) if flip else crop
    return TF.normalize(TF.to_dtype(crop, torch.float32, scale=True), list(MEAN), list(STD))


def test_apply_views_matches_torchvisions_pad_crop_flip_normalize_for_every_view():
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (NUM_VIEWS, 3, 32, 32), dtype=torch.uint8, generator=generator)
    views = torch.arange(NUM_VIEWS)
    rendered = apply_views(images, views, MEAN, STD)
    expected = torch.stack([_torchvision_view(images[v], v) for v in range(NUM_VIEWS)])
    torch.testing.assert_close(rendered, expected, rtol=0, atol=1e-5)
    identity = apply_views(images, torch.full((NUM_VIEWS,), IDENTITY_VIEW), MEAN, STD)
    torch.testing.assert_close(identity, normalize(images, MEAN, STD), rtol=0, atol=0)


def test_apply_views_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"images \(B, C, H, W\) and view_ids \(B,\)"):
        apply_views(
            torch.zeros(4, 3, 32, 32, dtype=torch.uint8), torch.zeros(3, dtype=torch.int64), MEAN, STD
        )


@pytest.mark.parametrize(("size", "world", "batch"), [(105, 2, 8), (100, 4, 25), (129, 2, 64), (7, 3, 64)])
def test_shards_are_disjoint_cover_the_split_and_have_equal_batch_counts(size, world, batch):
    for epoch in (0, 1):
        shards, counts = [], set()
        for rank in range(world):
            sampler = ShardedBatchSampler(size, batch, shuffle=True, seed=5, num_replicas=world, rank=rank)
            sampler.set_epoch(epoch)
            batches = list(sampler)
            assert len(batches) == len(sampler) and all(0 < len(b) <= batch + 1 for b in batches)
            counts.add(len(batches))
            shards.append([i for b in batches for i in b])
        flat = [i for shard in shards for i in shard]
        assert len(counts) == 1 and sorted(flat) == list(range(size))


def test_the_shuffle_changes_with_epoch_and_seed_but_not_with_repetition():
    def order(epoch: int, seed: int) -> list[int]:
        sampler = ShardedBatchSampler(200, 16, shuffle=True, seed=seed)
        sampler.set_epoch(epoch)
        return [i for b in sampler for i in b]

    assert order(0, 0) == order(0, 0)
    assert order(0, 0) != order(1, 0) and order(0, 0) != order(0, 1)
    fixed = ShardedBatchSampler(50, 16, shuffle=False)
    assert [i for b in fixed for i in b] == list(range(50))


def test_a_split_smaller_than_the_world_is_refused():
    with pytest.raises(ValueError, match="fewer than the 4 processes"):
        ShardedBatchSampler(3, 8, num_replicas=4, rank=0)
