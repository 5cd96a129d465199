"""The run directory: its name for a composed experiment (``{method}`` in ``trainer.default_root_dir``),
no second fit over a run's checkpoints, ``--ckpt_path best|last`` as that run's files.

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

from kdlab.callbacks.checkpoints import checkpoint_dir, checkpoint_path
from kdlab.errors import CheckpointError

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


def refuse_to_overwrite(root: str | Path) -> None:
    """Stop a fresh ``kdlab fit`` (no ``--ckpt_path``) whose run directory already holds a run's
    checkpoints: Lightning would overwrite its ``best.ckpt``/``last.ckpt``.

    A SLURM ``hpc_ckpt_*.ckpt`` in ``root`` is no obstacle: Lightning resumes from it by itself
    (a requeued job runs the same command).

    Raises:
        CheckpointError: ``root/checkpoints`` holds checkpoints; the message offers resuming or
            another directory.
    """
    root = Path(root)
    found = sorted(checkpoint_dir(root).glob("*.ckpt"))
    if found and not any(root.glob("hpc_ckpt_*.ckpt")):
        names = ", ".join(p.name for p in found[:3]) + (", ..." if len(found) > 3 else "")
        raise CheckpointError(
            f"{root} already holds a run ({names}); a new fit would overwrite it. Resume it with "
            f"--ckpt_path last, or start elsewhere with --trainer.default_root_dir <new directory> "
            f"(or delete {root} if that run is not wanted)"
        )


def named_checkpoint(ckpt_path: str | None, root: str | Path, subcommand: str) -> str | None:
    """``--ckpt_path best|last`` of validate/test/predict as the run's ``checkpoints/<name>.ckpt``
    (fit leaves ``last`` to Lightning, which also finds SLURM's newer ``hpc_ckpt_*``).

    Raises:
        CheckpointError: the run has no such checkpoint.
    """
    if ckpt_path not in ("best", "last") or subcommand == "fit":
        return ckpt_path
    path = checkpoint_path(root, ckpt_path)
    if not path.is_file():
        raise CheckpointError(
            f"--ckpt_path {ckpt_path}: there is no {path}; train the run first (kdlab fit with the same "
            "configs) or give a checkpoint file's path"
        )
    return str(path)
