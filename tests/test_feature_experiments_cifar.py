"""The CIFAR-100 recipes of the feature methods (pair file + method file + the pair's own file where a
paper tuned one): published settings, and every recipe of the suite builds its pair and trains a step
on random 32×32 images; the combinations the suite leaves out fail with a shape error."""

from __future__ import annotations

import importlib
import inspect

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from kdlab import DistillationModule
from kdlab.losses import IncompatibleShapesError

from .recipes import FEATURE_METHODS, PAIRS, recipe, suite_combinations

# The CRD table's weights (RepDistiller's -b), and the other published hyper-parameters.
PUBLISHED = {
    "fitnet": {"weight": 100.0},
    "at": {"weight": 1000.0, "p": 2.0},
    "sp": {"weight": 3000.0},
    "cc": {"weight": 0.02, "embedding_dim": 128},
    "vid": {"weight": 1.0},
    "rkd": {"weight": 1.0, "distance_weight": 25.0, "angle_weight": 50.0},
    "pkt": {"weight": 30000.0},
    "nst": {"weight": 50.0},
    "crd": {
        "weight": 0.8,
        "num_negatives": 16384,
        "temperature": 0.07,
        "embedding_dim": 128,
        "momentum": 0.5,
    },
    "ft": {"weight": 200.0, "init_epochs": 30},
    "ab": {"init_epochs": 30},
    "fsp": {"init_epochs": 30},
    "ofd": {"weight": 1.0e-3},
    "kdsvd": {"weight": 1.0},
}
SUITE = suite_combinations()


def _files():
    """The (pair, feature method) runs of the CIFAR-100 suite: every recipe the CRD tables report."""
    return sorted((pair, method) for pair, method in SUITE if method in FEATURE_METHODS)


def _outside_the_suite():
    return [(p, m) for p in PAIRS for m in FEATURE_METHODS if (p, m) not in SUITE]


def _load(pair: str, method: str) -> dict:
    return recipe(pair, method)


def _class(path: str):
    module, name = path.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


def test_the_suite_runs_every_feature_method_on_every_pair_it_fits():
    assert {p for p, _ in _files()} == set(PAIRS)
    assert {m for _, m in _files()} == set(FEATURE_METHODS)
    # Left out: methods whose matrices need equal channel counts, on pairs that do not have them.
    assert {m for _, m in _outside_the_suite()} <= {"fsp", "kdsvd"}


@pytest.mark.parametrize(("pair", "method"), _files(), ids=lambda v: v)
def test_pair_recipe_has_the_published_settings(pair, method):
    config = _load(pair, method)
    init_args = config["model"]["init_args"]
    teacher, student = pair.split("-")
    assert init_args["student"]["class_path"] == f"kdlab.models.cifar.{student}"
    assert init_args["teacher"]["class_path"] == f"kdlab.models.cifar.{teacher}"
    assert init_args["teacher_weights"] == f"teachers/cifar100/{teacher}.safetensors"
    assert init_args["ce_weight"] == 1.0
    (distiller,) = init_args["distillers"]  # no KD term next to the feature method (CRD table)
    arguments = distiller["init_args"]
    inspect.signature(_class(distiller["class_path"])).bind(**arguments)  # every key is a real argument
    assert PUBLISHED.get(method, {}).items() <= arguments.items()
    lr = init_args["optimizer"]["init_args"]["lr"]
    assert lr == (0.01 if student in ("mobilenetv2", "shufflev1", "shufflev2") else 0.05)
    assert config["trainer"]["default_root_dir"] == f"runs/cifar100/{pair}/{method}"
    init_epochs = arguments.get("init_epochs") or 0
    milestones = init_args["lr_scheduler"]["init_args"]["milestones"]
    assert config["trainer"]["max_epochs"] == 240 + init_epochs
    assert milestones == [150 + init_epochs, 180 + init_epochs, 210 + init_epochs]


def _zoo():
    try:
        return importlib.import_module("kdlab.models.cifar")
    except ImportError:
        return None


needs_zoo = pytest.mark.skipif(_zoo() is None, reason="the CIFAR zoo (kdlab.models.cifar) is not installed")


class RandomCIFAR(L.LightningDataModule):
    """Eight random 32×32 images of 100 classes, with sample indices."""

    num_classes = 100
    input_shape = (3, 32, 32)

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(0)
        images = torch.randn(8, 3, 32, 32, generator=generator)
        return DataLoader(
            TensorDataset(images, torch.randint(0, 100, (8,), generator=generator), torch.arange(8)), 4
        )


def _calibrated(teacher: torch.nn.Module) -> torch.nn.Module:
    """An untrained teacher with BatchNorm statistics of the random images, so that deep residual
    stacks (resnet110) do not blow their features up to inf."""
    for bn in teacher.modules():
        if isinstance(bn, torch.nn.BatchNorm2d):
            bn.momentum = None  # a plain average over the calibration batch
    with torch.no_grad():
        teacher.train()(RandomCIFAR().train_dataloader().dataset.tensors[0])
    return teacher.eval()


def _fit_pair(pair: str, distillers: list, trainer_kwargs) -> L.Trainer:
    teacher, student = pair.split("-")
    torch.manual_seed(0)
    zoo = _zoo()
    module = DistillationModule(
        getattr(zoo, student)(), _calibrated(getattr(zoo, teacher)()), distillers=distillers
    )
    trainer = L.Trainer(
        **(trainer_kwargs | {"max_epochs": 2, "limit_train_batches": 1, "limit_val_batches": 0})
    )
    trainer.fit(module, RandomCIFAR())
    return trainer


def _distiller(pair: str, method: str):
    spec = _load(pair, method)["model"]["init_args"]["distillers"][0]
    arguments = dict(spec["init_args"])
    if arguments.get("init_epochs"):
        arguments["init_epochs"] = 1  # both phases within the two short epochs
    return _class(spec["class_path"])(**arguments)


@needs_zoo
@pytest.mark.parametrize("pair", ["wrn_40_2-shufflev1"])
def test_cross_architecture_zoo_pair_runs_every_method_from_its_config(pair, trainer_kwargs):
    distillers = [_distiller(pair, method) for p, method in _files() if p == pair]
    trainer = _fit_pair(pair, distillers, trainer_kwargs)
    logged = {k for k in trainer.callback_metrics if k.startswith("train/")}
    assert {f"train/{d.name}" for d in distillers} <= logged
    assert all(torch.isfinite(trainer.callback_metrics[k]) for k in logged)


@needs_zoo
@pytest.mark.slow
@pytest.mark.parametrize(("pair", "method"), list(_files()), ids=lambda v: v)
def test_pair_config_builds_and_trains_a_step(pair, method, trainer_kwargs):
    trainer = _fit_pair(pair, [_distiller(pair, method)], trainer_kwargs)
    logged = {k: v for k, v in trainer.callback_metrics.items() if k.startswith("train/")}
    assert logged and all(torch.isfinite(v) for v in logged.values())


@needs_zoo
@pytest.mark.slow
@pytest.mark.parametrize(("pair", "method"), _outside_the_suite(), ids=lambda v: v)
def test_recipes_left_out_of_the_suite_fail_with_a_shape_error(pair, method, trainer_kwargs):
    with pytest.raises(IncompatibleShapesError, match=r"channel|shape"):
        _fit_pair(pair, [_distiller(pair, method)], trainer_kwargs)
