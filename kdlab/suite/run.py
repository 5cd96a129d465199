"""Run one task of a suite: ``kdlab fit`` (resumed if it was interrupted), then a test of the best
and of the last checkpoint; the outcome goes to ``<run_dir>/result.json``."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from kdlab.callbacks.checkpoints import checkpoint_path
from kdlab.errors import ConfigurationError
from kdlab.suite.plan import Suite, Task
from kdlab.suite.results import RESULT
from kdlab.tools import Build

ERROR = "error.txt"


def fit_arguments(task: Task, suite: Suite, extra: list[str]) -> list[str]:
    """The ``kdlab fit`` command line of ``task`` (without ``fit`` and without ``--ckpt_path``)."""
    args = [f"--config={config}" for config in task.configs]
    args += [
        *task.args,
        *extra,
        f"--seed_everything={task.seed}",
        f"--trainer.default_root_dir={task.run_dir}",
    ]
    if task.teacher is not None:
        args.append(f"--model.init_args.teacher_weights={suite.teacher_weights[task.teacher]}")
    return args


def resume_checkpoint(run_dir: Path) -> Path | None:
    """The newest of ``checkpoints/last.ckpt`` and Lightning's SLURM ``hpc_ckpt_*.ckpt``, if any."""
    candidates = [checkpoint_path(run_dir, "last"), *run_dir.glob("hpc_ckpt_*.ckpt")]
    existing = [path for path in candidates if path.is_file()]
    return max(existing, key=lambda path: path.stat().st_mtime) if existing else None


def is_finished(task: Task) -> bool:
    return (task.run_dir / RESULT).is_file()


def run_in_process(task: Task, suite: Suite, extra: list[str], build: Build) -> dict[str, Any]:
    """Fit (resuming an interrupted attempt), test best and last, write and return the result;
    ``build`` runs ``kdlab fit`` (see :mod:`kdlab.tools`)."""
    _check_teacher_ready(task, suite)
    task.run_dir.mkdir(parents=True, exist_ok=True)
    (task.run_dir / ERROR).unlink(missing_ok=True)
    args = fit_arguments(task, suite, extra)
    resume = resume_checkpoint(task.run_dir)
    if resume is not None:
        args.append(f"--ckpt_path={resume}")
    started = time.time()
    with _wandb_run_id(task.run_dir):
        cli = build(["fit", *args], True)
        tests = {}
        for which in ("best", "last"):
            path = checkpoint_path(task.run_dir, which)
            if not path.is_file():
                raise ConfigurationError(
                    f"{task.name} seed {task.seed}: fit wrote no {path}; the suite needs kdlab's best/last "
                    "checkpoints (do not set trainer.enable_checkpointing=false or your own ModelCheckpoint)"
                )
            metrics = cli.trainer.test(
                cli.model, datamodule=cli.datamodule, ckpt_path=str(path), verbose=False
            )
            tests[which] = {"metrics": metrics[0] if metrics else {}, "epoch": _epoch(path)}
    result = _result(task, cli, tests, time.time() - started)
    _write_json(task.run_dir / RESULT, result)
    return result


def run_subprocess(task: Task, suite: Suite, extra: list[str]) -> bool:
    """Run ``task`` as ``python -m kdlab.cli suite ... --task N`` (failures and memory stay there);
    its output goes to ``<run_dir>/suite.log``. Returns whether it finished."""
    task.run_dir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "kdlab.cli", "suite", str(suite.path), f"--output={suite.output}"]
    command += [f"--seeds={','.join(map(str, suite.seeds))}", f"--task={task.index}", "--", *extra]
    with (task.run_dir / "suite.log").open("a") as log:
        log.write(f"$ {' '.join(command)}\n")
        log.flush()
        done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=False)
    return done.returncode == 0 and is_finished(task)


