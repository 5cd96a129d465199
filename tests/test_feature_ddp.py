"""CRD under real multi-process DDP (gloo on CPU): every process keeps the same memory banks."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback

from kdlab import DistillationModule
from kdlab.data import DigitsDataModule
from kdlab.losses import CRD, FT
from kdlab.models import ConvNet


class BankReport(Callback):
    """Writes, on rank 0, whether all processes hold identical banks and how many samples they saw."""

    def __init__(self, path) -> None:
        self.path = path

    def on_train_end(self, trainer, pl_module):
        crd = pl_module.distillers["crd"]
        state = torch.cat(
            [crd.student_memory.flatten(), crd.teacher_memory.flatten(), crd.memory_labels.float()]
        )
        copies = [torch.empty_like(state) for _ in range(dist.get_world_size())]
        dist.all_gather(copies, state)
        if trainer.global_rank == 0:
            same = all(torch.equal(copies[0], c) for c in copies[1:])
            seen = int((crd.memory_labels >= 0).sum())
            torch.save({"same": same, "seen": seen}, self.path)


@pytest.mark.ddp
@pytest.mark.slow
def test_crd_banks_stay_identical_across_processes(trainer_kwargs, tmp_path):
    torch.manual_seed(0)
    module = DistillationModule(ConvNet(width=4), ConvNet(width=8), distillers=[CRD(num_negatives=32)])
    options = {"max_epochs": 1, "limit_train_batches": 3, "limit_val_batches": 0, "num_sanity_val_steps": 0}
    trainer = L.Trainer(
        **(trainer_kwargs | options | {"devices": 2, "strategy": "ddp_spawn"}),
        callbacks=[BankReport(tmp_path / "banks.pt")],
    )
    trainer.fit(module, DigitsDataModule(batch_size=8))
    report = torch.load(tmp_path / "banks.pt")
    assert report == {"same": True, "seen": 2 * 3 * 8}  # both processes' samples in every bank


class Phases(DistillationModule):
    """Remembers which loss terms each epoch trained."""

    def loss_terms(self, student, teacher, batch):
        terms = super().loss_terms(student, teacher, batch)
        self.__dict__.setdefault("phases", {}).setdefault(self.current_epoch, set()).update(terms)
        return terms


class PhaseReport(Callback):
    def __init__(self, path) -> None:
        self.path = path

    def on_train_end(self, trainer, pl_module):
        if trainer.global_rank == 0:
            torch.save(pl_module.phases, self.path)


@pytest.mark.ddp
@pytest.mark.slow
def test_an_init_phase_trains_under_ddp_with_unused_parameters_allowed(trainer_kwargs, tmp_path):
    torch.manual_seed(0)
    module = Phases(ConvNet(width=4), ConvNet(width=8), distillers=[FT(init_epochs=1)])
    options = {"max_epochs": 2, "limit_train_batches": 2, "limit_val_batches": 0, "num_sanity_val_steps": 0}
    strategy = {"devices": 2, "strategy": "ddp_spawn_find_unused_parameters_true"}
    trainer = L.Trainer(
        **(trainer_kwargs | options | strategy), callbacks=[PhaseReport(tmp_path / "phases.pt")]
    )
    trainer.fit(module, DigitsDataModule(batch_size=8))
    assert torch.load(tmp_path / "phases.pt") == {0: {"ft_init"}, 1: {"ce", "ft"}}
