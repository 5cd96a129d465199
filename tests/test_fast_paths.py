"""BatchNorm folding, the FastPaths callback, mixed precision and channels-last in real fits."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from safetensors.torch import load_file

from kdlab import DistillationModule
from kdlab.callbacks import FastPaths, TeacherCache
from kdlab.data import CIFARDataModule
from kdlab.fold import fold_batchnorm
from kdlab.losses import KD
from kdlab.models.cifar import mobilenetv2, resnet8, shufflev2, vgg8, wrn_16_1
from kdlab.teacher import state_sha256

from .kd_helpers import RecordingKD, tiny_cifar


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return tiny_cifar(tmp_path_factory.mktemp("cifar"))


def _randomise_batchnorm(model: torch.nn.Module) -> torch.nn.Module:
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            for tensor, low, high in ((module.running_mean, -0.5, 0.5), (module.running_var, 0.5, 2)):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) * (high - low) + low)
            module.weight.data.copy_(torch.rand(module.weight.shape, generator=generator) + 0.5)
    return model.eval()


@pytest.mark.parametrize("family", [resnet8, vgg8, wrn_16_1, mobilenetv2, shufflev2])
def test_folded_copy_computes_the_same_and_leaves_the_original_alone(family):
    torch.manual_seed(0)
    model = _randomise_batchnorm(family(num_classes=10))
    fingerprint = state_sha256(model)
    example = torch.randn(4, 3, 32, 32)
    folded, pairs = fold_batchnorm(model, example=example[:2])
    norms = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    remaining = sum(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert pairs > 0 and remaining == norms - pairs  # wrn: pre-activation BNs cannot fold
    with torch.no_grad():
        expected, actual = model(example), folded(example)
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5 * float(expected.abs().max()))
    assert state_sha256(model) == fingerprint  # weights and BN buffers bit-identical
    assert not any(p.requires_grad for p in folded.parameters())


def test_tapped_layers_are_not_folded():
    model = _randomise_batchnorm(resnet8(num_classes=10))
    folded, pairs = fold_batchnorm(model, keep=["conv1", "layer1.0.bn2", "layer2.0.relu:input"])
    assert isinstance(folded.bn1, torch.nn.BatchNorm2d)  # its conv's output is tapped
    assert isinstance(folded.layer1[0].bn2, torch.nn.BatchNorm2d)
    assert isinstance(folded.layer1[0].bn1, torch.nn.Identity)
    assert pairs == 9 - 2


def _fit(data_root, trainer_kwargs, callbacks=(), epochs=1, **trainer_overrides):
    seed_everything(0)
    module = DistillationModule(
        resnet8(num_classes=10),
        teacher=resnet8(num_classes=10),
        teacher_weights=str(data_root / "teacher.safetensors"),
        distillers=[RecordingKD()],
        ce_weight=0.1,
    )
    data = CIFARDataModule("cifar10", root=str(data_root), batch_size=16)
    settings = {**trainer_kwargs, "max_epochs": epochs, "limit_val_batches": 0, **trainer_overrides}
    trainer = Trainer(callbacks=list(callbacks), **settings)
    trainer.fit(module, data)
    return module, trainer


def test_fit_with_fast_paths_runs_the_copy_and_keeps_the_teacher_bit_identical(data_root, trainer_kwargs):
    plain, _ = _fit(data_root, trainer_kwargs)
    fast_paths = FastPaths()
    checkpoint = ModelCheckpoint(dirpath=data_root / "fast_ckpt", save_last=True)
    seed_everything(0)
    fast, _ = _fit(data_root, trainer_kwargs, [fast_paths, checkpoint], enable_checkpointing=True)
    assert fast_paths.folded_pairs == 9
    for (_, _, logits, loss), (_, _, fast_logits, fast_loss) in zip(
        plain.distillers["recordingkd"].seen, fast.distillers["recordingkd"].seen, strict=True
    ):
        torch.testing.assert_close(fast_logits, logits, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(fast_loss, loss, rtol=1e-3, atol=1e-5)
    stored = load_file(str(data_root / "teacher.safetensors"))
    assert all(torch.equal(stored[k], v) for k, v in fast.teacher.state_dict().items())
    assert fast.teacher_inference.runner is None  # detached after fit
    saved = torch.load(data_root / "fast_ckpt" / "last.ckpt", weights_only=True)["state_dict"]
    assert all(key.startswith(("student.", "distillers.")) for key in saved)


def test_fast_paths_leave_a_tapped_teacher_alone(data_root, trainer_kwargs):
    class Tapping(KD):
        teacher_taps = ("layer1",)

    module = DistillationModule(
        resnet8(num_classes=10), teacher=resnet8(num_classes=10), distillers=[Tapping()]
    )
    fast_paths = FastPaths()
    Trainer(callbacks=[fast_paths], max_steps=1, limit_val_batches=0, **trainer_kwargs).fit(
        module, CIFARDataModule("cifar10", root=str(data_root), batch_size=16)
    )
    assert fast_paths.teacher_copy is None and fast_paths.folded_pairs == 0


def test_bf16_mixed_on_cpu_keeps_the_loss_terms_in_float32(data_root, trainer_kwargs, tmp_path):
    module, trainer = _fit(data_root, trainer_kwargs, [FastPaths(channels_last=True)], precision="bf16-mixed")
    seen = module.distillers["recordingkd"].seen
    assert all(logits.dtype == torch.float32 and loss.dtype == torch.float32 for _, _, logits, loss in seen)
    assert all(torch.isfinite(loss) for *_, loss in seen)
    assert torch.isfinite(trainer.logged_metrics["train/loss"])
    assert module.student.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    # the cache computes its rows in float32 whatever the precision: they match an fp32 teacher
    cache = TeacherCache(root=str(tmp_path))
    module, _ = _fit(data_root, trainer_kwargs, [cache], precision="bf16-mixed", limit_train_batches=2)
    indices, views, logits, _ = module.distillers["recordingkd"].seen[0]
    data = CIFARDataModule("cifar10", root=str(data_root))
    data.setup()
    with torch.no_grad():
        expected = module.teacher(data.render_train(indices, views))
    torch.testing.assert_close(logits, expected.half().float(), rtol=2e-3, atol=2e-3)


@pytest.mark.slow
def test_compiled_student_and_teacher_train_on_cpu(data_root, trainer_kwargs):
    paths = FastPaths(compile_teacher=True, compile_student=True)
    module, trainer = _fit(data_root, trainer_kwargs, [paths], limit_train_batches=3)
    assert torch.isfinite(trainer.logged_metrics["train/loss"])
    assert all(key.startswith("student.") or key.startswith("teacher.") for key in module.state_dict())
