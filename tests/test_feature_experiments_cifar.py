"""The CIFAR-100 pair configs of the feature methods: published settings, and (with the zoo installed)
every config builds its pair and trains a step on random 32×32 images."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from torch.utils.data import DataLoader, TensorDataset

from kdlab import DistillationModule

CIFAR = Path(__file__).parents[1] / "experiments" / "cifar100"
SAME = ["resnet56-resnet20", "resnet110-resnet20", "resnet110-resnet32", "resnet32x4-resnet8x4"]
SAME += ["wrn_40_2-wrn_16_2", "wrn_40_2-wrn_40_1", "vgg13-vgg8"]
CROSS = ["vgg13-mobilenetv2", "resnet50-mobilenetv2", "resnet50-vgg8", "resnet32x4-shufflev1"]
CROSS += ["resnet32x4-shufflev2", "wrn_40_2-shufflev1"]
EVERYWHERE = ["fitnet", "at", "sp", "cc", "vid", "rkd", "pkt", "nst", "crd", "ab", "ft", "ofd", "reviewkd"]
EQUAL_CHANNELS_ONLY = ["kdsvd", "fsp"]  # not for wrn_40_2-wrn_40_1 nor the cross-architecture pairs
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


def _files():
    for pair in SAME + CROSS:
        equal = pair in SAME and pair != "wrn_40_2-wrn_40_1"
        for method in EVERYWHERE + (EQUAL_CHANNELS_ONLY if equal else []):
            yield pair, method


def _load(pair: str, method: str) -> dict:
    return yaml.safe_load((CIFAR / pair / f"{method}.yaml").read_text())


def _class(path: str):
    module, name = path.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


def test_the_pair_directories_hold_exactly_the_expected_feature_configs():
    present = {(p.parent.name, p.stem) for p in CIFAR.glob("*/*.yaml")}
    feature_methods = set(EVERYWHERE + EQUAL_CHANNELS_ONLY)
    assert {f for f in present if f[1] in feature_methods} == set(_files())


@pytest.mark.parametrize(("pair", "method"), list(_files()), ids=lambda v: v)
def test_pair_config_has_the_published_settings(pair, method):
    text = (CIFAR / pair / f"{method}.yaml").read_text()
    command = f"# kdlab fit -c experiments/cifar100/base.yaml -c experiments/cifar100/{pair}/{method}.yaml\n"
    assert text.startswith(command)
    config = yaml.safe_load(text)
    init_args = config["model"]["init_args"]
    teacher, student = pair.split("-")
    assert init_args["student"] == {"class_path": f"kdlab.models.cifar.{student}"}
    assert init_args["teacher"] == {"class_path": f"kdlab.models.cifar.{teacher}"}
    assert init_args["teacher_weights"] == f"teachers/cifar100/{teacher}.safetensors"
    assert init_args["ce_weight"] == 1.0
    (distiller,) = init_args["distillers"]  # no KD term next to the feature method (CRD table)
    arguments = distiller["init_args"]
    inspect.signature(_class(distiller["class_path"])).bind(**arguments)  # every key is a real argument
    assert PUBLISHED.get(method, {}).items() <= arguments.items()
    lr = init_args.get("optimizer", {}).get("init_args", {}).get("lr")
    assert lr == (0.01 if student in ("mobilenetv2", "shufflev1", "shufflev2") else None)  # base.yaml: 0.05
    assert config["trainer"]["default_root_dir"] == f"runs/cifar100/{pair}/{method}"
    init_epochs = arguments.get("init_epochs", 0)
    if init_epochs:
        assert config["trainer"]["max_epochs"] == 240 + init_epochs
        milestones = init_args["lr_scheduler"]["init_args"]["milestones"]
        assert milestones == [150 + init_epochs, 180 + init_epochs, 210 + init_epochs]
    else:
        assert "max_epochs" not in config["trainer"] and "lr_scheduler" not in init_args


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
    if "init_epochs" in arguments:
        arguments["init_epochs"] = 1  # both phases within the two short epochs
    return _class(spec["class_path"])(**arguments)


@needs_zoo
@pytest.mark.parametrize("pair", ["wrn_40_2-shufflev1"])
def test_cross_architecture_zoo_pair_runs_every_method_from_its_config(pair, trainer_kwargs):
    distillers = [_distiller(pair, method) for method in EVERYWHERE]
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
