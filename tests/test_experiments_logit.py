"""The logit-distillation experiment files: digits ones run end to end, CIFAR-100 recipes (pair file +
method file + the pair's own file where a paper tuned one) follow the papers and parse."""

from __future__ import annotations

import contextlib
import csv
import importlib
import io
from pathlib import Path

import pytest
import torch
import yaml

from kdlab.cli import main

from .recipes import LOGIT_METHODS, PAIRS, recipe, recipe_files, suite_combinations

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "experiments" / "digits"
FACTORIES = {
    *(f"resnet{d}" for d in (8, 14, 20, 32, 44, 56, 110)),
    *("resnet8x4", "resnet32x4", "wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2"),
    *(f"vgg{d}" for d in (8, 11, 13, 16, 19)),
    *("mobilenetv2", "shufflev1", "shufflev2", "resnet50"),
}
DKD_BETA = {"resnet56-resnet20": 2.0, "resnet110-resnet32": 2.0, "vgg13-vgg8": 6.0, "vgg13-mobilenetv2": 6.0}
DKD_BETA |= {"wrn_40_2-wrn_16_2": 6.0, "wrn_40_2-wrn_40_1": 6.0}
# Logit standardization: (base temperature, KD weight) from the authors' per-pair logs; (2, 9) elsewhere
LS = {"vgg13-vgg8": (3.0, 9.0), "vgg13-mobilenetv2": (3.0, 9.0), "resnet110-resnet20": (4.0, 12.0)}
LS |= {"resnet50-mobilenetv2": (3.0, 1.0)}
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def short_run(config: Path, root: Path, *extra: str) -> None:
    limits = ["--trainer.max_epochs=2", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1"]
    main(["fit", "-c", str(config), f"--trainer.default_root_dir={root}", *limits, *QUIET, *extra])


# ----------------------------------------------------------------------------- digits
@pytest.fixture(scope="module")
def digits_teacher(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("teacher")
    short_run(DIGITS / "teacher.yaml", root)
    return root / "checkpoints" / "best.ckpt"


@pytest.mark.parametrize("method", ["vanilla", "kd", "dkd", "dist", "mlkd", "ctkd"])
def test_digits_experiment_runs(method, digits_teacher, tmp_path):
    config = yaml.safe_load((DIGITS / f"{method}.yaml").read_text())
    init_args = config["model"]["init_args"]
    extra = []
    if method != "vanilla":
        assert init_args["teacher_weights"] == "runs/digits/teacher/checkpoints/best.ckpt"
        extra = [f"--model.init_args.teacher_weights={digits_teacher}"]
    assert init_args["student"] == {"class_path": "kdlab.models.MLP", "init_args": {"hidden": [32]}}
    assert config["trainer"]["default_root_dir"] == f"runs/digits/{method}"
    short_run(DIGITS / f"{method}.yaml", tmp_path, *extra)
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert ("ctkd.theta" in checkpoint["state_dict"]) == (method == "ctkd")
    with open(tmp_path / "logs" / "version_0" / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert {row["epoch"] for row in rows if row["epoch"]} == {"0", "1"}  # the rest: compression report
    assert any(row["val/acc1"] for row in rows) and any(row.get("compression/student/params") for row in rows)
    assert method == "vanilla" or f"train/{method.replace('ctkd', 'kd')}" in rows[0]


def test_digits_teacher_config():
    config = yaml.safe_load((DIGITS / "teacher.yaml").read_text())
    assert config["model"]["init_args"]["student"]["class_path"] == "kdlab.models.ConvNet"
    assert "teacher" not in config["model"]["init_args"]
    assert config["trainer"]["default_root_dir"] == "runs/digits/teacher"


# ----------------------------------------------------------------------------- CIFAR-100 pairs
def cifar_recipes() -> list:
    return [pytest.param(pair, method, id=f"{pair}/{method}") for pair in PAIRS for method in LOGIT_METHODS]


def test_every_logit_method_of_the_cifar100_suites_has_its_files():
    runs = suite_combinations("suite.yaml") | suite_combinations("suite_kd.yaml")
    assert {m for _, m in runs} >= {"kd", "dkd", "dist"} and {p for p, _ in runs} == set(PAIRS)
    for pair, method in runs:
        assert all(f.is_file() for f in recipe_files(pair, method))


def build(spec: dict):
    """Instantiate a ``{class_path, init_args}`` spec (the distillers and callbacks: cheap, and it
    checks their argument names and values)."""
    module_name, _, name = spec["class_path"].rpartition(".")
    return getattr(importlib.import_module(module_name), name)(**spec.get("init_args", {}))


@pytest.mark.parametrize(("pair", "method"), cifar_recipes())
def test_cifar_recipe_follows_the_papers(pair, method):
    config = recipe(pair, method)
    args = config["model"]["init_args"]
    teacher, student = pair.split("-", 1)
    assert {teacher, student} <= FACTORIES
    assert args["student"]["class_path"] == f"kdlab.models.cifar.{student}"
    assert args["teacher"]["class_path"] == f"kdlab.models.cifar.{teacher}"
    assert args["teacher_weights"] == f"teachers/cifar100/{teacher}.safetensors"
    assert args["lr_scheduler"]["init_args"]["milestones"] == [150, 180, 210]
    assert config["data"]["init_args"]["batch_size"] == 64
    mobile = student in ("mobilenetv2", "shufflev1", "shufflev2")
    (distiller,) = [build(spec) for spec in args["distillers"]]
    callbacks = [build(spec) for spec in config["trainer"].get("callbacks") or []]
    assert config["trainer"]["default_root_dir"] == f"runs/cifar100/{pair}/{method}"
    if method == "mlkd":  # the authors' configs: lr 0.025, or 0.01 and 480 epochs for mobile students
        assert args["optimizer"]["init_args"]["lr"] == (0.01 if mobile else 0.025)
        assert config["trainer"]["max_epochs"] == (480 if mobile else 240)
        assert (args["ce_weight"], distiller.weight) == (0.1, 0.9) and callbacks == []
        return
    assert args["optimizer"]["init_args"]["lr"] == (0.01 if mobile else 0.05)
    assert config["trainer"]["max_epochs"] == 240
    if method == "kd":
        assert (args["ce_weight"], distiller.weight, distiller.temperature) == (0.1, 0.9, 4.0)
        assert callbacks == []
    elif method == "dkd":
        beta = DKD_BETA.get(pair, 8.0)
        assert (args["ce_weight"], distiller.weight, distiller.alpha, distiller.beta) == (1.0, 1.0, 1.0, beta)
        assert distiller.temperature == 4.0
        assert [(type(c).__name__, c.warmup_epochs) for c in callbacks] == [("LossWeightSchedule", 20)]
    elif method == "dist":
        assert (args["ce_weight"], distiller.weight, distiller.beta, distiller.gamma) == (1.0, 2.0, 1.0, 1.0)
        assert distiller.temperature == 4.0 and callbacks == []
    elif method == "ctkd":  # the authors' script: KD weights, temperature in [1, 21], 10-epoch curriculum
        assert (args["ce_weight"], distiller.weight, distiller.temperature) == (0.1, 0.9, 4.0)
        (ctkd,) = callbacks
        assert (type(ctkd).__name__, ctkd.min_temperature, ctkd.temperature_range) == ("CTKD", 1.0, 20.0)
        assert (ctkd.lambda_max, ctkd.lambda_epochs) == (1.0, 10)
    elif method == "ls":
        assert args["ce_weight"] == 0.1 and distiller.standardize and callbacks == []
        assert (distiller.temperature, distiller.weight) == LS.get(pair, (2.0, 9.0))


def _cifar_stack_missing() -> str | None:
    try:
        importlib.import_module("kdlab.models.cifar")
        from kdlab.data import CIFARDataModule  # noqa: F401
    except ImportError as error:
        return f"the CIFAR model zoo or CIFARDataModule is not available yet ({error})"
    return None


@pytest.mark.skipif(_cifar_stack_missing() is not None, reason=str(_cifar_stack_missing()))
@pytest.mark.parametrize(
    ("pair", "method"),
    [p if p.values[1] == "kd" else pytest.param(*p.values, marks=pytest.mark.slow) for p in cifar_recipes()],
)
def test_cifar_recipe_parses_with_the_cli(pair, method):
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), pytest.raises(SystemExit) as exited:
        main(
            [
                "fit",
                *(f"--config={f}" for f in recipe_files(pair, method)),
                "--print_config",
            ]
        )
    assert exited.value.code in (0, None)
    printed = yaml.safe_load(printed.getvalue())
    expected = recipe(pair, method)
    assert printed["trainer"]["default_root_dir"] == f"runs/cifar100/{pair}/{method}"
    for key in ("distillers", "optimizer", "lr_scheduler", "ce_weight", "teacher_weights"):
        got, want = printed["model"]["init_args"][key], expected["model"]["init_args"][key]
        assert _set_values(got) == _set_values(want), key
    assert printed["trainer"]["max_epochs"] == expected["trainer"]["max_epochs"]


def _set_values(value):
    """``value`` without its None entries (printed and dumped configs differ in which they show)."""
    if isinstance(value, dict):
        return {k: _set_values(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_set_values(v) for v in value]
    return value
