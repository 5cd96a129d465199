"""The run directory of a composed experiment: ``{method}`` in ``trainer.default_root_dir``.

A pair file (``experiments/cifar100/<pair>.yaml``) is composed with any method file
(``experiments/method/<method>.yaml``), so neither alone knows the run's name; the pair file says
``default_root_dir: runs/cifar100/<pair>/{method}`` and the command fills in the method:

    kdlab fit -c experiments/cifar100/base.yaml -c experiments/cifar100/resnet32x4-resnet8x4.yaml \\
        -c experiments/method/kd.yaml          # -> runs/cifar100/resnet32x4-resnet8x4/kd
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

PLACEHOLDER = "{method}"


def method_name(config_files: Iterable[Any], distillers: Iterable[Any] | None) -> str:
    """The names of the config files in a ``method/`` folder, joined by ``+`` (``kd+crd`` when two
    method files stack); else the configured distillers' class names (``vanilla`` for none)."""
    stems = [Path(str(f)).stem for f in config_files if Path(str(f)).parent.name == "method"]
    if stems:
        return "+".join(stems)
    names = [str(d.get("class_path", "")).rpartition(".")[2].lower() for d in distillers or ()]
    return "+".join(n for n in names if n) or "vanilla"


def fill_run_directory(config: Any) -> None:
    """Replace ``{method}`` in ``config.trainer.default_root_dir`` (a parsed ``kdlab fit`` config)."""
    trainer = config.get("trainer")
    root = trainer.get("default_root_dir") if trainer is not None else None
    if not isinstance(root, str) or PLACEHOLDER not in root:
        return
    model = config.get("model")
    init_args = model.get("init_args") if model is not None else None
    distillers = init_args.get("distillers") if init_args is not None else None
    trainer.default_root_dir = root.replace(PLACEHOLDER, method_name(config.get("config") or (), distillers))
