"""Feature taps: the module's hooks, attached at setup, shapes probed before the optimizer, adapters
checkpointed."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch import Tensor, nn

from kdlab import DistillationModule
from kdlab.data import DigitsDataModule
from kdlab.losses import AT, KD, Distiller, FitNet
from kdlab.models import ConvNet
from kdlab.module import ConfigurationError
from kdlab.outputs import Batch, Outputs
from kdlab.taps import TapError


class Recorder(Distiller):
    """Keeps what it is given; contributes a zero (but differentiable) term."""

    student_taps = ("stage1_preact", "stage2", "layer2")
    teacher_taps = ("stage1_preact", "embedding")

    def __init__(self) -> None:
        super().__init__(1.0)
        self.built_with: tuple[dict, dict] | None = None
        self.seen: list[tuple[Outputs, Outputs]] = []

    def build(self, context) -> None:
        self.built_with = (dict(context.student_shapes), dict(context.teacher_shapes))
        self.context = context

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> Tensor:
        self.seen.append((student, teacher, batch))
        return student.features["stage2"].sum() * 0.0


def _fit(trainer_kwargs, module, datamodule=None, **overrides):
    trainer = L.Trainer(
        **(trainer_kwargs | {"max_epochs": 1, "limit_train_batches": 2, "limit_val_batches": 1} | overrides)
    )
    trainer.fit(module, datamodule or DigitsDataModule(batch_size=16))
    return trainer


def test_the_module_attaches_taps_at_setup_and_shapes_reach_build(trainer_kwargs):
    calls = []

    class Spy(Callback):
        def setup(self, trainer, pl_module, stage):
            calls.append("callback")

    class Module(DistillationModule):
        def setup(self, stage):
            calls.append("module")
            super().setup(stage)

    recorder = Recorder()
    module = Module(ConvNet(width=4), ConvNet(width=8), distillers=[recorder])
    _fit(trainer_kwargs, module, callbacks=[Spy()])
    assert calls.index("callback") < calls.index("module")
    student_shapes, teacher_shapes = recorder.built_with
    assert student_shapes == {
        "stage1_preact": (2, 4, 8, 8),
        "stage2": (2, 8, 4, 4),
        "layer2": (2, 8, 4, 4),
    }
    assert teacher_shapes == {"stage1_preact": (2, 8, 8, 8), "embedding": (2, 32)}
    assert recorder.context.student_paths["stage1_preact"] == "layer1.2:input"
    assert recorder.context.num_samples == len(module.trainer.datamodule.splits["train"])


class HookSpy(Callback):
    """Whether the module had forward hooks when training started."""

    def on_train_start(self, trainer, pl_module):
        self.hooked = any(m._forward_hooks or m._forward_pre_hooks for m in pl_module.modules())


@pytest.mark.parametrize(("distiller", "hooked"), [(KD, False), (AT, True)])
def test_hooks_are_attached_only_for_feature_distillers(distiller, hooked, trainer_kwargs):
    spy = HookSpy()
    module = DistillationModule(ConvNet(width=4), ConvNet(width=8), distillers=[distiller()])
    _fit(trainer_kwargs, module, callbacks=[spy])
    assert spy.hooked == hooked


def test_input_tap_sees_the_pre_activation_of_an_in_place_relu(trainer_kwargs):
    recorder = Recorder()
    module = DistillationModule(ConvNet(width=4), ConvNet(width=8), distillers=[recorder])
    _fit(trainer_kwargs, module)
    student, teacher, batch = recorder.seen[-1]
    assert student.features["stage1_preact"].min() < 0  # before the ReLU (in place) ran
    assert torch.equal(student.features["stage2"], student.features["layer2"])  # alias and path, one hook
    assert student.features["stage2"].requires_grad
    assert (
        not teacher.features["embedding"].requires_grad and not teacher.features["embedding"].is_inference()
    )
    with torch.no_grad():
        expected = module.teacher.layer1[1](module.teacher.layer1[0](batch.inputs))
    assert expected.min() < 0 and torch.equal(teacher.features["stage1_preact"], expected)
    module.probe(batch.inputs)  # hooks are gone after fit: the probe captures nothing
    assert module.taps.take("student") == {} and module.taps.take("teacher") == {}


def test_teacher_taps_fire_in_inference_mode_and_nothing_is_captured_in_validation(trainer_kwargs):
    modes, captured_in_validation = [], []

    class Spy(Callback):
        def on_fit_start(self, trainer, pl_module):
            pl_module.teacher.layer1.register_forward_hook(
                lambda *_: modes.append(torch.is_inference_mode_enabled())
            )
            pl_module.student.layer3.register_forward_hook(
                lambda *_: (
                    captured_in_validation.append(bool(pl_module.taps.take("student")))
                    if not pl_module.training
                    else None
                )
            )

    module = DistillationModule(ConvNet(width=4), ConvNet(width=8), distillers=[Recorder()])
    _fit(trainer_kwargs, module, callbacks=[Spy()], num_sanity_val_steps=1)
    assert modes and all(modes)
    assert captured_in_validation == [False, False]  # sanity check + one validation batch
    assert module.taps.take("student") == {} and module.taps.take("teacher") == {}
    # The module removed its hooks at teardown; only the spy's two remain.
    assert not any(m._forward_pre_hooks for m in module.modules())
    assert [m for m in module.modules() if m._forward_hooks] == [module.student.layer3, module.teacher.layer1]


def test_wrong_tap_fails_at_setup_naming_the_closest_layers(trainer_kwargs):
    module = DistillationModule(
        ConvNet(width=4), ConvNet(width=8), distillers=[AT(student_taps=["stage1", "stag2", "layr3"])]
    )
    with pytest.raises(TapError) as error:
        _fit(trainer_kwargs, module)
    message = str(error.value)
    assert "student tap of AT" in message and "'stag2'" in message and "stage2" in message


def test_a_tap_on_a_layer_that_never_runs_is_reported(trainer_kwargs):
    student = ConvNet(width=4)
    student.unused = nn.Linear(2, 2)
    module = DistillationModule(student, ConvNet(width=8), distillers=[FitNet(student_taps=["unused"])])
    with pytest.raises(ConfigurationError, match=r"'unused'.*not called in forward"):
        _fit(trainer_kwargs, module)


def test_shapes_come_from_a_real_batch_when_the_datamodule_declares_no_input_shape(trainer_kwargs):
    class NoShape(DigitsDataModule):
        input_shape = None

    recorder = Recorder()
    _fit(
        trainer_kwargs,
        DistillationModule(ConvNet(width=4), ConvNet(width=8), distillers=[recorder]),
        NoShape(batch_size=8),
    )
    assert recorder.built_with[0]["stage2"] == (2, 8, 4, 4)


def test_adapters_are_optimised_checkpointed_and_restored_on_resume(trainer_kwargs, tmp_path):
    def module() -> DistillationModule:
        torch.manual_seed(0)
        return DistillationModule(
            ConvNet(width=4),
            ConvNet(width=8),
            distillers=[FitNet(student_taps=["stage1"], teacher_taps=["stage2"])],
        )

    first = module()
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    _fit(trainer_kwargs | {"enable_checkpointing": True}, first, callbacks=[checkpoint])
    regressor = first.distillers["fitnet"].regressors[0]
    assert isinstance(regressor.conv, nn.Conv2d) and regressor.conv.stride == (2, 2)  # 8×8 → 4×4
    saved = torch.load(tmp_path / "last.ckpt", weights_only=True)["state_dict"]
    assert torch.equal(saved["distillers.fitnet.regressors.0.conv.weight"], regressor.conv.weight)
    optimised = {id(p) for group in first.trainer.optimizers[0].param_groups for p in group["params"]}
    assert id(regressor.conv.weight) in optimised

    restored = []

    class Check(Callback):
        def on_train_start(self, trainer, pl_module):
            restored.append(pl_module.distillers["fitnet"].regressors[0].conv.weight.detach().clone())

    second = module()
    trainer = L.Trainer(
        **(trainer_kwargs | {"max_epochs": 2, "limit_train_batches": 2, "limit_val_batches": 1}),
        callbacks=[Check()],
    )
    trainer.fit(second, DigitsDataModule(batch_size=16), ckpt_path=tmp_path / "last.ckpt")
    assert torch.equal(restored[0], saved["distillers.fitnet.regressors.0.conv.weight"])
    assert trainer.current_epoch == 2
