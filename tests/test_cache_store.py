"""The on-disk teacher-output store: rows, checksums, top-k, atomic creation, sparse layout."""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from kdlab.callbacks.cache_store import OutputStore, open_store
from kdlab.errors import ConfigurationError

IDENTITY = {"teacher": {"class": "t.T", "sha256": "ab"}, "data": {"dataset": "d", "split": "train"}}


def _logits(rows: int, classes: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(rows, classes, generator=torch.Generator().manual_seed(seed)) * 8


def test_rows_round_trip_in_float16_and_empty_rows_are_misses(tmp_path):
    store = open_store(tmp_path, IDENTITY, samples=50, num_classes=10)
    ranks, indices = torch.tensor([0, 3, 161]), torch.tensor([7, 7, 49])
    logits = _logits(3, 10)
    returned = store.write(ranks, indices, logits)
    torch.testing.assert_close(returned, logits.half().float(), rtol=0, atol=0)
    read, valid = store.read(torch.tensor([0, 3, 161, 1]), torch.tensor([7, 7, 49, 7]))
    assert valid.tolist() == [True, True, True, False]
    torch.testing.assert_close(read[:3], returned, rtol=0, atol=0)
    assert store.count_filled() == 3
    # A second process (here: a second mapping) sees the rows at once.
    torch.testing.assert_close(OutputStore(store.directory).read(ranks, indices)[0], returned)


def test_a_row_whose_values_do_not_match_its_mark_is_a_miss(tmp_path):
    store = open_store(tmp_path, IDENTITY, samples=10, num_classes=5)
    store.write(torch.tensor([2]), torch.tensor([4]), _logits(1, 5))
    store.values[2, 4, 1] += 1  # a torn or stale row: values changed after the mark was set
    assert store.filled(torch.tensor([2]), torch.tensor([4])).item()
    assert not store.read(torch.tensor([2]), torch.tensor([4]))[1].item()


def test_top_k_keeps_the_largest_logits_and_the_mean_of_the_rest(tmp_path):
    store = open_store(tmp_path, IDENTITY, samples=10, num_classes=20, top_k=3)
    logits = _logits(4, 20, seed=1)
    stored = store.write(torch.zeros(4, dtype=torch.int64), torch.arange(4), logits)
    top = logits.topk(3, dim=1)
    torch.testing.assert_close(stored.gather(1, top.indices), top.values, rtol=1e-3, atol=1e-2)
    others = torch.ones_like(logits, dtype=torch.bool).scatter_(1, top.indices, False)
    rest_mean = (logits * others).sum(1) / 17
    for row in range(4):
        torch.testing.assert_close(stored[row][others[row]], rest_mean[row].expand(17), rtol=1e-3, atol=1e-2)
    assert torch.equal(stored.argmax(1), logits.argmax(1))
    assert os.path.getsize(store.directory / "values.bin") == 162 * 10 * 4 * 2
    with pytest.raises(ConfigurationError, match="top_k must be in"):
        open_store(tmp_path, IDENTITY, samples=10, num_classes=20, top_k=20)


def test_concurrent_openers_share_one_directory_and_leave_no_staging(tmp_path):
    with ThreadPoolExecutor(8) as pool:
        stores = list(pool.map(lambda _: open_store(tmp_path, IDENTITY, 30, 10), range(16)))
    assert len({s.directory for s in stores}) == 1
    assert [p.name for p in tmp_path.iterdir()] == [stores[0].directory.name]
    other = open_store(tmp_path, {**IDENTITY, "teacher": {"class": "t.T", "sha256": "cd"}}, 30, 10)
    assert other.directory != stores[0].directory
    assert open_store(tmp_path, IDENTITY, 30, 12).directory != stores[0].directory  # layout is identity


def test_a_directory_built_for_something_else_is_refused(tmp_path):
    store = open_store(tmp_path, IDENTITY, 30, 10)
    meta = json.loads((store.directory / "meta.json").read_text())
    meta["identity"]["data"]["dataset"] = "edited"
    (store.directory / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigurationError, match="delete that directory"):
        open_store(tmp_path, IDENTITY, 30, 10)


def test_k_views_per_sample_occupy_only_the_first_k_rank_planes_on_disk(tmp_path):
    samples, classes = 2000, 100
    store = open_store(tmp_path, IDENTITY, samples, classes)
    indices = torch.arange(samples)
    for rank in range(2):
        store.write(torch.full((samples,), rank), indices, _logits(samples, classes, rank))
    path = store.directory / "values.bin"
    plane = samples * classes * 2
    assert os.path.getsize(path) == 162 * plane
    allocated = os.stat(path).st_blocks * 512
    if allocated >= 162 * plane:
        pytest.skip("this file system does not keep sparse files")
    assert allocated <= 2 * plane + (1 << 20)
