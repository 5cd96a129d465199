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


class OptimizerSteps(Callback):
    """Per step: which optimizer stepped, at what learning rate, and whether the run's had a state."""

    def __init__(self) -> None:
        self.steps: list[tuple[int, str, float, bool]] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        which = "init" if optimizer is pl_module.init_optimizer.optimizer else "run"
        run_state = bool(trainer.optimizers[0].state)
        self.steps.append((trainer.current_epoch, which, optimizer.param_groups[0]["lr"], run_state))


def test_init_phase_has_its_own_learning_rate_and_the_run_starts_with_a_fresh_optimizer(trainer_kwargs):
    steps = OptimizerSteps()
    module = _module(FT(init_epochs=1, init_lr=0.01))
    module.optimizer_factory = lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9)
    module.init_optimizer.factory = module.optimizer_factory
    _fit(trainer_kwargs, module, epochs=2, callbacks=[steps])
    assert steps.steps == [
        (0, "init", 0.01, False),
        (0, "init", 0.01, False),  # the run's optimizer has not stepped: no momentum yet
        (1, "run", 0.05, False),  # ... when the main phase begins
        (1, "run", 0.05, True),
    ]
    assert module.init_optimizer.optimizer is None  # dropped after the init phase


def test_resume_in_the_init_phase_restores_its_optimizer_state(trainer_kwargs, tmp_path):
    whole = _module(FT(init_epochs=3))
    _fit(trainer_kwargs, whole, epochs=2)
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    first = _module(FT(init_epochs=3))
    _fit(trainer_kwargs | {"enable_checkpointing": True}, first, epochs=1, callbacks=[checkpoint])
    assert "kdlab_init_optimizer" in torch.load(tmp_path / "last.ckpt", weights_only=True)
    resumed = _module(FT(init_epochs=3))
    _fit(trainer_kwargs, resumed, epochs=2, ckpt_path=tmp_path / "last.ckpt")
    paraphraser = {k: v for k, v in whole.state_dict().items() if ".paraphraser." in k}
    assert paraphraser
    for key, value in paraphraser.items():  # momentum carried over: the same as without a break
        assert torch.equal(resumed.state_dict()[key], value), key


def test_distillers_in_their_init_phase_together_need_one_init_lr(trainer_kwargs):
    fsp = FSP(init_epochs=1, init_lr=0.02, student_taps=STAGES, teacher_taps=STAGES)
    module = _module(AB(init_epochs=1, init_lr=0.01), fsp)
    with pytest.raises(Exception, match="set different init_lr values"):
        _fit(trainer_kwargs, module, epochs=1)
    with pytest.raises(ValueError, match="init_lr must be > 0"):
        FT(init_lr=0)
