"""Every feature method runs a short fit from its digits YAML through the kdlab CLI, with the digits
ConvNet pair, the CIFAR zoo pair (when the zoo is installed) and a cross-architecture pair."""

from __future__ import annotations

import copy
import importlib
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint

from kdlab import DistillationModule
from kdlab.cli import main
from kdlab.data import DigitsDataModule
from kdlab.losses import IncompatibleShapesError
from kdlab.models import ConvNet
from kdlab.models.small import StridedConvNet

from .recipes import DIGITS, is_feature_method


def _is_feature_config(path: Path) -> bool:
    return path.stem != "suite" and is_feature_method(yaml.safe_load(path.read_text()))


def _init_epochs(method: str) -> int:
    (spec,) = yaml.safe_load((DIGITS / f"{method}.yaml").read_text())["model"]["init_args"]["distillers"]
    return spec.get("init_args", {}).get("init_epochs", 0)


# Every digits file of a feature method (a method without one is not run on the digits).
METHODS = sorted(p.stem for p in DIGITS.glob("*.yaml") if _is_feature_config(p))
MULTISTAGE = {m for m in METHODS if _init_epochs(m)}
QUICK = [
    "--data.init_args.batch_size=16",
    "--trainer.limit_train_batches=2",
    "--trainer.limit_val_batches=1",
    "--trainer.num_sanity_val_steps=0",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
]


def _config(method: str) -> dict:
    return yaml.safe_load((DIGITS / f"{method}.yaml").read_text())


def _distiller(method: str, **changes):
    """The distiller of a method's digits config, built in Python (init phases shortened to one epoch)."""
    spec = _config(method)["model"]["init_args"]["distillers"][0]
    module_name, class_name = spec["class_path"].rsplit(".", 1)
    init_args = dict(spec.get("init_args", {}))
    if "init_epochs" in init_args:
        init_args["init_epochs"] = 1
    return getattr(importlib.import_module(module_name), class_name)(**(init_args | changes))


def _run(config: dict, root: Path, epochs: int) -> pd.DataFrame:
    """Fit ``config`` through the CLI for a few short epochs (init phases shortened to one)."""
    config = copy.deepcopy(config)
    for distiller in config["model"]["init_args"]["distillers"]:
        if "init_epochs" in distiller.get("init_args", {}):
            distiller["init_args"]["init_epochs"] = 1
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    arguments = [f"--config={path}", f"--trainer.default_root_dir={root}", f"--trainer.max_epochs={epochs}"]
    assert main(["fit", *arguments, *QUICK]) == 0
    return pd.read_csv(root / "logs" / "version_0" / "metrics.csv")


@pytest.fixture(scope="module")
def teacher_checkpoint(tmp_path_factory) -> Path:
    """A briefly trained digits ConvNet teacher, saved as a Lightning checkpoint like teacher.yaml's run."""
    root = tmp_path_factory.mktemp("teacher")
    torch.manual_seed(0)
    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[ModelCheckpoint(dirpath=root, filename="best")],
    )
    trainer.fit(DistillationModule(ConvNet()), DigitsDataModule())
    return root / "best.ckpt"


def test_every_feature_method_has_a_digits_config_that_names_the_teacher_run():
    assert {p.stem for p in DIGITS.glob("*.yaml")} >= {*METHODS, "teacher"}
    teacher = _config("teacher")
    assert teacher["trainer"]["default_root_dir"] == "runs/digits/teacher"
    assert "teacher" not in teacher["model"]["init_args"]
    for method in METHODS:
        text = (DIGITS / f"{method}.yaml").read_text()
        assert text.startswith(f"# kdlab fit --config experiments/digits/{method}.yaml\n")
        init_args = _config(method)["model"]["init_args"]
        assert init_args["teacher_weights"] == "runs/digits/teacher/checkpoints/best.ckpt"
        assert init_args["ce_weight"] == 1.0 and len(init_args["distillers"]) == 1


# One of each kind runs by default (a regressor, memory banks, an init phase, fused levels, BN margins);
# the CLI's parsing dominates their cost, so the other ten are slow tests.
DEFAULT_CLI_RUNS = {"fitnet", "crd", "ft", "reviewkd", "ofd"}


@pytest.mark.parametrize(
    "method", [m if m in DEFAULT_CLI_RUNS else pytest.param(m, marks=pytest.mark.slow) for m in METHODS]
)
def test_digits_config_fits(method, teacher_checkpoint, tmp_path):
    config = _config(method)
    config["model"]["init_args"]["teacher_weights"] = str(teacher_checkpoint)
    metrics = _run(config, tmp_path, epochs=2 if method in MULTISTAGE else 1)
    trained = metrics.filter(like="train/").dropna(how="all")
    name = config["model"]["init_args"]["distillers"][0]["class_path"].rsplit(".", 1)[1].lower()
    expected = {"train/ce", f"train/{name}"} | ({f"train/{name}_init"} if method in MULTISTAGE else set())
    assert expected <= set(trained.columns)
    assert bool(trained.notna().any().all()) and np.isfinite(trained.fillna(0).to_numpy()).all()
    assert metrics["val/acc1"].notna().sum() == (2 if method in MULTISTAGE else 1)


