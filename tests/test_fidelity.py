"""Recipes and protocol that follow the papers' reference code (kdlab issue 14): one test per
deviation that an audit against the authors' code found, so that it cannot come back."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, Trainer

from kdlab import DistillationModule
from kdlab.callbacks import LossWeightSchedule
from kdlab.cli import KDLabCLI
from kdlab.data import CIFARDataModule, DigitsDataModule
from kdlab.errors import NonFiniteLossError
from kdlab.losses import KD, MLKD, OFD
from kdlab.losses.kdsvd import _SingularPairs, kdsvd_loss
from kdlab.models import MLP, ConvNet
from kdlab.outputs import Batch, Outputs

from .datagen import write_cifar10
from .kdlab_runs import QUIET
from .recipes import DIGITS, FEATURE_METHODS, PAIRS, recipe, recipe_files

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def skip_weight_init(monkeypatch):
    for name in ("kaiming_uniform_", "kaiming_normal_", "normal_", "uniform_", "xavier_uniform_"):
        monkeypatch.setattr(torch.nn.init, name, lambda tensor, *args, **kwargs: tensor)


def build(configs: list[Path], tmp_path: Path) -> KDLabCLI:
    args = [f"--config={c}" for c in configs]
    args += ["--model.init_args.teacher_weights=null", f"--trainer.default_root_dir={tmp_path}", *QUIET]
    return KDLabCLI(args=args, run=False)


@pytest.mark.parametrize("pair", PAIRS)
def test_reviewkd_recipes_warm_the_weight_up_over_20_epochs(pair, tmp_path, skip_weight_init):
    cli = build(recipe_files(pair, "reviewkd"), tmp_path)
    (schedule,) = [c for c in cli.trainer.callbacks if isinstance(c, LossWeightSchedule)]
    assert schedule.warmup_epochs == 20
    assert [round(schedule.factor(epoch), 6) for epoch in (0, 9, 19, 30)] == [0.05, 0.5, 1.0, 1.0]


@pytest.mark.parametrize("method", [m for m in FEATURE_METHODS if (DIGITS / f"{m}.yaml").is_file()])
def test_loss_terms_compute_in_float32_under_bf16_autocast(method, tmp_path):
    """The same features give the same terms with and without bf16 autocast (to 1e-5), and bf16
    features (what autocast makes) give the float32 terms of their upcast values."""
    cli = build([REPO / "experiments" / "digits" / f"{method}.yaml"], tmp_path)
    module, data, seen = cli.model, cli.datamodule, {}

    class Probe(Callback):  # outputs with the tapped features, while the feature hooks are in place
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen["batch"] = Batch(*batch)
            seen["outputs"] = pl_module.probe(batch[0])

    Trainer(
        max_steps=1,
        limit_val_batches=0,
        callbacks=[Probe()],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    ).fit(module, data)
    batch, (student, teacher) = seen["batch"], seen["outputs"]
    assert student.features and teacher.features

    def terms(student: Outputs, teacher: Outputs, autocast: bool) -> dict[str, torch.Tensor]:
        copy, _ = copy_module(module), torch.manual_seed(0)  # memory banks and negatives start equal
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast), torch.no_grad():
            return copy.loss_terms(student, teacher, batch)

    reference = terms(student, teacher, autocast=False)
    mixed = terms(student, teacher, autocast=True)
    assert reference.keys() == mixed.keys() and len(reference) >= 1
    for name, value in reference.items():
        assert mixed[name].dtype == torch.float32
        torch.testing.assert_close(mixed[name], value, rtol=1e-5, atol=1e-7, msg=f"{method}: {name}")
    halved = [Outputs(o.logits, {k: v.bfloat16() for k, v in o.features.items()}) for o in (student, teacher)]
    upcast = [o.float() for o in halved]
    for name, value in terms(*upcast, autocast=False).items():
        torch.testing.assert_close(terms(*halved, autocast=True)[name], value, rtol=1e-5, atol=1e-7)


def copy_module(module):
    trainer, module._trainer = module._trainer, None
    try:
        return copy.deepcopy(module)
    finally:
        module._trainer = trainer


@pytest.mark.parametrize("pair", PAIRS)
def test_ft_recipes_train_the_paraphraser_at_repdistillers_learning_rate(pair):
    (spec,) = recipe(pair, "ft")["model"]["init_args"]["distillers"]
    student = pair.split("-")[1]
    expected = 0.01 if student.startswith(("resnet", "wrn")) else None  # helper/pretrain.py
    assert spec["init_args"].get("init_lr") == expected
    assert spec["init_args"]["init_epochs"] == 30


class RecordingOFD(OFD):
    """OFD that keeps the teacher features and inputs of the batches it saw."""

    def forward(self, student, teacher, batch):
        self.__dict__.setdefault("seen", []).append((batch.inputs, dict(teacher.features)))
        return super().forward(student, teacher, batch)


@pytest.mark.parametrize("batch_statistics", [False, True])
def test_ofd_can_distil_from_the_teacher_on_batch_statistics_as_the_reference(
    batch_statistics, trainer_kwargs
):
    torch.manual_seed(0)
    teacher = ConvNet(width=8)
    with torch.no_grad():  # running statistics unlike any batch's, so that the two modes differ
        for module in teacher.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-1, 1)
                module.running_var.uniform_(0.5, 2)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    ofd = RecordingOFD(teacher_batch_statistics=batch_statistics)
    module = DistillationModule(ConvNet(width=4), teacher, distillers=[ofd])
    options = {"max_steps": 2, "limit_val_batches": 1, "num_sanity_val_steps": 0}
    Trainer(**(trainer_kwargs | options)).fit(module, DigitsDataModule(batch_size=32))
    reference = copy.deepcopy(teacher).train(batch_statistics)  # the authors' code: train mode
    taps = {}
    handle = reference.layer3[2].register_forward_pre_hook(lambda m, args: taps.update(x=args[0].clone()))
    inputs, features = ofd.seen[-1]
    with torch.no_grad():
        reference(inputs)
    handle.remove()
    torch.testing.assert_close(features["stage3_preact"], taps["x"])
    after = teacher.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items()), (
        "the teacher's running statistics changed"
    )


@pytest.mark.parametrize("pair", PAIRS)
def test_ofd_recipes_distil_from_the_teachers_batch_statistics(pair):
    (spec,) = recipe(pair, "ofd")["model"]["init_args"]["distillers"]
    assert OFD(**spec["init_args"]).teacher_batch_statistics


# ------------------------------------------------------------ KD-SVD and non-finite gradients
def _svd_pairs_loss(values, vectors, weights):
    return (values * weights[0]).sum() + (vectors[..., :3] * weights[1][..., :3]).sum()


@pytest.mark.parametrize("shape", [(16, 8), (6, 10), (9, 9)], ids=["tall", "wide", "square"])
def test_kdsvd_singular_gradient_equals_autograd_where_values_are_distinct(shape):
    torch.manual_seed(0)
    matrix = torch.randn(3, *shape, dtype=torch.float64, requires_grad=True)
    k = min(shape)
    weights = (torch.randn(3, k, dtype=torch.float64), torch.randn(3, shape[1], k, dtype=torch.float64))
    _, values, vectors_h = torch.linalg.svd(matrix, full_matrices=False)
    (expected,) = torch.autograd.grad(_svd_pairs_loss(values, vectors_h.transpose(-2, -1), weights), matrix)
    (got,) = torch.autograd.grad(_svd_pairs_loss(*_SingularPairs.apply(matrix), weights), matrix)
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("dead", ["a dead sample", "dead channels", "dead positions"])
def test_kdsvd_gradients_are_finite_where_singular_values_repeat(dead):
    torch.manual_seed(0)
    student = [torch.randn(4, 16, 8, 8), torch.randn(4, 32, 4, 4)]
    teacher = [torch.randn(4, 16, 8, 8), torch.randn(4, 32, 4, 4)]
    if dead == "a dead sample":
        student[0][1], student[1][1] = 0, 0
    elif dead == "dead channels":
        student[0][:, 2:], student[1][:, 3:] = 0, 0
    else:
        student[1][:, :, :2] = 0
    student = [s.requires_grad_(True) for s in student]
    loss = kdsvd_loss(student, teacher)
    loss.backward()
    assert loss.isfinite() and all(bool(s.grad.isfinite().all()) for s in student)


class NaNGradient(KD):
    """A term whose value is finite (0) but whose gradient is NaN: d/dx sqrt(x²) at 0."""

    def forward(self, student, teacher, batch):
        shift = student.logits - student.logits.detach()
        return torch.sqrt(shift.pow(2).sum())


def test_a_non_finite_gradient_stops_training_and_names_its_term(trainer_kwargs):
    torch.manual_seed(0)
    module = DistillationModule(ConvNet(width=4), ConvNet(width=4), distillers=[KD(), NaNGradient()])
    options = {"max_steps": 3, "limit_val_batches": 0, "num_sanity_val_steps": 0}
    with pytest.raises(NonFiniteLossError) as raised:
        Trainer(**(trainer_kwargs | options)).fit(module, DigitsDataModule(batch_size=32))
    message = str(raised.value)
    assert "non-finite gradient of loss term(s) nangradient at epoch 0, batch 0" in message
    assert "kd=" in message and "nangradient=0" in message  # the values, all finite


# ----------------------------------------------------------------------------- MLKD
def _authors_mlkd(student_weak, student_strong, teacher_weak, teacher_strong, targets):
    """The total loss of the authors' KD_ours written from its formula (CE 0.1 on both views, KD weight
    0.9, T in 4, 3, 5, 2, 6), with kdlab's reading of the strong view: all five temperatures on it."""
    import numpy as np
    import torch.nn.functional as F

    def kd(s, t, temperature):
        p_t = F.softmax(t / temperature, 1)
        return (p_t * (p_t.log() - F.log_softmax(s / temperature, 1))).sum(1).mean() * temperature**2

    def gram_gap(s, t, temperature, dim):
        p_s, p_t = F.softmax(s / temperature, 1), F.softmax(t / temperature, 1)
        if dim == 0:  # classes
            return ((p_t.T @ p_t - p_s.T @ p_s) ** 2).sum() / s.shape[1]
        return ((p_t @ p_t.T - p_s @ p_s.T) ** 2).sum() / s.shape[0]

    confidence = F.softmax(teacher_weak, 1).max(1).values
    mask = confidence <= float(np.percentile(confidence.numpy(), 50))
    class_confidence = F.softmax(teacher_weak, 1).sum(0)
    class_mask = class_confidence <= float(np.percentile(class_confidence.numpy(), 50))
    total = 0.1 * (F.cross_entropy(student_weak, targets) + F.cross_entropy(student_strong, targets))
    for temperature in (4.0, 3.0, 5.0, 2.0, 6.0):
        total = total + 0.9 * (kd(student_weak, teacher_weak, temperature) * mask).mean()
        total = total + 0.9 * kd(student_strong, teacher_strong, temperature)
        total = total + 0.9 * (gram_gap(student_weak, teacher_weak, temperature, 0) * class_mask).mean()
        total = total + 0.9 * (gram_gap(student_weak, teacher_weak, temperature, 1) * mask).mean()
    return total


