"""Behaviour of the feature distillers as modules: learned parts, memory banks, shape requirements."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch import nn

from kdlab import DistillationModule
from kdlab.data import DigitsDataModule
from kdlab.losses import (
    CRD,
    KDSVD,
    OFD,
    VID,
    BuildContext,
    FitNet,
    IncompatibleShapesError,
    bn_margin,
    crd_loss,
)
from kdlab.losses.ofd import bn_feeding
from kdlab.models import ConvNet
from kdlab.models.small import StridedConvNet
from kdlab.outputs import Batch, Outputs


def _trainer(trainer_kwargs, **overrides):
    options = {"max_epochs": 1, "limit_train_batches": 2, "limit_val_batches": 1, "num_sanity_val_steps": 0}
    return L.Trainer(**(trainer_kwargs | options | overrides))


def test_vid_variance_is_a_learned_parameter(trainer_kwargs):
    vid = VID()
    module = DistillationModule(ConvNet(width=4), ConvNet(width=8), distillers=[vid])
    _trainer(trainer_kwargs).fit(module, DigitsDataModule(batch_size=16))
    names = [name for name, _ in module.named_parameters()]
    assert {f"distillers.vid.log_scales.{i}" for i in range(3)} <= set(names)
    variance = torch.nn.functional.softplus(vid.log_scales[0].detach()) + vid.eps
    assert vid.log_scales[0].shape == (8,) and not torch.allclose(variance, torch.full_like(variance, 5.0))


def _crd_features(batch, dim=6, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return Outputs(torch.zeros(batch, 3), {"embedding": torch.randn(batch, dim, generator=generator)})


def _built_crd(num_samples=20, negatives=8, momentum=0.5):
    crd = CRD(num_negatives=negatives, embedding_dim=4, momentum=momentum)
    shapes = {"embedding": torch.Size([2, 6])}
    crd.build(BuildContext(shapes, shapes, num_samples=num_samples))
    return crd


def test_crd_memory_update_is_a_normalised_momentum_mix():
    crd = _built_crd()
    indices, targets = torch.tensor([3, 7, 11]), torch.tensor([0, 1, 0])
    before_s, before_t = crd.student_memory.clone(), crd.teacher_memory.clone()
    student, teacher = _crd_features(3, seed=1), _crd_features(3, seed=2)
    loss = crd(student, teacher, Batch(student.logits, targets, indices))
    assert loss.isfinite() and loss.requires_grad
    with torch.no_grad():
        v_s = crd.embed_student(student.features["embedding"])
        v_t = crd.embed_teacher(teacher.features["embedding"])
    for bank, before, value in ((crd.student_memory, before_s, v_s), (crd.teacher_memory, before_t, v_t)):
        mixed = 0.5 * before[indices] + 0.5 * value
        assert torch.allclose(bank[indices], mixed / mixed.norm(dim=1, keepdim=True), atol=1e-6)
        untouched = torch.ones(20, dtype=torch.bool).index_fill_(0, indices, False)
        assert torch.equal(bank[untouched], before[untouched])
    assert crd.memory_labels[indices].tolist() == [0, 1, 0]
    normalizers = crd.normalizers.clone()
    assert (normalizers > 0).all()
    crd(student, teacher, Batch(student.logits, targets, indices))
    assert torch.equal(crd.normalizers, normalizers)  # fixed after the first batch


@pytest.mark.parametrize(("num_samples", "negatives"), [(20, 8), (200, 3)], ids=["product", "gather"])
def test_crd_module_is_crd_loss_on_the_gathered_memory_rows(num_samples, negatives, monkeypatch):
    """The module scores the memory without gathering its rows (a (batch, N) product where N is
    small, the gathered rows elsewhere); either way the loss is crd_loss of memory[rows]."""
    crd = _built_crd(num_samples=num_samples, negatives=negatives)
    indices, targets = torch.tensor([3, 7, 11]), torch.tensor([0, 1, 0])
    student, teacher = _crd_features(3, seed=1), _crd_features(3, seed=2)
    drawn = torch.randint(0, num_samples, (3, negatives), generator=torch.Generator().manual_seed(0))
    monkeypatch.setattr(crd, "_negatives", lambda *args: drawn)
    memories = crd.student_memory.clone(), crd.teacher_memory.clone()
    loss = crd(student, teacher, Batch(student.logits, targets, indices))
    rows = torch.cat([indices[:, None], drawn], dim=1)
    v_s = crd.embed_student(student.features["embedding"])
    v_t = crd.embed_teacher(teacher.features["embedding"])
    expected = crd_loss(v_s, v_t, memories[0][rows], memories[1][rows], crd.normalizers, num_samples, 0.07)
    torch.testing.assert_close(loss, expected)
    parameters = [*crd.embed_student.parameters(), *crd.embed_teacher.parameters()]
    for got, want in zip(torch.autograd.grad(loss, parameters), torch.autograd.grad(expected, parameters)):
        torch.testing.assert_close(got, want)


def test_crd_negatives_avoid_the_positive_and_known_samples_of_its_class():
    crd = _built_crd(num_samples=12, negatives=200)
    crd.memory_labels.copy_(torch.arange(12) % 3)
    indices, targets = torch.tensor([0, 4, 5]), torch.tensor([0, 1, 2])
    negatives = crd._negatives(indices, targets)
    assert negatives.shape == (3, 200)
    assert not (negatives == indices[:, None]).any()
    # 3 of the 11 other samples share each anchor's class; five redraws leave about (3/11)^6 of them.
    assert (crd.memory_labels[negatives] == targets[:, None]).float().mean() < 0.01
    assert len(negatives.unique()) == 12  # every other-class sample gets drawn


def test_crd_banks_are_checkpointed_and_load_where_the_training_size_is_unknown(trainer_kwargs, tmp_path):
    def module():
        torch.manual_seed(0)  # the same teacher each time
        return DistillationModule(ConvNet(width=4), ConvNet(width=8), distillers=[CRD(num_negatives=32)])

    datamodule = DigitsDataModule(batch_size=16)
    first = module()
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    _trainer(trainer_kwargs | {"enable_checkpointing": True}, callbacks=[checkpoint]).fit(first, datamodule)
    saved = torch.load(tmp_path / "last.ckpt", weights_only=True)["state_dict"]
    size = len(datamodule.splits["train"])
    assert saved["distillers.crd.student_memory"].shape == (size, 128)
    assert (saved["distillers.crd.memory_labels"] >= 0).sum() == 32  # two batches of 16 seen
    assert torch.equal(saved["distillers.crd.teacher_memory"], first.distillers["crd"].teacher_memory)

    # test (no training-set size) builds empty banks, then takes the checkpoint's
    second = module()
    _trainer(trainer_kwargs).test(second, datamodule, ckpt_path=tmp_path / "last.ckpt")
    assert torch.equal(second.distillers["crd"].student_memory, saved["distillers.crd.student_memory"])

    banks = []

    class Banks(Callback):
        def on_train_start(self, trainer, pl_module):
            banks.append(pl_module.distillers["crd"].memory_labels.clone())

    _trainer(trainer_kwargs, max_epochs=2, callbacks=[Banks()]).fit(
        module(), datamodule, ckpt_path=tmp_path / "last.ckpt"
    )
    assert torch.equal(banks[0], saved["distillers.crd.memory_labels"])


def test_crd_rejects_indices_outside_the_training_set():
    crd = _built_crd(num_samples=5)
    student = _crd_features(2)
    with pytest.raises(ValueError, match=r"batch\.indices must lie in"):
        crd(student, student, Batch(student.logits, torch.tensor([0, 1]), torch.tensor([1, 9])))


def test_methods_that_need_equal_shapes_say_so_naming_layers_and_shapes(trainer_kwargs):
    module = DistillationModule(StridedConvNet(), ConvNet(width=8), distillers=[KDSVD()])
    with pytest.raises(IncompatibleShapesError) as error:
        _trainer(trainer_kwargs).fit(module, DigitsDataModule(batch_size=16))
    message = str(error.value)
    assert "KDSVD" in message and "channels must be equal" in message
    assert "student 'stage1' (2, 12, 4, 4) vs teacher 'stage1' (2, 8, 8, 8)" in message

    fitnet = FitNet(student_taps=["stage3"], teacher_taps=["stage1"])  # 2×2 student vs 8×8 teacher
    module = DistillationModule(StridedConvNet(), ConvNet(width=8), distillers=[fitnet])
    with pytest.raises(IncompatibleShapesError, match=r"FitNet: no regressor maps a 2×2 student map"):
        _trainer(trainer_kwargs).fit(module, DigitsDataModule(batch_size=16))


def test_mismatched_tap_lists_are_rejected_when_configured():
    with pytest.raises(ValueError, match="same number of layers"):
        VID(student_taps=["stage1", "stage2"], teacher_taps=["stage1"])
    with pytest.raises(ValueError, match="list of layer names"):
        VID(student_taps="stage1")


class _Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1, self.relu1 = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU()
        self.conv2, self.bn2 = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.downsample = nn.Sequential(nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4))
        self.relu = nn.ReLU()


class _Vgg(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block0 = nn.Sequential(
            nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4)
        )
        self.relu0 = nn.ReLU()
        self.layer = _Residual()


def test_ofd_finds_the_batchnorm_before_each_pre_activation():
    model = _Vgg()
    assert bn_feeding(model, "layer.relu:input") is model.layer.bn2  # not the shortcut's
    assert bn_feeding(model, "layer.relu1:input") is model.layer.bn1
    assert bn_feeding(model, "relu0:input") is model.block0[4]  # inside the preceding block
    assert bn_feeding(model, "layer.bn2") is model.layer.bn2
    with pytest.raises(ValueError, match="no BatchNorm feeds the teacher tap 'block0'"):
        bn_feeding(model, "block0")


def test_ofd_margins_are_buffers_from_the_teacher_batchnorms(trainer_kwargs):
    teacher = ConvNet(width=8)
    with torch.no_grad():
        teacher.layer1[1].weight.uniform_(0.5, 2.0)
        teacher.layer1[1].bias.uniform_(-1.0, 1.0)
    module = DistillationModule(ConvNet(width=4), teacher, distillers=[OFD()])
    _trainer(trainer_kwargs).fit(module, DigitsDataModule(batch_size=16))
    expected = bn_margin(teacher.layer1[1].weight, teacher.layer1[1].bias).view(1, -1, 1, 1)
    assert torch.equal(module.distillers["ofd"].margin0, expected)
    assert "distillers.ofd.margin2" in module.state_dict()
    with pytest.raises(ValueError, match="comes from layer3, which is Sequential"):
        OFD(teacher_bns=["layer1.1", "layer2.0.1", "layer3"]).build(
            BuildContext(
                {f"stage{k}_preact": torch.Size([2, 4, 8, 8]) for k in (1, 2, 3)},
                {f"stage{k}_preact": torch.Size([2, c, 8, 8]) for k, c in ((1, 8), (2, 16), (3, 32))},
                ConvNet(width=4),
                teacher,
            )
        )