def test_every_method_runs_from_its_digits_config_on_the_digits_pair(teacher_checkpoint, trainer_kwargs):
    """All fifteen digits configs' distillers at once on their ConvNet pair (the CLI runs are above)."""
    distillers = [_distiller(m, **({"num_negatives": 64} if m == "crd" else {})) for m in METHODS]
    # KD-SVD and FSP need the teacher's channels: a full-width student, as in their configs.
    module = DistillationModule(ConvNet(), ConvNet(), str(teacher_checkpoint), distillers=distillers)
    trainer = L.Trainer(
        **(trainer_kwargs | {"max_epochs": 2, "limit_train_batches": 1, "limit_val_batches": 0})
    )
    trainer.fit(module, DigitsDataModule(batch_size=16))
    logged = {k for k in trainer.callback_metrics if k.startswith("train/")}
    assert {f"train/{d.name}" for d in distillers} | {
        "train/ab_init",
        "train/ft_init",
        "train/fsp_init",
    } <= logged
    assert all(torch.isfinite(trainer.callback_metrics[k]) for k in logged)


def _zoo():
    try:
        return importlib.import_module("kdlab.models.cifar")
    except ImportError:
        return None


needs_zoo = pytest.mark.skipif(_zoo() is None, reason="the CIFAR zoo (kdlab.models.cifar) is not installed")
ZOO_PAIR = {
    "student": {"class_path": "kdlab.models.cifar.resnet8", "init_args": {"in_channels": 1}},
    "teacher": {"class_path": "kdlab.models.cifar.resnet20", "init_args": {"in_channels": 1}},
    "teacher_weights": None,  # an untrained teacher: this checks the wiring, not the accuracy
}


@needs_zoo
def test_every_method_runs_on_the_cifar_zoo_pair(trainer_kwargs):
    """All fifteen digits configs' distillers at once, resnet20 → resnet8 on the digits."""
    zoo = _zoo()
    distillers = [_distiller(m, **({"num_negatives": 64} if m == "crd" else {})) for m in METHODS]
    torch.manual_seed(0)
    module = DistillationModule(
        zoo.resnet8(10, in_channels=1), zoo.resnet20(10, in_channels=1), distillers=distillers
    )
    trainer = L.Trainer(
        **(trainer_kwargs | {"max_epochs": 2, "limit_train_batches": 1, "limit_val_batches": 0})
    )
    trainer.fit(module, DigitsDataModule(batch_size=16))
    logged = {k for k in trainer.callback_metrics if k.startswith("train/")}
    assert {f"train/{d.name}" for d in distillers} <= logged
    assert all(torch.isfinite(trainer.callback_metrics[k]) for k in logged)


@needs_zoo
@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_digits_config_fits_the_cifar_zoo_pair_by_changing_class_paths(method, tmp_path):
    config = _config(method)
    config["model"]["init_args"] |= ZOO_PAIR
    metrics = _run(config, tmp_path, epochs=2)
    assert metrics["val/acc1"].notna().sum() == 2


def test_cross_architecture_pair_runs_every_method_that_supports_it(trainer_kwargs):
    """StridedConvNet (4×4, 4×4, 2×2 stages; 12/24/48 channels) learns from ConvNet (8×8, 4×4, 4×4;
    16/32/64 channels): every stage differs in channels, two in size. All supporting methods at once."""
    supported = [m for m in METHODS if m not in CROSS_UNSUPPORTED]
    distillers = [_distiller(m, **({"num_negatives": 64} if m == "crd" else {})) for m in supported]
    torch.manual_seed(0)
    module = DistillationModule(StridedConvNet(), ConvNet(width=16), distillers=distillers)
    trainer = L.Trainer(
        **(trainer_kwargs | {"max_epochs": 2, "limit_train_batches": 1, "limit_val_batches": 0})
    )
    trainer.fit(module, DigitsDataModule(batch_size=16))
    logged = {k for k in trainer.callback_metrics if k.startswith("train/")}
    assert {f"train/{d.name}" for d in distillers} | {"train/ab_init", "train/ft_init"} <= logged
    assert all(torch.isfinite(trainer.callback_metrics[k]) for k in logged)


CROSS_UNSUPPORTED = {"kdsvd": "channels must be equal", "fsp": "channels must be equal"}


@pytest.mark.parametrize("method", sorted(CROSS_UNSUPPORTED))
def test_cross_architecture_pair_fails_at_setup_for_methods_needing_equal_shapes(method, trainer_kwargs):
    module = DistillationModule(StridedConvNet(), ConvNet(width=16), distillers=[_distiller(method)])
    trainer = L.Trainer(**(trainer_kwargs | {"max_epochs": 1, "limit_train_batches": 1}))
    with pytest.raises(IncompatibleShapesError, match=CROSS_UNSUPPORTED[method]) as error:
        trainer.fit(module, DigitsDataModule(batch_size=16))
    assert "student 'stage1' (2, 12, 4, 4) vs teacher 'stage1' (2, 16, 8, 8)" in str(error.value)