def test_mlkd_on_two_views_equals_the_authors_effective_loss():
    torch.manual_seed(0)
    logits = [torch.randn(64, 100) * 3 for _ in range(4)]
    targets = torch.randint(0, 100, (64,))
    module = DistillationModule(
        MLP(num_classes=100), MLP(num_classes=100), distillers=[MLKD()], ce_weight=0.1
    )
    student, teacher = (
        Outputs(logits[0], strong_logits=logits[1]),
        Outputs(logits[2], strong_logits=logits[3]),
    )
    batch = Batch(torch.zeros(64, 1), targets, torch.arange(64))
    total = sum(module.loss_terms(student, teacher, batch).values())
    torch.testing.assert_close(total, _authors_mlkd(logits[0], logits[1], logits[2], logits[3], targets))


def test_cifar_strong_view_is_a_reproducible_randaugmented_second_view(tmp_path):
    write_cifar10(tmp_path, per_batch=40, test=10)
    data = CIFARDataModule("cifar10", str(tmp_path), batch_size=32, strong_view=True)
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    weak, *_, strong = data.augment_batch(batch, epoch=3)
    assert strong.shape == weak.shape and strong.dtype == torch.float32
    assert not torch.allclose(strong, weak)
    assert torch.equal(strong, data.augment_batch(batch, epoch=3)[4])  # drawn by hash, not by a generator
    assert not torch.equal(strong, data.augment_batch(batch, epoch=4)[4])
    assert len(CIFARDataModule("cifar10", str(tmp_path), batch_size=32).augment_batch(batch, 3)) == 4
    with pytest.raises(ValueError, match="strong_view needs augment=True"):
        CIFARDataModule("cifar10", str(tmp_path), strong_view=True, augment=False)


