"""What a W&B run logged, read from its ``.wandb`` transaction log by W&B's own reader.

Offline runs keep everything in that log (protobuf records), and wandb (>= 0.31) prints it as JSON
lines with ``wandb leet inspect --json``; this module runs that command and keeps the history
rows, the summary and the config. A run synced to the server also has ``files/wandb-summary.json``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdlab.errors import KDLabError

STEP = "trainer/global_step"  # Lightning's step key in W&B; metrics.csv calls it `step`


class WandbLogError(KDLabError, RuntimeError):
    """This wandb cannot read the transaction log, or the log holds no history."""


@dataclass
class WandbLog:
    """One W&B run as logged.

    Attributes:
        rows: History rows: the numeric values logged together (``step`` for Lightning's global
            step; W&B's own ``_step``/``_runtime`` and media entries left out).
        summary: The run summary (``{"max": ...}`` for metrics defined with a summary).
        config: The run config.
        finished: Whether the log has its exit record (the run ended, not killed).
        files: The files read.
    """

    rows: list[dict[str, float]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    finished: bool = False
    files: list[Path] = field(default_factory=list)


def read_wandb_log(run_folder: Path) -> WandbLog:
    """The history, summary and config of the W&B run in ``run_folder`` (``offline-run-*``, ``run-*``).

    Raises:
        WandbLogError: no readable ``run-*.wandb`` in the folder, or nothing logged in it.
    """
    logs = sorted(run_folder.glob("run-*.wandb"))
    if not logs:
        raise WandbLogError(f"{run_folder} holds no run-*.wandb file: is it a W&B run folder?")
    log = WandbLog(files=[logs[-1]])
    for record in wandb_records(logs[-1]):
        kind = record.get("type")
        if kind == "history":
            item = record["history"].get("item", {})
            media = tuple(k.removesuffix("_type") for k in item if k.endswith("._type"))  # "x." of x._type
            row = {k: v for k, v in item.items() if _is_number(v) and not k.startswith(("_", *media))}
            row["step"] = row.pop(STEP, float("nan"))
            log.rows.append(row)
        elif kind == "summary":
            log.summary.update(record["summary"].get("update", {}))
        elif kind == "config":
            log.config.update(record["config"].get("update", {}))
        log.finished |= kind == "exit"
    synced = run_folder / "files" / "wandb-summary.json"
    if synced.is_file():
        log.summary.update(json.loads(synced.read_text()))
        log.files.append(synced)
    if not log.rows:
        raise WandbLogError(f"{logs[-1]} holds no history: the run stopped before it logged anything")
    return log


def run_folders(directory: Path) -> list[Path]:
    """W&B run folders, oldest first: ``directory`` itself if it is one, else those in it or in its
    ``wandb/`` (``offline-run-<time>-<id>``, ``run-<time>-<id>``; not the ``latest-run`` link)."""
    if any(directory.glob("run-*.wandb")):
        return [directory]
    found = [
        folder
        for parent in (directory, directory / "wandb")
        for folder in parent.glob("*run-*")
        if not folder.is_symlink() and any(folder.glob("run-*.wandb"))
    ]
    return sorted(found, key=lambda folder: folder.name.removeprefix("offline-"))


def wandb_records(transaction_log: Path) -> list[dict[str, Any]]:
    """The records of a ``.wandb`` log as ``wandb leet inspect --json`` prints them, e.g.
    ``{"type": "history", "history": {"item": {"val/acc1": 0.9, ...}}}``.

    Raises:
        WandbLogError: the installed wandb cannot read it (older than 0.31, or a damaged file).
    """
    command = [sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(transaction_log)]
    environment = {**os.environ, "WANDB_ERROR_REPORTING": "false"}  # a reader sends no reports
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=environment)
    except subprocess.TimeoutExpired:
        raise WandbLogError(f"W&B's reader took over 5 minutes on {transaction_log}") from None
    if done.returncode != 0:
        detail = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        if importlib.util.find_spec("wandb.cli.leet") is None:
            fix = "reading .wandb files takes `wandb leet inspect --json`: pip install -U 'wandb>=0.31'"
        else:
            fix = "is it a W&B run's transaction log, and complete?"
        raise WandbLogError(f"W&B could not read {transaction_log} ({detail}); {fix}")
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
