"""The whole run's configuration in the loggers: resolved CLI config, teacher fingerprint, git commit."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.cli import SaveConfigCallback


class RunConfig(Callback):
    """Log what a run was: the full resolved ``kdlab fit`` config, the teacher and the code.

    LightningCLI logs only the module's own arguments as hyper-parameters. This callback adds
    the rest of the resolved configuration (``trainer``, ``data``, ``seed_everything``, ...,
    read from the CLI's ``SaveConfigCallback``), under its top-level keys, plus a ``kdlab``
    entry with the teacher's fingerprint (``DistillationModule.teacher_source``: weight file and
    sha256) and the git commit of the working directory (with a ``dirty`` flag), so a W&B run
    (or ``hparams.yaml`` of a CSV run) says exactly what produced it. Built in Python, without
    the CLI, only the ``kdlab`` entry is logged.

    Args:
        git: Record the git commit of the current directory (when it is a git checkout).
    """

    def __init__(self, git: bool = True) -> None:
        super().__init__()
        self.git = git
        self.logged: dict[str, Any] = {}

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.logged = {**cli_config(trainer), "kdlab": self.provenance(pl_module)}
        for logger in trainer.loggers:
            logger.log_hyperparams(self.logged)

    def provenance(self, pl_module: LightningModule) -> dict[str, Any]:
        """The teacher's fingerprint and the code version."""
        return {
            "teacher": getattr(pl_module, "teacher_source", None),
            "git": git_state(Path.cwd()) if self.git else None,
        }


def cli_config(trainer: Trainer) -> dict[str, Any]:
    """The resolved CLI config as plain data, or ``{}`` when the trainer was not made by the CLI."""
    saver = next((c for c in trainer.callbacks if isinstance(c, SaveConfigCallback)), None)
    if saver is None:
        return {}
    dumped = json.loads(saver.parser.dump(saver.config, format="json", skip_validation=True))
    return dumped if isinstance(dumped, dict) else {}


def git_state(directory: Path) -> dict[str, Any] | None:
    """``{"commit": sha, "dirty": bool}`` of the checkout holding ``directory``, or None."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=directory, capture_output=True, text=True, timeout=10, check=True
        )
        return done.stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": dirty}
