"""Init phases (AB, FT, FSP, two-stage FitNet) inside one fit, derived from the epoch, resumable."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from kdlab import DistillationModule
from kdlab.data import DigitsDataModule
from kdlab.losses import AB, FSP, FT, KD, FitNet
from kdlab.models import ConvNet

STAGES = ["stage1", "stage2", "stage3"]


class Recording(DistillationModule):
    """Remembers which loss terms each epoch trained."""

    def loss_terms(self, student, teacher, batch):
        terms = super().loss_terms(student, teacher, batch)
        self.__dict__.setdefault("phases", {}).setdefault(self.current_epoch, set()).update(terms)
        return terms


class Snapshots(Callback):
    """Copies of the state dict at the start and at the end of every epoch."""

    def __init__(self) -> None:
        self.states: list[dict[str, torch.Tensor]] = []

    def on_train_start(self, trainer, pl_module):
        self.states.append({k: v.detach().clone() for k, v in pl_module.state_dict().items()})

    def on_train_epoch_end(self, trainer, pl_module):
        self.on_train_start(trainer, pl_module)


def _module(*distillers, student_width=8):
    torch.manual_seed(0)
    return Recording(ConvNet(width=student_width), ConvNet(width=8), distillers=list(distillers))


def _fit(trainer_kwargs, module, epochs, ckpt_path=None, **overrides):
    options = {
        "max_epochs": epochs,
        "limit_train_batches": 2,
        "limit_val_batches": 1,
        "num_sanity_val_steps": 0,
    }
    trainer = L.Trainer(**(trainer_kwargs | options | overrides))
    trainer.fit(module, DigitsDataModule(batch_size=16), ckpt_path=ckpt_path)
    return trainer


def _changed(before, after, prefix):
    return {k for k in before if k.startswith(prefix) and not torch.equal(before[k], after[k])}


def test_ft_trains_only_its_paraphraser_first_then_freezes_it(trainer_kwargs):
    snapshots = Snapshots()
    module = _module(FT(init_epochs=1))
    _fit(trainer_kwargs, module, epochs=2, callbacks=[snapshots])
    assert module.phases == {0: {"ft_init"}, 1: {"ce", "ft"}}
    start, after_init, after_main = snapshots.states
    assert _changed(start, after_init, "distillers.ft.paraphraser.")
    trained_in_init = _changed(start, after_init, "")
    assert all(
        k.startswith("distillers.ft.paraphraser.") or "running_" in k or "num_batches" in k
        for k in trained_in_init
    )
    assert not _changed(after_init, after_main, "distillers.ft.paraphraser.")
    assert _changed(after_init, after_main, "distillers.ft.translator.")
    assert _changed(after_init, after_main, "student.fc.")


def test_ab_and_fsp_train_the_student_body_during_init_and_add_nothing_after(trainer_kwargs):
    snapshots = Snapshots()
    module = _module(AB(init_epochs=1), FSP(init_epochs=2, student_taps=STAGES, teacher_taps=STAGES))
    _fit(trainer_kwargs, module, epochs=3, callbacks=[snapshots])
    assert module.phases == {0: {"ab_init", "fsp_init"}, 1: {"fsp_init"}, 2: {"ce", "ab", "fsp"}}
    start, after_first, _, _ = snapshots.states
    assert _changed(start, after_first, "student.layer1.0.weight")
    assert not _changed(start, after_first, "student.fc.")  # no classification term during init
    assert module.trainer.callback_metrics["train/ab"] == 0


def test_two_stage_fitnet_is_a_hint_phase_then_kd(trainer_kwargs):
    module = _module(FitNet(weight=0.0, init_epochs=1), KD())
    _fit(trainer_kwargs, module, epochs=2)
    assert module.phases == {0: {"fitnet_init"}, 1: {"ce", "fitnet", "kd"}}


@pytest.mark.parametrize("stop_after", [1, 3], ids=["resume-in-init", "resume-in-main"])
def test_resume_continues_in_the_phase_of_the_checkpoint(trainer_kwargs, tmp_path, stop_after):
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    first = _module(FT(init_epochs=2))
    _fit(trainer_kwargs | {"enable_checkpointing": True}, first, epochs=stop_after, callbacks=[checkpoint])
    saved = torch.load(tmp_path / "last.ckpt", weights_only=True)

    resumed = _module(FT(init_epochs=2))
    snapshots = Snapshots()
    _fit(
        trainer_kwargs,
        resumed,
        epochs=stop_after + 1,
        ckpt_path=tmp_path / "last.ckpt",
        callbacks=[snapshots],
    )
    expected = {"ft_init"} if stop_after < 2 else {"ce", "ft"}
    assert resumed.phases == {stop_after: expected}
    restored = snapshots.states[0]
    for key, value in saved["state_dict"].items():
        assert torch.equal(restored[key], value), key