def record_failure(task: Task, error: BaseException, printed: str = "") -> None:
    """Write ``error.txt``: the error, or for a rejected command line (SystemExit) what was printed."""
    task.run_dir.mkdir(parents=True, exist_ok=True)
    message = (
        printed.strip()
        if isinstance(error, SystemExit) and printed.strip()
        else f"{type(error).__name__}: {error}"
    )
    (task.run_dir / ERROR).write_text(message + "\n")


class StderrTee:
    """Copy what is written to ``sys.stderr`` (e.g. a rejected command line) into ``self.text``."""

    def __init__(self) -> None:
        self.text = ""
        self._stream = sys.stderr

    def write(self, text: str) -> int:
        self.text = (self.text + text)[-20000:]
        return self._stream.write(text)

    def flush(self) -> None:
        self._stream.flush()

    def __enter__(self) -> StderrTee:
        sys.stderr = self
        return self

    def __exit__(self, *exc: object) -> None:
        sys.stderr = self._stream


def _check_teacher_ready(task: Task, suite: Suite) -> None:
    if task.teacher is None:
        return
    weights = suite.teacher_weights[task.teacher]
    if not weights.is_file():
        raise ConfigurationError(
            f"{task.name} seed {task.seed}: the teacher '{task.teacher}' has no weights at {weights}; its "
            "suite run failed or has not run yet (teachers run first; see its error.txt or suite.log)"
        )


def _result(task: Task, cli: Any, tests: dict[str, dict], seconds: float) -> dict[str, Any]:
    from kdlab.models.profile import count_parameters

    config = cli.config.get("fit", cli.config)
    model = config["model"].get("init_args") or config["model"]
    has_teacher = model.get("teacher") is not None
    best, last = tests["best"]["metrics"], tests["last"]["metrics"]
    return {
        "run": task.name,
        "role": task.role,
        "method": task.method or (Path(task.configs[-1]).stem if has_teacher else "vanilla"),
        "teacher": architecture(model.get("teacher")) if has_teacher else "",
        "student": architecture(model.get("student")),
        "seed": task.seed,
        "best_epoch": tests["best"]["epoch"],
        "best_acc1": best.get("test/acc1"),
        "best_acc5": best.get("test/acc5"),
        "last_epoch": tests["last"]["epoch"],
        "last_acc1": last.get("test/acc1"),
        "last_acc5": last.get("test/acc5"),
        "teacher_acc1": best.get("test/teacher_acc1"),
        "params": count_parameters(cli.model.student),
        "seconds": round(seconds, 1),
        "run_dir": str(task.run_dir),
    }


def architecture(spec: Any) -> str:
    """A model's short name from its config: the class name (torchvision models: their ``name``)."""
    if spec is None:
        return ""
    class_path = str(spec.get("class_path", ""))
    short = class_path.rsplit(".", 1)[-1]
    init_args = spec.get("init_args") or {}
    if short == "TorchvisionModel" and init_args.get("name"):
        return str(init_args["name"])
    return short


def _epoch(path: Path) -> int:
    checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return int(checkpoint["epoch"])


@contextmanager
def _wandb_run_id(run_dir: Path) -> Iterator[None]:
    """A W&B run id kept in the run directory, so a resumed run continues the same W&B run."""
    id_file = run_dir / "wandb_run_id"
    if not id_file.is_file():
        id_file.write_text(f"kdlab-{secrets.token_hex(6)}\n")
    previous = os.environ.get("WANDB_RUN_ID")
    os.environ["WANDB_RUN_ID"] = id_file.read_text().strip()
    try:
        yield
    finally:
        wandb = sys.modules.get("wandb")
        if wandb is not None and getattr(wandb, "run", None) is not None:
            wandb.finish()  # the next run of the suite must not reuse this W&B run
        if previous is None:
            os.environ.pop("WANDB_RUN_ID", None)
        else:
            os.environ["WANDB_RUN_ID"] = previous


def _write_json(path: Path, content: dict[str, Any]) -> None:
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(content, indent=2) + "\n")
    partial.replace(path)  # atomic: a result file is either complete or absent
