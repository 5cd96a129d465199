"""Recipes and protocol that follow the papers' reference code (kdlab issue 14): one test per
deviation that an audit against the authors' code found, so that it cannot come back."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch import Callback, Trainer

from kdlab import DistillationModule
from kdlab.callbacks import LossWeightSchedule
from kdlab.cli import KDLabCLI
from kdlab.data import DigitsDataModule
from kdlab.errors import NonFiniteLossError
from kdlab.losses import KD, OFD
from kdlab.losses.kdsvd import _SingularPairs, kdsvd_loss
from kdlab.models import ConvNet
from kdlab.outputs import Batch, Outputs

from .kdlab_runs import QUIET

REPO = Path(__file__).resolve().parents[1]
CIFAR100 = REPO / "experiments" / "cifar100"


@pytest.fixture
def skip_weight_init(monkeypatch):
    for name in ("kaiming_uniform_", "kaiming_normal_", "normal_", "uniform_", "xavier_uniform_"):
        monkeypatch.setattr(torch.nn.init, name, lambda tensor, *args, **kwargs: tensor)


def build(configs: list[Path], tmp_path: Path) -> KDLabCLI:
    args = [f"--config={c}" for c in configs]
    args += ["--model.init_args.teacher_weights=null", f"--trainer.default_root_dir={tmp_path}", *QUIET]
    return KDLabCLI(args=args, run=False)


@pytest.mark.parametrize("pair", sorted(p.parent.name for p in CIFAR100.glob("*/reviewkd.yaml")))
def test_reviewkd_recipes_warm_the_weight_up_over_20_epochs(pair, tmp_path, skip_weight_init):
    cli = build([CIFAR100 / "base.yaml", CIFAR100 / pair / "reviewkd.yaml"], tmp_path)
    (schedule,) = [c for c in cli.trainer.callbacks if isinstance(c, LossWeightSchedule)]
    assert schedule.warmup_epochs == 20
    assert [round(schedule.factor(epoch), 6) for epoch in (0, 9, 19, 30)] == [0.05, 0.5, 1.0, 1.0]


FEATURE_METHODS = ["ab", "at", "cc", "crd", "fitnet", "fsp", "ft", "kdsvd", "nst", "ofd", "pkt", "reviewkd"]
FEATURE_METHODS += ["rkd", "sp", "vid"]


@pytest.mark.parametrize("method", FEATURE_METHODS)
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


@pytest.mark.parametrize("pair", sorted(p.parent.name for p in CIFAR100.glob("*/ft.yaml")))
def test_ft_recipes_train_the_paraphraser_at_repdistillers_learning_rate(pair):
    (spec,) = yaml.safe_load((CIFAR100 / pair / "ft.yaml").read_text())["model"]["init_args"]["distillers"]
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


@pytest.mark.parametrize("pair", sorted(p.parent.name for p in CIFAR100.glob("*/ofd.yaml")))
def test_ofd_recipes_distil_from_the_teachers_batch_statistics(pair):
    (spec,) = yaml.safe_load((CIFAR100 / pair / "ofd.yaml").read_text())["model"]["init_args"]["distillers"]
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
