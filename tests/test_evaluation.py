"""Validation: the teacher runs on the validation set once per run, metrics are whole-epoch values
logged once per epoch, and the kdlab command's default speed options."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from lightning.pytorch import Callback, Trainer, seed_everything
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import TensorDataset

from kdlab import DistillationModule
from kdlab.callbacks import FastPaths
from kdlab.cli import KDLabCLI
from kdlab.data import DigitsDataModule
from kdlab.eval_memo import EvalLogitsMemo
from kdlab.losses import KD
from kdlab.models import MLP, ConvNet
from kdlab.models.cifar import resnet8, shufflev2

from .kdlab_runs import QUIET, digits_args


class TeacherCalls(Callback):
    """Counts the teacher's forward passes on validation batches, per validation epoch."""

    def __init__(self) -> None:
        self.per_epoch: list[int] = []

    def on_validation_epoch_start(self, trainer, pl_module):
        self.per_epoch.append(0)
        self.handle = pl_module.teacher.register_forward_hook(self._count)

    def _count(self, module, inputs, output):
        self.per_epoch[-1] += 1

    def on_validation_epoch_end(self, trainer, pl_module):
        self.handle.remove()


def fit(tmp_path, callbacks=(), epochs: int = 3) -> DistillationModule:
    seed_everything(0, verbose=False)
    module = DistillationModule(MLP(hidden=[16]), ConvNet(width=4), distillers=[KD()], ce_weight=0.1)
    data = DigitsDataModule(batch_size=64)
    Trainer(
        max_epochs=epochs,
        limit_train_batches=3,
        callbacks=list(callbacks),
        logger=CSVLogger(tmp_path, name="logs"),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    ).fit(module, data)
    return module


def test_teacher_runs_on_validation_data_once_and_its_memo_equals_running_it(tmp_path):
    calls = TeacherCalls()
    module = fit(tmp_path, [calls])
    batches = len(module.trainer.val_dataloaders)
    # sanity check (2 batches), then the whole set in the first epoch, then nothing
    assert calls.per_epoch == [2, batches - 2, 0, 0]
    loader = module.trainer.val_dataloaders
    with torch.no_grad():
        for inputs, _, indices in loader:
            remembered = module.eval_memo.logits(
                0, loader.dataset, indices, lambda: pytest.fail("recomputed")
            )
            torch.testing.assert_close(remembered, module.teacher(inputs), rtol=0, atol=0)


def test_validation_metrics_are_whole_epoch_values_logged_once_per_epoch(tmp_path):
    module = fit(tmp_path)

    logged = pd.read_csv(tmp_path / "logs" / "version_0" / "metrics.csv")
    rows = logged.dropna(subset=["val/acc1"])
    assert list(rows["epoch"]) == [0, 1, 2]
    assert rows["val/teacher_acc1"].notna().tolist() == [True, False, False]  # the teacher does not change
    module.eval()
    correct = total = loss = 0.0
    with torch.no_grad():
        for inputs, targets, _ in module.trainer.val_dataloaders:
            logits = module.student(inputs)
            correct += float((logits.argmax(1) == targets).sum())
            loss += float(torch.nn.functional.cross_entropy(logits, targets, reduction="sum"))
            total += len(targets)
    last = rows.iloc[-1]
    assert last["val/acc1"] == pytest.approx(correct / total, abs=1e-6)  # this epoch's, not a running mean
    assert last["val/loss"] == pytest.approx(loss / total, rel=1e-5)


def test_memo_keeps_one_table_per_dataset_and_respects_its_size_limit():
    memo = EvalLogitsMemo()
    first, second = TensorDataset(torch.zeros(4)), TensorDataset(torch.zeros(4))
    indices = torch.tensor([1, 3])
    assert torch.equal(memo.logits(0, first, indices, lambda: torch.ones(2, 3)), torch.ones(2, 3))
    assert torch.equal(memo.logits(0, first, indices, lambda: torch.zeros(2, 3)), torch.ones(2, 3))
    partly = memo.logits(0, first, torch.tensor([0, 1]), lambda: torch.full((2, 3), 2.0))
    assert torch.equal(partly, torch.full((2, 3), 2.0))  # any missing row: computed (and kept)
    assert torch.equal(memo.logits(0, second, indices, lambda: torch.zeros(2, 3)), torch.zeros(2, 3))
    small = EvalLogitsMemo(max_bytes=16)
    for value in (1.0, 2.0):
        assert torch.equal(
            small.logits(0, first, indices, lambda v=value: torch.full((2, 3), v)), torch.full((2, 3), value)
        )


def test_kdlab_command_adds_fast_paths_unless_configured(tmp_path):
    args = [*digits_args(tmp_path), f"--trainer.default_root_dir={tmp_path / 'run'}", *QUIET]
    defaults = [c for c in KDLabCLI(args=args, run=False).trainer.callbacks if isinstance(c, FastPaths)]
    assert len(defaults) == 1 and defaults[0].channels_last is None and defaults[0].fold_batchnorm
    configured = KDLabCLI(
        args=[
            *args,
            "--trainer.callbacks+=kdlab.callbacks.FastPaths",
            "--trainer.callbacks.fold_batchnorm=false",
        ],
        run=False,
    )
    fast = [c for c in configured.trainer.callbacks if isinstance(c, FastPaths)]
    assert len(fast) == 1 and not fast[0].fold_batchnorm


@pytest.mark.parametrize(("network", "expected"), [(resnet8, True), (shufflev2, False), (MLP, False)])
def test_automatic_layout_is_channels_last_for_convolutional_networks_on_the_cpu(
    network, expected, trainer_kwargs
):
    module = DistillationModule(network(num_classes=10))
    trainer = Trainer(**trainer_kwargs)
    trainer.strategy.connect(module)
    FastPaths().setup(trainer, module, "fit")
    # 3x3 kernels over several channels: the layouts differ (1x1 and depthwise kernels are both)
    weights = [p for p in module.student.parameters() if p.ndim == 4 and p.shape[1] > 1 and p.shape[2] > 1]
    assert all(w.is_contiguous() != expected for w in weights)
    assert expected is False or weights
