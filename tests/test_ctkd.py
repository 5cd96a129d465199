"""CTKD: gradient reversal, the curriculum, optimisation of the learned temperature, and resume."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from lightning.pytorch import Callback, Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from sklearn.datasets import load_digits
from torch.optim import SGD
from torch.utils.data import DataLoader, TensorDataset

from kdlab import DistillationModule
from kdlab.callbacks import CTKD, LearnableTemperature, reverse_gradient
from kdlab.losses import KD, kd_loss
from kdlab.models import MLP, ConvNet

LR = 0.5


def loader() -> DataLoader:
    digits = load_digits()
    images = torch.tensor(digits.images[:96], dtype=torch.float32).unsqueeze(1) / 16.0
    return DataLoader(
        TensorDataset(images, torch.tensor(digits.target[:96]), torch.arange(96)), batch_size=32
    )


def sgd(params):
    return SGD(params, lr=LR)


def build(temperature: float = 4.0, seed: int = 0) -> DistillationModule:
    seed_everything(0, verbose=False)
    teacher = ConvNet(width=4)
    seed_everything(seed, verbose=False)
    return DistillationModule(
        MLP(hidden=[16]), teacher, distillers=[KD(0.9, temperature)], ce_weight=0.1, optimizer=sgd
    )


def fit(module, callbacks, trainer_kwargs, ckpt_path=None, **overrides):
    kwargs = trainer_kwargs | {"max_epochs": 3, "limit_val_batches": 0, "num_sanity_val_steps": 0} | overrides
    trainer = Trainer(callbacks=callbacks, **kwargs)
    trainer.fit(module, train_dataloaders=loader(), ckpt_path=ckpt_path)
    return trainer


# ----------------------------------------------------------------------------- pieces
def test_gradient_reversal_is_identity_forward_and_negated_backward():
    x = torch.tensor([1.0, -2.0], requires_grad=True)
    y = reverse_gradient(x, 0.3)
    assert torch.equal(y, x)
    (y * torch.tensor([2.0, 5.0])).sum().backward()
    torch.testing.assert_close(x.grad, torch.tensor([-0.6, -1.5]))


def test_learnable_temperature_range_and_initial_value():
    assert LearnableTemperature()(0.0).item() == pytest.approx(1 + 20 / (1 + math.exp(-1)))
    assert LearnableTemperature(2.0, 8.0, init_temperature=4.0)(0.0).item() == pytest.approx(4.0)
    with pytest.raises(ValueError, match=r"strictly between min_temperature=1\.0"):
        CTKD(init_temperature=25.0)


def test_curriculum_is_a_cosine_ramp_of_lambda():
    ctkd = CTKD(lambda_min=0.0, lambda_max=1.0, lambda_epochs=10)
    values = [ctkd.curriculum(e) for e in range(12)]
    assert values[0] == pytest.approx((1 - math.cos(math.pi / 10)) / 2)  # the authors' epoch 1
    assert values[4] == pytest.approx(0.5)
    assert values[9] == values[10] == values[11] == pytest.approx(1.0)
    assert all(a < b for a, b in itertools.pairwise(values[:10]))
    assert CTKD(lambda_max=0.7, lambda_epochs=0).curriculum(0) == 0.7


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_temperature": 0.0}, "must be > 0"),
        ({"lambda_min": 0.5, "lambda_max": 0.2}, "lambda_min <= lambda_max"),
        ({"lambda_epochs": -1}, "lambda_epochs must be an integer >= 0"),
        ({"distillers": "kd"}, "list of distiller names"),
    ],
)
def test_invalid_ctkd_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CTKD(**kwargs)


@pytest.mark.parametrize("lambda_", [0.25, 1.0])
def test_temperature_gradient_is_the_reversed_kd_gradient(lambda_):
    s, t = torch.randn(16, 10) * 3, torch.randn(16, 10) * 3
    module = LearnableTemperature()
    kd_loss(s, t, module(lambda_)).backward()
    theta = module.theta.detach().clone().requires_grad_(True)
    kd_loss(s, t, 1 + 20 * torch.sigmoid(theta)).backward()  # the same loss without reversal
    assert theta.grad.abs() > 1e-6
    torch.testing.assert_close(module.theta.grad, -lambda_ * theta.grad)


# ----------------------------------------------------------------------------- in training
def test_first_step_ascends_the_kd_loss_in_temperature_and_descends_it_in_the_student(trainer_kwargs):
    module = build()
    ctkd = CTKD()
    images, _, _ = next(iter(loader()))
    # The temperature's own gradient, without reversal, on the first batch.
    theta = torch.tensor(1.0, requires_grad=True)
    with torch.no_grad():
        teacher_logits = module.teacher(images)
    student_logits = module.student(images)
    (0.9 * kd_loss(student_logits, teacher_logits, 1 + 20 * torch.sigmoid(theta))).backward()
    learned_t0 = (1 + 20 * torch.sigmoid(torch.tensor(1.0))).item()
    # A plain KD run at the same (fixed) temperature gives the student's reference step.
    plain = build(temperature=learned_t0)
    fit(plain, [], trainer_kwargs, max_steps=1)

    trainer = fit(module, [ctkd], trainer_kwargs, max_steps=1)
    params = [p for group in trainer.optimizers[0].param_groups for p in group["params"]]
    assert any(p is module.ctkd.theta for p in params), "the temperature is optimised with the student"
    step = module.ctkd.theta.detach() - 1.0
    torch.testing.assert_close(step, LR * ctkd.curriculum(0) * theta.grad)  # gradient ascent, scaled by λ
    for name, value in module.student.state_dict().items():
        torch.testing.assert_close(value, plain.student.state_dict()[name], msg=name)
    assert module.distillers["kd"].temperature == 4.0, "teardown restores the configured temperature"


class Temperatures(Callback):
    def __init__(self) -> None:
        self.seen: list[float] = []

    def on_train_epoch_end(self, trainer, pl_module):
        self.seen.append(pl_module.ctkd(0.0).item())


def test_learned_temperature_changes_and_is_logged_and_checkpointed(trainer_kwargs, tmp_path):
    module, record = build(), Temperatures()
    kwargs = trainer_kwargs | {"enable_checkpointing": True}
    checkpoints = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    trainer = fit(module, [CTKD(lambda_epochs=2), record, checkpoints], kwargs)
    start = 1 + 20 / (1 + math.exp(-1))
    assert len(set(record.seen)) == 3 and abs(record.seen[-1] - start) > 1e-5
    logged = trainer.callback_metrics
    assert 1.0 < logged["ctkd/temperature"].item() < 21.0
    assert logged["ctkd/lambda"].item() == pytest.approx(1.0)
    saved = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert saved["state_dict"]["ctkd.theta"].item() == pytest.approx(module.ctkd.theta.item())
    assert saved["callbacks"]["CTKD{'distillers': None}"]["lambda"] == pytest.approx(1.0)


class StopAfter(Callback):
    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch + 1 >= self.epochs:
            trainer.should_stop = True


def test_resumed_run_learns_the_same_temperature(trainer_kwargs, tmp_path):
    whole = build()
    whole_record = Temperatures()
    fit(whole, [CTKD(lambda_epochs=3), whole_record], trainer_kwargs, max_epochs=4)

    kwargs = trainer_kwargs | {"enable_checkpointing": True}
    first_record = Temperatures()
    callbacks = [
        CTKD(lambda_epochs=3),
        first_record,
        StopAfter(2),
        ModelCheckpoint(dirpath=tmp_path, save_last=True),
    ]
    fit(build(), callbacks, kwargs, max_epochs=4)
    resumed, resumed_record = build(seed=1), Temperatures()
    fit(
        resumed, [CTKD(lambda_epochs=3), resumed_record], trainer_kwargs, tmp_path / "last.ckpt", max_epochs=4
    )

    assert first_record.seen + resumed_record.seen == pytest.approx(whole_record.seen, rel=1e-6)
    torch.testing.assert_close(resumed.ctkd.theta, whole.ctkd.theta)
    for name, value in resumed.student.state_dict().items():
        torch.testing.assert_close(value, whole.student.state_dict()[name], msg=name)


def test_ctkd_on_named_distillers_and_conflicts(trainer_kwargs):
    module = build()
    fit(module, [CTKD(distillers=["kd"])], trainer_kwargs, max_epochs=1)
    assert isinstance(module.ctkd_kd, LearnableTemperature)
    with pytest.raises(ValueError, match=r"unknown distiller name\(s\) \['dkd'\]"):
        fit(build(), [CTKD(distillers=["dkd"])], trainer_kwargs, max_epochs=1)


class SameOnAllRanks(Callback):
    """Checks, in every DDP worker, that the learned temperature moved and is the same on all ranks."""

    def on_train_end(self, trainer, pl_module):
        theta = pl_module.ctkd.theta.detach().reshape(1)
        gathered = pl_module.all_gather(theta)
        assert gathered.numel() == 2 and torch.equal(gathered[0], gathered[1]), gathered
        assert abs(theta.item() - 1.0) > 1e-7


@pytest.mark.slow  # two spawned processes: ~20-35 s on the shared cores; run with -m ddp
@pytest.mark.ddp
def test_learned_temperature_is_synchronised_across_ddp_ranks(trainer_kwargs):
    # Each rank sees a different shard (DistributedSampler); equal temperatures mean DDP
    # all-reduced their gradients, i.e. the module attached at setup is part of the DDP model.
    kwargs = trainer_kwargs | {"devices": 2, "strategy": "ddp_spawn", "max_epochs": 2}
    kwargs |= {"limit_val_batches": 0, "num_sanity_val_steps": 0}
    trainer = Trainer(callbacks=[CTKD(lambda_epochs=1), SameOnAllRanks()], **kwargs)
    trainer.fit(build(), train_dataloaders=loader())