def test_each_randaugment_operation_changes_images_like_torchvision():
    from torchvision.transforms.v2 import functional as TF

    from kdlab.data.randaugment import OPERATIONS, _apply, _strength

    images = torch.randint(40, 200, (4, 3, 32, 32), dtype=torch.uint8)  # room for autocontrast
    for operation in OPERATIONS[1:]:
        changed = _apply(images, operation, _strength(operation, magnitude=10, width=32))
        assert not torch.equal(changed, images), operation
    torch.testing.assert_close(_apply(images, "rotate", 10.0), TF.rotate(images, 10.0))
    torch.testing.assert_close(_apply(images, "brightness", -0.3), TF.adjust_brightness(images, 0.7))


def test_mlkd_fit_feeds_the_strong_view_to_student_teacher_and_cross_entropy(tmp_path, trainer_kwargs):
    write_cifar10(tmp_path, per_batch=40, test=10)

    class Recording(MLKD):
        def forward(self, student, teacher, batch):
            self.__dict__.setdefault("seen", []).append((student.strong_logits, teacher.strong_logits))
            return super().forward(student, teacher, batch)

    from kdlab.models.cifar import resnet8

    mlkd = Recording()
    module = DistillationModule(resnet8(num_classes=10), resnet8(num_classes=10), distillers=[mlkd])
    data = CIFARDataModule("cifar10", str(tmp_path), batch_size=32, strong_view=True)
    options = {"max_steps": 2, "limit_val_batches": 1, "num_sanity_val_steps": 0}
    Trainer(**(trainer_kwargs | options)).fit(module, data)
    assert len(mlkd.seen) == 2
    assert all(
        s is not None and s.requires_grad and t is not None and not t.requires_grad for s, t in mlkd.seen
    )


