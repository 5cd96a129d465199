"""A real 2-process DDP run (gloo on CPU) filling one teacher cache: each row computed once, right."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from kdlab.callbacks.cache_store import OutputStore
from kdlab.data import CIFARDataModule
from kdlab.data.view_order import views_at_ranks
from kdlab.models.cifar import resnet8

from .datagen import write_cifar10
from .kd_helpers import random_teacher_file

WORKER = Path(__file__).with_name("ddp_cache_worker.py")
SAMPLES = 105


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp_cache")
    write_cifar10(root, per_batch=21)
    random_teacher_file(root / "teacher.safetensors", seed=5)
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
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return root, [torch.load(root / f"rank{r}.pt", weights_only=False) for r in (0, 1)]


@pytest.mark.ddp
def test_ranks_share_one_cache_and_compute_each_row_once(run):
    root, ranks = run
    assert ranks[0]["directory"] == ranks[1]["directory"]
    assert [p.name for p in (root / "cache").iterdir()] == [Path(ranks[0]["directory"]).name]
    store = OutputStore(ranks[0]["directory"])
    assert store.count_filled() == 2 * SAMPLES
    assert sum(r["misses"] for r in ranks) == 2 * SAMPLES  # no row computed twice
    assert sum(r["hits"] for r in ranks) == SAMPLES  # the third epoch is served whole
    for epoch in range(3):
        hits = sum(r["epochs"][epoch][0][0] for r in ranks)
        assert hits == (SAMPLES if epoch == 2 else 0)
        # the epoch means of the loss terms are reduced over both ranks
        assert ranks[0]["epochs"][epoch][1]["train/loss"] == ranks[1]["epochs"][epoch][1]["train/loss"]
        assert ranks[0]["epochs"][epoch][1]["cache/hit_rate"] == (1.0 if epoch == 2 else 0.0)


@pytest.mark.ddp
def test_every_row_written_by_either_rank_is_the_teachers_output(run):
    root, ranks = run
    store = OutputStore(ranks[0]["directory"])
    data = CIFARDataModule("cifar10", root=str(root))
    data.setup()
    teacher = resnet8(num_classes=10).eval()
    teacher.load_state_dict(load_file(str(root / "teacher.safetensors")))
    indices = torch.arange(SAMPLES)
    for rank in (0, 1):
        rank_of_rows = torch.full((SAMPLES,), rank)
        stored, valid = store.read(rank_of_rows, indices)
        assert valid.all()
        with torch.no_grad():
            expected = teacher(data.render_train(indices, views_at_ranks(indices, rank_of_rows)))
        torch.testing.assert_close(stored, expected, rtol=2e-3, atol=2e-3)
