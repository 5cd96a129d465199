"""The pieces behind kill-safe runs: atomic checkpoint writes, resumable loaders, generator states,
and the ``kdlab`` command wiring them in by default."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

import kdlab.checkpointing
from kdlab.callbacks.random_state import RandomState, capture, restore
from kdlab.callbacks.requeue import RequeueAtStepEnd
from kdlab.checkpointing import AtomicCheckpointIO, atomic_torch_save
from kdlab.cli import KDLabCLI
from kdlab.data.sampling import ResumableLoader, ShardedBatchSampler, batch_loader

from .kdlab_runs import QUIET, subprocess_env

# A writer that keeps replacing one checkpoint with bigger-than-a-page versions, each holding a
# tensor filled with its version number, so a torn file cannot pass for a whole one.
_WRITER = """
import sys, torch
from kdlab.checkpointing import atomic_torch_save
for version in range(1000):
    atomic_torch_save({"version": version, "w": torch.full((4_000_000,), float(version))}, sys.argv[1])
"""


def test_a_write_that_fails_midway_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"version": 1, "w": torch.ones(1000)}, path)

    def torn_save(obj, handle):  # a full disk or a crash half way through the bytes
        handle.write(b"PK\x03\x04 half a zip")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(kdlab.checkpointing.torch, "save", torn_save)
    with pytest.raises(OSError, match="No space left"):
        io.save_checkpoint({"version": 2, "w": torch.zeros(1000)}, path)
    monkeypatch.undo()
    assert io.load_checkpoint(path)["version"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]  # no temporary left


def test_sigkill_while_writing_never_leaves_a_torn_checkpoint(tmp_path):
    path = tmp_path / "last.ckpt"
    interrupted = 0
    for _ in range(5):  # until a kill lands while a temporary file is being written
        writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], env=subprocess_env())
        deadline = time.monotonic() + 120
        while not (path.is_file() and list(tmp_path.glob(".last.ckpt.tmp-*"))):
            assert writer.poll() is None and time.monotonic() < deadline, "the writer never got going"
            time.sleep(0.002)
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
        state = torch.load(path, weights_only=True)
        assert torch.equal(state["w"], torch.full((4_000_000,), float(state["version"])))
        interrupted += bool(list(tmp_path.glob(".last.ckpt.tmp-*")))
        if interrupted:
            break
    assert interrupted, "no kill landed during a write"
    atomic_torch_save({"version": -1}, path)  # the next write clears what the killed one left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


@pytest.mark.parametrize("workers", [0, 1])
def test_loader_continues_an_epoch_where_its_checkpoint_was_taken(workers):
    data = TensorDataset(torch.arange(50).float(), torch.arange(50), torch.arange(50))

    def loader() -> ResumableLoader:
        made = batch_loader(data, 8, shuffle=True, seed=3, num_workers=workers, pin_memory=False)
        made.sampler.set_epoch(2)
        return made

    whole = [batch[2].tolist() for batch in loader()]
    interrupted = loader()
    iterator = iter(interrupted)
    seen = [next(iterator)[2].tolist() for _ in range(3)]
    state = interrupted.state_dict()
    assert state == {"epoch": 2, "batches": 3, "global_batch": 8, "size": 50} and seen == whole[:3]
    del iterator

    resumed = batch_loader(data, 8, shuffle=True, seed=3, num_workers=workers, pin_memory=False)
    resumed.load_state_dict(state)
    assert [batch[2].tolist() for batch in resumed] == whole[3:]
    assert resumed.state_dict()["batches"] == len(whole)
    resumed.sampler.set_epoch(3)  # the next epoch is whole again, in its own order
    following = [batch[2].tolist() for batch in resumed]
    assert sorted(i for batch in following for i in batch) == list(range(50)) and following != whole


def test_a_run_resumed_on_more_processes_with_the_same_global_batch_continues_at_the_same_sample():
    data = TensorDataset(torch.arange(64).float(), torch.arange(64), torch.arange(64))

    def loader(batch_size: int, replicas: int, rank: int) -> ResumableLoader:
        sampler = ShardedBatchSampler(64, batch_size, True, seed=1, num_replicas=replicas, rank=rank)
        sampler.set_epoch(4)
        return ResumableLoader(data, batch_size=None, sampler=sampler)

    single = loader(16, 1, 0)
    iterator = iter(single)
    next(iterator), next(iterator)
    state = single.state_dict()
    rest = [batch[2].sort().values for batch in iterator]
    halves = []
    for rank in (0, 1):
        resumed = loader(8, 2, rank)
        resumed.load_state_dict(state)
        halves.append([batch[2] for batch in resumed])
    assert [torch.cat(pair).sort().values.tolist() for pair in zip(*halves)] == [r.tolist() for r in rest]
    with pytest.warns(UserWarning, match="after 32 samples.*continues after sample 24"):
        loader(24, 1, 0).load_state_dict(state)  # another global batch: the batch boundary before


def test_creating_loader_iterators_does_not_move_the_global_generator():
    data = TensorDataset(torch.arange(20).float(), torch.arange(20), torch.arange(20))
    loader = batch_loader(data, 4, shuffle=True, seed=0, num_workers=0, pin_memory=False)
    before = torch.get_rng_state()
    for _ in range(3):
        list(loader)
    assert torch.equal(torch.get_rng_state(), before)


def test_generator_states_survive_a_weights_only_round_trip(tmp_path):
    torch.manual_seed(5), np.random.seed(5), random.seed(5)
    torch.rand(3), np.random.rand(3), random.random()
    callback = RandomState()
    atomic_torch_save(callback.state_dict(), tmp_path / "state.pt")
    expected = (torch.rand(4), np.random.rand(4), [random.random() for _ in range(4)])
    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    loaded = torch.load(tmp_path / "state.pt", weights_only=True)
    restore(loaded["ranks"][0])
    assert torch.equal(torch.rand(4), expected[0])
    assert np.array_equal(np.random.rand(4), expected[1])
    assert [random.random() for _ in range(4)] == expected[2]
    assert set(capture()) >= {"torch", "numpy", "python"}


def test_kdlab_command_writes_checkpoints_atomically_and_saves_resume_state(tmp_path):
    args = ["--model=kdlab.DistillationModule", "--model.student=kdlab.models.MLP"]
    args += ["--data=kdlab.data.DigitsDataModule", f"--trainer.default_root_dir={tmp_path}", *QUIET]
    trainer = KDLabCLI(args=args, run=False).trainer
    assert type(trainer.strategy.checkpoint_io) is AtomicCheckpointIO
    kinds = [type(c).__name__ for c in trainer.callbacks]
    assert {"BestAndLastCheckpoint", "RandomState", "RequeueAtStepEnd"} <= set(kinds)
    assert Path(trainer.checkpoint_callback.dirpath) == tmp_path / "checkpoints"
    # A checkpoint IO of the user's choice is kept, and so are callbacks already configured.
    log = tmp_path / "writes.log"
    custom = [
        "--trainer.plugins=tests.reliability_helpers.RecordingCheckpointIO",
        f"--trainer.plugins.log={log}",
        "--trainer.callbacks+=kdlab.callbacks.random_state.RandomState",
        "--trainer.callbacks+=kdlab.checkpointing.BestAndLastCheckpoint",
        "--trainer.callbacks.every_n_train_steps=5",
    ]
    trainer = KDLabCLI(args=[*args, *custom], run=False).trainer
    assert type(trainer.strategy.checkpoint_io).__name__ == "RecordingCheckpointIO"
    assert [type(c) for c in trainer.callbacks].count(RandomState) == 1
    assert sum(isinstance(c, RequeueAtStepEnd) for c in trainer.callbacks) == 1
    every = [c for c in trainer.callbacks if type(c).__name__ == "BestAndLastCheckpoint"]
    assert len(every) == 1 and every[0].step_interval == 5
    assert Path(every[0].dirpath) == tmp_path / "checkpoints"