@pytest.mark.parametrize("pair", PAIRS)
def test_mlkd_recipes_follow_the_authors_configs(pair):
    config = recipe(pair, "mlkd")
    args = config["model"]["init_args"]
    (spec,) = args["distillers"]
    mlkd = MLKD(**spec["init_args"])
    assert config["data"]["init_args"]["strong_view"] and args["ce_weight"] == 0.1 and mlkd.weight == 0.9
    assert (mlkd.instance_weight, mlkd.batch_weight, mlkd.class_weight, mlkd.strong_weight) == (
        0.5,
        0.5,
        0.5,
        1.0,
    )
    mobile = pair.endswith(("mobilenetv2", "shufflev1", "shufflev2"))
    assert args["optimizer"]["init_args"]["lr"] == (0.01 if mobile else 0.025)
    assert config["trainer"].get("max_epochs", 240) == (480 if mobile else 240)


SOURCES = ("CRD", "authors'", "paper", "kdlab's choice", "RepDistiller", "mdistiller", "torchvision")
RECIPES = [
    p
    for folder in ("cifar10", "cifar100", "digits", "imagenet", "trainer", "method")
    for p in sorted((REPO / "experiments" / folder).rglob("*.yaml"))
    if not p.name.startswith("suite")
]


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.relative_to(REPO / "experiments").as_posix())
def test_every_recipe_says_where_its_numbers_come_from(path):
    header = "\n".join(line for line in path.read_text().splitlines() if line.startswith("#"))
    assert any(source in header for source in SOURCES), f"{path}: name the paper, script or kdlab's choice"
