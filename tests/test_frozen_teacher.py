"""The frozen-teacher rules of DistillationModule, one test each."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch import Callback, Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from safetensors.torch import save_file

from kdlab import Batch, DistillationModule
from kdlab.data import DigitsDataModule
from kdlab.errors import ConfigurationError
from kdlab.losses import KD
from kdlab.models import MLP, ConvNet


@pytest.fixture
def teacher_file(tmp_path):
    seed_everything(1)
    teacher = ConvNet(width=8)
    # Non-trivial BatchNorm statistics, so that "unchanged" is a meaningful check.
    for module in teacher.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
    path = tmp_path / "teacher.safetensors"
    save_file(teacher.state_dict(), str(path))
    return path


def _kd_module(teacher_file, **kwargs) -> DistillationModule:
    return DistillationModule(
        MLP(hidden=[16]),
        teacher=ConvNet(width=8),
        teacher_weights=str(teacher_file),
        distillers=[KD(0.9, 4.0)],
        ce_weight=0.1,
        **kwargs,
    )


def _fit(module, trainer_kwargs, epochs=2, **overrides):
    trainer = Trainer(
        max_epochs=epochs, limit_train_batches=4, limit_val_batches=2, **{**trainer_kwargs, **overrides}
    )
    trainer.fit(module, DigitsDataModule(batch_size=32))
    return trainer


def test_teacher_parameters_and_bn_buffers_are_bit_identical_after_fit(teacher_file, trainer_kwargs):
    module = _kd_module(teacher_file)
    before = {k: v.clone() for k, v in module.teacher.state_dict().items()}
    student_before = {k: v.clone() for k, v in module.student.state_dict().items()}
    _fit(module, trainer_kwargs)
    after = module.teacher.state_dict()
    assert before.keys() == after.keys()
    assert any("running_mean" in k for k in after)
    for key, value in before.items():
        assert torch.equal(value, after[key]), key
    # ...while the student did train.
    assert any(not torch.equal(v, module.student.state_dict()[k]) for k, v in student_before.items())


class _TeacherSpy(Callback):
    def __init__(self):
        self.calls = []

    def on_fit_start(self, trainer, pl_module):
        pl_module.teacher.register_forward_pre_hook(self._record)

    def _record(self, teacher, args):
        self.calls.append((teacher.training, torch.is_inference_mode_enabled(), torch.is_grad_enabled()))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        pl_module.train()  # what Lightning does after validation; the teacher must stay in eval


def test_teacher_runs_in_eval_and_inference_mode_every_step(teacher_file, trainer_kwargs):
    module = _kd_module(teacher_file)
    spy = _TeacherSpy()
    _fit(module, trainer_kwargs, callbacks=[spy], num_sanity_val_steps=0)
    assert len(spy.calls) >= 8
    assert all(training is False and inference for training, inference, _ in spy.calls)
    module.train()
    assert module.student.training and not module.teacher.training


def test_no_teacher_parameter_in_optimizer(teacher_file, trainer_kwargs):
    module = _kd_module(teacher_file)
    trainer = _fit(module, trainer_kwargs, epochs=1)
    optimised = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    assert optimised, "the optimizer has parameters"
    assert not optimised & {id(p) for p in module.teacher.parameters()}
    assert optimised == {id(p) for p in module.student.parameters()}
    assert all(not p.requires_grad for p in module.teacher.parameters())


def test_checkpoint_omits_teacher_and_records_its_hash(teacher_file, trainer_kwargs, tmp_path):
    from kdlab.teacher import file_sha256

    module = _kd_module(teacher_file)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    _fit(module, trainer_kwargs, epochs=1, enable_checkpointing=True, callbacks=[checkpoint])
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)
    assert saved["state_dict"], "the student is saved"
    assert not [k for k in saved["state_dict"] if k.startswith("teacher.")]
    assert saved["kdlab_teacher"] == {"path": str(teacher_file), "sha256": file_sha256(teacher_file)}


def test_resume_fails_clearly_when_teacher_file_changed(teacher_file, trainer_kwargs, tmp_path):
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    _fit(
        _kd_module(teacher_file), trainer_kwargs, epochs=1, enable_checkpointing=True, callbacks=[checkpoint]
    )
    last = tmp_path / "ckpt" / "last.ckpt"

    # Same file: resuming works and continues after the restored steps.
    resumed = Trainer(max_epochs=2, limit_train_batches=4, limit_val_batches=2, **trainer_kwargs)
    resumed.fit(_kd_module(teacher_file), DigitsDataModule(batch_size=32), ckpt_path=last)
    assert resumed.global_step == 8  # 4 steps restored + 4 new

    # A different teacher under the same path: refused, naming the hashes.
    changed = ConvNet(width=8)
    save_file(changed.state_dict(), str(teacher_file))
    with pytest.raises(ConfigurationError, match="teacher changed since the checkpoint"):
        Trainer(max_epochs=2, **trainer_kwargs).fit(
            _kd_module(teacher_file), DigitsDataModule(batch_size=32), ckpt_path=last
        )


def test_without_teacher_is_plain_supervised_training(trainer_kwargs):
    seed_everything(0)
    module = DistillationModule(MLP(hidden=[32]))
    data = DigitsDataModule()
    data.setup()
    batch = Batch(*next(iter(data.train_dataloader())))
    student = module.student_outputs(batch.inputs)
    assert module.teacher_outputs(batch) is None
    terms = module.loss_terms(student, None, batch)
    assert list(terms) == ["ce"]
    assert torch.allclose(terms["ce"], torch.nn.functional.cross_entropy(student.logits, batch.targets))
    trainer = Trainer(max_epochs=8, **trainer_kwargs)
    trainer.fit(module, data)
    accuracy = trainer.test(module, data, verbose=False)[0]["test/acc1"]
    assert accuracy > 0.9
    assert "test/agreement" not in trainer.callback_metrics


def test_distillers_without_teacher_are_refused():
    with pytest.raises(ConfigurationError, match="need a teacher"):
        DistillationModule(MLP(), distillers=[KD()])
    with pytest.raises(ConfigurationError, match="without a teacher"):
        DistillationModule(MLP(), teacher_weights="t.safetensors")
