"""A finished run's files, found and read: a CSV log (``metrics.csv``, ``hparams.yaml``) or a W&B run.

The layouts ``kdlab fit`` writes: ``<root>/logs/version_N/`` with the default CSV logger
(``lightning_logs/`` for Lightning's own), ``<root>/wandb/{offline-,}run-<time>-<id>/`` with
``experiments/logger/wandb.yaml``, and ``<root>/checkpoints/`` beside either. A W&B run's history
is read from its ``.wandb`` transaction log by W&B's own reader (``wandb leet inspect --json``),
its summary from the same log and, for a synced run, ``files/wandb-summary.json``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from kdlab.errors import KDLabError
from kdlab.tools.wandb_log import read_wandb_log, run_folders

CSV_PARENTS = (".", "logs", "lightning_logs")  # where, under RUN_DIR, log versions are looked for
FIT_PREFIXES = ("train/", "val/")


class RunFilesError(KDLabError, ValueError):
    """No run under the directory, or its files hold nothing to report."""


@dataclass
class RunFiles:
    """What was read of one run.

    Attributes:
        history: One row per logged record: ``epoch``, ``step`` and the logged keys (NaN where a
            row lacks a key), as ``metrics.csv`` has them.
        kind: ``csv`` or ``wandb``.
        files: Every file read, in order.
        version: The log version (``version_1``) or W&B run folder read; None for a lone log folder.
        versions: Every version found, oldest first.
        root: The run directory (``trainer.default_root_dir``) the layout points to.
        log_dir: The folder of the log that was read.
        config: The run's hyper-parameters (``student``, ``teacher``, ``distillers``, ...).
        summary: The W&B run summary (empty for a CSV log).
        notes: Lines for the reader (where test metrics came from, an unfinished W&B run).
    """

    history: pd.DataFrame
    kind: str
    files: list[Path]
    version: str | None
    versions: list[str]
    root: Path
    log_dir: Path
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def by_epoch(self) -> pd.DataFrame:
        """One row per epoch (the index): each key's value, the mean over the epoch where it was
        logged at several steps. Compression numbers and per-step columns are left out."""
        rows = self.history.dropna(subset=["epoch"])
        keys = [c for c in rows if c not in ("epoch", "step") and not _per_step_column(c)]
        table = rows.groupby("epoch")[[c for c in keys if not c.startswith("compression/")]].mean()
        table.index = table.index.astype(int)
        return table

    def by_step(self) -> dict[str, pd.Series]:
        """The values logged per step, by step, named as their epoch means: StepLogging's
        ``step/loss`` and ``step/<term>`` as ``train/...``, ``step/lr`` as ``lr``, Lightning's
        ``<key>_step`` as ``<key>``, and keys logged at several steps of one epoch as they are."""
        rows = self.history.dropna(subset=["step"])
        series = {}
        for column in rows:
            if column in ("epoch", "step") or column.startswith("compression/"):
                continue
            logged = rows.dropna(subset=[column])
            per_epoch = logged.dropna(subset=["epoch"]).groupby("epoch").size()
            if _per_step_column(column) or (len(per_epoch) and per_epoch.max() > 1):
                series[_per_step_name(column)] = logged.set_index("step")[column]
        return series


def _per_step_column(column: str) -> bool:
    return column.startswith("step/") or column.endswith("_step")


def _per_step_name(column: str) -> str:
    if column.startswith("step/lr"):
        return column.removeprefix("step/")
    if column.startswith("step/"):
        return "train/" + column.removeprefix("step/")
    return column.removesuffix("_step")


def read_run(run_dir: str | Path, version: str | None = None) -> RunFiles:
    """The run under ``run_dir``: a CSV log if there is one, else a W&B run.

    Args:
        run_dir: A run directory, a log folder holding ``metrics.csv``, a W&B run folder or a
            directory holding ``wandb/``.
        version: ``N`` or a folder name for a log version, or a W&B run id; None for the newest
            version holding training metrics.

    Raises:
        RunFilesError: no such directory, no log under it, an empty log, no such version.
    """
    run_dir = Path(run_dir)
    if run_dir.is_file():
        run_dir = run_dir.parent
    if not run_dir.is_dir():
        raise RunFilesError(
            f"there is no directory '{run_dir}'; give the run directory of a `kdlab fit` run (its "
            "trainer.default_root_dir, e.g. runs/digits/kd)"
        )
    for parent in CSV_PARENTS:
        if (run_dir / parent / "metrics.csv").is_file() or (run_dir / parent / "hparams.yaml").is_file():
            if version is not None:
                raise RunFilesError(
                    f"--version {version}: {run_dir / parent} is one log folder; give the run directory "
                    "above it to choose among its versions"
                )
            return _read_csv_run([run_dir / parent], None, lone=True)
        found = _log_versions(run_dir / parent)
        if found:
            return _read_csv_run(found, version, lone=False)
    runs = run_folders(run_dir)
    if runs:
        return _read_wandb_run(runs, version)
    inside = [p.name for p in sorted(run_dir.iterdir()) if (p / "logs").is_dir() or (p / "wandb").is_dir()]
    hint = (
        f"its folders {', '.join(inside[:3])} hold runs: give one of them"
        if inside
        else "give the trainer.default_root_dir of a `kdlab fit` run that has logged an epoch"
    )
    raise RunFilesError(
        f"found no run in '{run_dir}': looked for metrics.csv in it and in its logs/version_*/ and "
        "lightning_logs/version_*/ folders, and for a W&B run (run-*.wandb in it, in */ and "
        f"wandb/*/); {hint}"
    )


def _log_versions(parent: Path) -> list[Path]:
    """The log folders (those holding metrics.csv or hparams.yaml) directly in ``parent``, oldest first."""
    if not parent.is_dir():
        return []
    found = [p for p in parent.iterdir() if (p / "metrics.csv").is_file() or (p / "hparams.yaml").is_file()]
    return sorted(found, key=lambda p: (_version_number(p.name), _modified(p / "metrics.csv")))


def _version_number(name: str) -> int:
    match = re.fullmatch(r"version_(\d+)", name)
    return int(match.group(1)) if match else -1


def _modified(path: Path) -> int:
    return path.stat().st_mtime_ns if path.is_file() else 0


def _logged(log_dir: Path, prefixes: tuple[str, ...]) -> bool:
    """Whether ``log_dir/metrics.csv`` has a column starting with one of ``prefixes`` (header only)."""
    path = log_dir / "metrics.csv"
    if not path.is_file():
        return False
    with path.open() as handle:
        return any(name.startswith(prefixes) for name in handle.readline().strip().split(","))


def _read_csv_run(found: list[Path], version: str | None, lone: bool) -> RunFiles:
    names = [p.name for p in found]
    if lone:
        chosen = found[0]
    elif version is not None:
        chosen = next((p for p in found if p.name in (version, f"version_{version}")), None)
        if chosen is None:
            raise RunFilesError(
                f"there is no version '{version}' in {found[0].parent}; it holds {', '.join(names)} "
                "(--version N reads version_N)"
            )
    else:  # the newest fit: a later `kdlab test` of the run writes a version with test metrics only
        chosen = ([p for p in found if _logged(p, FIT_PREFIXES)] or found)[-1]
    history, files, notes = _read_metrics(chosen / "metrics.csv"), [chosen / "metrics.csv"], []
    config = _read_hparams(chosen / "hparams.yaml")
    if config:
        files.append(chosen / "hparams.yaml")
    if not any(c.startswith("test/") for c in history):
        later = [p for p in found[names.index(chosen.name) + 1 :] if _logged(p, ("test/",))]
        if later:
            test = _read_metrics(later[-1] / "metrics.csv")
            test = test[[c for c in test if c.startswith("test/") or c in ("epoch", "step")]]
            history = pd.concat([history, test], ignore_index=True)
            files.append(later[-1] / "metrics.csv")
            notes.append(f"test/* from {later[-1].name}, a later `kdlab test` of this run")
    return RunFiles(
        history=history,
        kind="csv",
        files=files,
        version=None if lone else chosen.name,
        versions=[] if lone else names,
        root=chosen.parent.parent,
        log_dir=chosen,
        config=config,
        notes=notes,
    )


def _read_metrics(path: Path) -> pd.DataFrame:
    stopped = "the run stopped before it logged anything (killed early?); let it train an epoch, or "
    if not path.is_file():
        raise RunFilesError(f"{path.parent} holds no metrics.csv: {stopped}choose another --version")
    try:
        history = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        history = pd.DataFrame()
    if history.empty:
        raise RunFilesError(f"{path} is empty: {stopped}choose another --version")
    return _checked(history, path)


def _checked(history: pd.DataFrame, source: Path) -> pd.DataFrame:
    """``history`` with ``epoch`` and ``step`` columns, if it holds a train/, val/ or test/ metric."""
    for column in ("epoch", "step"):
        if column not in history:
            history[column] = float("nan")
    if not any(str(c).startswith((*FIT_PREFIXES, "test/")) for c in history):
        logged = sorted(str(c) for c in history if c not in ("epoch", "step"))
        raise RunFilesError(
            f"{source} holds no train/, val/ or test/ metrics yet (only {', '.join(logged[:2])}"
            f"{', ...' if len(logged) > 2 else ''}): the run stopped before its first epoch ended; let it "
            "train an epoch, or choose another --version"
        )
    return history


def _read_hparams(path: Path) -> dict[str, Any]:
    try:
        config = yaml.safe_load(path.read_text()) if path.is_file() else None
    except yaml.YAMLError:  # a Python object Lightning could only write as a tagged value
        return {}
    return config if isinstance(config, dict) else {}


def _read_wandb_run(runs: list[Path], version: str | None) -> RunFiles:
    names = [folder.name for folder in runs]
    chosen = runs[-1]
    if version is not None:
        chosen = next((f for f in runs if version in (f.name, f.name.rpartition("-")[2])), None)
        if chosen is None:
            raise RunFilesError(
                f"there is no W&B run '{version}' in {runs[0].parent}; it holds {', '.join(names)} "
                "(--version takes a run id or folder name)"
            )
    log = read_wandb_log(chosen)
    notes = [] if log.finished else ["the W&B run has no exit record: it is still running, or was killed"]
    return RunFiles(
        history=_checked(pd.DataFrame(log.rows), log.files[0]),
        kind="wandb",
        files=log.files,
        version=chosen.name,
        versions=names,
        root=chosen.parent.parent if chosen.parent.name == "wandb" else chosen.parent,
        log_dir=chosen,
        config=log.config,
        summary=log.summary,
        notes=notes,
    )
