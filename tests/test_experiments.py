"""Every YAML under experiments/ runs as its header says: `kdlab fit` files parse and instantiate
(model, data and trainer built, no training), suite files plan, sweep files produce commands that
parse. Data-driven over the directory, so experiments added later are covered too."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from safetensors.torch import save_file

from kdlab.cli import KDLabCLI
from kdlab.errors import ConfigurationError
from kdlab.models import ConvNet
from kdlab.suite.plan import load_suite

from .datagen import write_image_tree
from .experiment_commands import REPO, config_files, header_command


def _case(path: Path):
    """The file as a test case; a pair's own recipes for methods (experiments/cifar100/<pair>/*.yaml,
    about 60 files) are `slow`: the pair and method files they compose with are in the default run."""
    parts = path.relative_to(REPO / "experiments").parts
    if len(parts) == 3 and parts[0] == "cifar100" and "-" in parts[1]:
        return pytest.param(path, marks=pytest.mark.slow)
    return path


EXPERIMENTS = [_case(path) for path in sorted((REPO / "experiments").rglob("*.yaml"))]


@pytest.fixture(autouse=True)
def skip_weight_init(monkeypatch):
    """Building is what is tested, not random initialisation (most of the time of big models)."""
    import torch

    names = (
        "kaiming_uniform_",
        "kaiming_normal_",
        "xavier_uniform_",
        "xavier_normal_",
        "normal_",
        "uniform_",
    )
    for name in (*names, "trunc_normal_", "orthogonal_"):
        monkeypatch.setattr(torch.nn.init, name, lambda tensor, *args, **kwargs: tensor)


@pytest.fixture(scope="module")
def imagenet_tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("imagenet")
    write_image_tree(root, ["n01440764", "n01443537"], per_class=1)
    return root


def instantiate(arguments: list[str], tmp_path: Path, imagenet: Path) -> KDLabCLI:
    """Build what `kdlab fit <arguments>` would build, with teacher weights left random, the run
    directory in tmp_path and, for ImageNet, a two-class stand-in tree (the data is not read)."""
    configs, others = config_files(arguments)
    missing = [str(c.relative_to(REPO)) for c in configs if not c.is_file()]
    if missing:
        pytest.skip(f"uses {', '.join(missing)}, not in this checkout (yet)")
    overrides = ["--model.init_args.teacher_weights=null", f"--trainer.default_root_dir={tmp_path / 'run'}"]
    if any("kdlab.data.ImageNetDataModule" in c.read_text() for c in configs):
        overrides.append(f"--data.init_args.root={imagenet}")
    args = [f"--config={c}" for c in configs] + [a for a in others if not a.startswith("--ckpt_path")]
    return KDLabCLI(args=args + overrides, run=False)


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.relative_to(REPO / "experiments").as_posix())
def test_experiment_builds_as_its_header_command_says(path, tmp_path, imagenet_tree, monkeypatch):
    command = header_command(path)
    assert command, f"{path}: the header comment must show the command that uses this file"
    if command[:2] == ["kdlab", "suite"]:
        monkeypatch.chdir(REPO)  # suite paths are relative to the current directory
        try:
            suite = load_suite(path)
        except ConfigurationError as error:
            if "no config file at" in str(error):
                pytest.skip(f"a run's config is not in this checkout (yet): {error}")
            raise
        assert suite.tasks
        return
    if command[:2] == ["wandb", "sweep"]:
        check_sweep(path, tmp_path, imagenet_tree)
        return
    monkeypatch.chdir(tmp_path)  # relative paths (data roots, save dirs) must not touch the repository
    cli = instantiate(command[2:], tmp_path, imagenet_tree)
    assert cli.model is not None and cli.datamodule is not None and cli.trainer is not None
    student_classes = getattr(cli.model.student, "num_classes", None)
    assert student_classes in (None, cli.datamodule.num_classes), "num_classes is linked from the data"


def check_sweep(path: Path, tmp_path: Path, imagenet: Path) -> None:
    """The sweep's command with ``${args}`` filled in (first value of each parameter) parses."""
    sweep = yaml.safe_load(path.read_text())
    assert {"method", "metric", "parameters", "command"} <= set(sweep)
    swept = {name: _first_value(spec) for name, spec in sweep["parameters"].items()}
    command = []
    for token in sweep["command"]:
        command += [f"--{k}={v}" for k, v in swept.items()] if token == "${args}" else [token]
    assert command[:2] == ["kdlab", "fit"], "a kdlab sweep trains with kdlab fit"
    cli = instantiate(command[2:], tmp_path, imagenet)
    resolved = yaml.safe_load(cli.parser.dump(cli.config, format="json"))
    for name, value in swept.items():
        node = resolved
        for part in name.split("."):
            if isinstance(node, list):  # `list.key` addresses the last item, as jsonargparse does
                node = node[int(part)] if part.isdigit() else node[-1][part]
            else:
                node = node[part]
        assert node == value, f"{name}: the sweep set {value}, the run got {node}"


def _first_value(spec: dict):
    if "values" in spec:
        return spec["values"][0]
    if "value" in spec:
        return spec["value"]
    return spec["min"]


def test_pieces_compose_whatever_their_order_and_lists_append(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pieces = [
        "data/digits.yaml",
        "trainer/digits.yaml",
        "student/mlp.yaml",
        "teacher/digits_convnet.yaml",
        "method/kd.yaml",
        "logger/dashboard.yaml",
    ]
    teacher = tmp_path / "teacher.safetensors"
    save_file(ConvNet().state_dict(), str(teacher))
    for order in (pieces, pieces[::-1]):
        args = [f"--config={REPO / 'experiments' / p}" for p in order]
        cli = KDLabCLI(args=[*args, f"--model.init_args.teacher_weights={teacher}"], run=False)
        model = cli.model
        assert type(model.student).__name__ == "MLP" and type(model.teacher).__name__ == "ConvNet"
        assert list(model.distillers) == ["kd"] and model.ce_weight == 0.1
        assert cli.trainer.max_epochs == 30
        callbacks = [type(c).__name__ for c in cli.trainer.callbacks]
        assert {"KDDashboard", "RunConfig"} <= set(callbacks)
    # A second method piece appends its distiller (distillers+:), a plain list would replace.
    stacked = tmp_path / "second_kd.yaml"
    stacked.write_text(
        "model:\n  class_path: kdlab.DistillationModule\n  init_args:\n    distillers+:\n"
        "      - {class_path: kdlab.losses.KD, init_args: {weight: 0.5, temperature: 2.0}}\n"
    )
    replacing = tmp_path / "replace_callbacks.yaml"
    replacing.write_text(
        "trainer:\n  callbacks:\n    - class_path: lightning.pytorch.callbacks.LearningRateMonitor\n"
    )
    args = [f"--config={REPO / 'experiments' / p}" for p in pieces]
    args += [f"--config={stacked}", f"--config={replacing}", f"--model.init_args.teacher_weights={teacher}"]
    cli = KDLabCLI(args=args, run=False)
    assert [d.temperature for d in cli.model.distillers.values()] == [4.0, 2.0]
    callbacks = [type(c).__name__ for c in cli.trainer.callbacks]
    assert "LearningRateMonitor" in callbacks and "KDDashboard" not in callbacks
