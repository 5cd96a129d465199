"""Loss terms are summed on the device each step and logged once per epoch, as sample-weighted means."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch import Trainer, seed_everything

from kdlab import DistillationModule
from kdlab.data import CIFARDataModule
from kdlab.epoch_means import EpochMeans
from kdlab.models.cifar import resnet8

from .kd_helpers import RecordingKD, tiny_cifar


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return tiny_cifar(tmp_path_factory.mktemp("cifar"))


def test_means_are_weighted_by_samples_merge_groups_and_reset():
    means = EpochMeans()
    means.update(["ce", "kd"], torch.tensor([1.0, 2.0]), 3)
    means.update(["ce", "kd"], torch.tensor([3.0, 4.0]), 1)
    means.update(["ce"], torch.tensor([5.0]), 4)  # a step without the kd term
    reduced = []
    result = means.compute(lambda t: reduced.append(t) or t * 2)  # as if a second process agreed
    assert len(reduced) == 2
    torch.testing.assert_close(result["ce"], torch.tensor((3 * 1 + 3 + 4 * 5) / 8))
    torch.testing.assert_close(result["kd"], torch.tensor((3 * 2 + 4) / 4))
    assert means.compute() == {}


def test_logged_training_terms_are_the_epoch_means_of_the_steps(data_root, trainer_kwargs):
    seed_everything(0)
    module = DistillationModule(
        resnet8(num_classes=10), teacher=resnet8(num_classes=10), distillers=[RecordingKD()], ce_weight=0.1
    )
    trainer = Trainer(max_epochs=1, limit_val_batches=0, **trainer_kwargs)
    trainer.fit(module, CIFARDataModule("cifar10", root=str(data_root), batch_size=32))
    seen = module.distillers["recordingkd"].seen
    sizes = torch.tensor([float(len(indices)) for indices, *_ in seen])
    assert sizes.tolist() == [32, 32, 32, 4]  # unequal batches: the weights matter
    kd = torch.stack([0.9 * loss for *_, loss in seen])
    expected = (kd * sizes).sum() / sizes.sum()
    torch.testing.assert_close(trainer.logged_metrics["train/recordingkd"], expected)
    total = trainer.logged_metrics["train/ce"] + trainer.logged_metrics["train/recordingkd"]
    torch.testing.assert_close(trainer.logged_metrics["train/loss"], total)
