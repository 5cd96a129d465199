"""Real ``kdlab fit`` runs for the reliability tests: in this process, or as a subprocess to kill.

Runs in this process and subprocesses use the same number of threads, so their float results
can be compared bit for bit.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from safetensors.torch import save_file

from kdlab.cli import main
from kdlab.models import ConvNet

from .datagen import write_cifar10

REPO = Path(__file__).resolve().parents[1]
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
# Parse errors exit through SystemExit(2); errors found later make main() return 2.
USER_ERROR = 2


def teacher_file(folder: Path, width: int = 4) -> Path:
    """Weights of a (randomly initialised, seeded) digits ConvNet teacher."""
    path = folder / f"convnet{width}.safetensors"
    if not path.is_file():
        torch.manual_seed(0)
        save_file(ConvNet(width=width).state_dict(), str(path))
    return path


def digits_args(folder: Path) -> list[str]:
    """MLP student, ConvNet teacher, KD with random noise, SGD with a StepLR schedule; 6 steps/epoch."""
    return [
        "--seed_everything=0",
        "--trainer.deterministic=true",
        "--model=kdlab.DistillationModule",
        "--model.student=kdlab.models.MLP",
        "--model.student.hidden=[16]",
        "--model.teacher=kdlab.models.ConvNet",
        "--model.teacher.width=4",
        f"--model.teacher_weights={teacher_file(folder)}",
        "--model.ce_weight=0.5",
        "--model.distillers+=tests.reliability_helpers.NoisyKD",
        "--model.lr_scheduler=torch.optim.lr_scheduler.StepLR",
        "--model.lr_scheduler.step_size=1",
        "--model.lr_scheduler.gamma=0.5",
        "--data=kdlab.data.DigitsDataModule",
        "--data.batch_size=64",
        "--trainer.max_epochs=3",
        "--trainer.limit_train_batches=6",
        "--trainer.limit_val_batches=3",
        *QUIET,
    ]


def cifar_args(folder: Path) -> list[str]:
    """CIFAR-10 pickle batches (80 training images, views drawn per epoch), zoo ResNet-8 pair."""
    data = folder / "cifar"
    if not (data / "cifar-10-batches-py").is_dir():
        write_cifar10(data, per_batch=16)
    teacher = folder / "resnet8.safetensors"
    if not teacher.is_file():
        from kdlab.models.cifar import resnet8

        torch.manual_seed(1)
        save_file(resnet8(num_classes=10).state_dict(), str(teacher))
    return [
        "--seed_everything=0",
        "--trainer.deterministic=true",
        "--model=kdlab.DistillationModule",
        "--model.student=kdlab.models.cifar.resnet8",
        "--model.teacher=kdlab.models.cifar.resnet8",
        f"--model.teacher_weights={teacher}",
        "--model.distillers+=tests.reliability_helpers.NoisyKD",
        "--data=kdlab.data.CIFARDataModule",
        "--data.dataset=cifar10",
        f"--data.root={data}",
        "--data.batch_size=16",
        "--trainer.max_epochs=3",
        *QUIET,
    ]


def run(args: list[str]) -> tuple[int, str]:
    """``kdlab fit`` in this process: (exit code, stderr).

    Process-wide settings a run changes (deterministic algorithms, Lightning's seed variables)
    are put back afterwards, so later tests do not inherit them.
    """
    stderr = io.StringIO()
    environment = dict(os.environ)
    deterministic = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    with contextlib.redirect_stderr(stderr):
        try:
            code = main(["fit", *args])
        except SystemExit as exit_:
            code = exit_.code
        finally:
            torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])
            os.environ.clear()
            os.environ.update(environment)
    return int(code or 0), stderr.getvalue()


def subprocess_env(**extra: str) -> dict[str, str]:
    threads = str(torch.get_num_threads())
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, **extra}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    env.pop("LOCAL_RANK", None)
    return env


def start(args: list[str], log: Path, **env: str) -> subprocess.Popen:
    """``python -m kdlab.cli fit ...`` as a subprocess in its own process group, output in ``log``."""
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "kdlab.cli", "fit", *args],
            cwd=REPO,
            env=subprocess_env(**env),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def wait_for(path: Path, process: subprocess.Popen, log: Path, timeout: float = 240) -> None:
    """Wait until ``path`` exists; fail with the run's output if it ends or times out first."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            kill_group(process)
            raise AssertionError(f"{path.name} never appeared; output:\n{log.read_text()[-4000:]}")
        time.sleep(0.05)


def kill_group(process: subprocess.Popen, signum: int = signal.SIGKILL) -> None:
    """Signal the run and every process it started (DDP ranks), then reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signum)
    process.wait(timeout=60)


def release(folder: Path, epoch: int, batch: int) -> None:
    """Let a run held by ``PauseAt`` at ``(epoch, batch)`` go on."""
    (folder / f"go-e{epoch}-b{batch}").touch()


def metrics(root: Path, version: int) -> pd.DataFrame:
    """The run's CSV log, one row per epoch (train and validation rows merged)."""
    frame = pd.read_csv(root / "logs" / f"version_{version}" / "metrics.csv")
    return frame.groupby("epoch").first()


def checkpoint(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_same_training_state(resumed: dict[str, Any], reference: dict[str, Any]) -> None:
    """Weights, optimizer, schedulers, step counters and callback states, compared bit for bit."""
    assert resumed["global_step"] == reference["global_step"]
    assert resumed["epoch"] == reference["epoch"]
    assert resumed["state_dict"].keys() == reference["state_dict"].keys()
    for key, value in reference["state_dict"].items():
        assert torch.equal(resumed["state_dict"][key], value), f"{key} differs"
    assert_equal_nested(resumed["optimizer_states"], reference["optimizer_states"], "optimizer")
    assert_equal_nested(resumed["lr_schedulers"], reference["lr_schedulers"], "lr_schedulers")
    for name, state in reference["callbacks"].items():
        if "ModelCheckpoint" not in name and "BestAndLast" not in name:  # paths differ by run
            assert_equal_nested(resumed["callbacks"].get(name), state, name)


def assert_equal_nested(a: Any, b: Any, where: str) -> None:
    if isinstance(b, torch.Tensor):
        assert isinstance(a, torch.Tensor) and torch.equal(a, b), f"{where} differs"
    elif isinstance(b, dict):
        assert isinstance(a, dict) and a.keys() == b.keys(), f"{where}: keys {a and a.keys()} vs {b.keys()}"
        for key in b:
            assert_equal_nested(a[key], b[key], f"{where}.{key}")
    elif isinstance(b, (list, tuple)):
        assert isinstance(a, (list, tuple)) and len(a) == len(b), f"{where} differs in length"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_equal_nested(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} vs {b!r}"


class References:
    """Uninterrupted runs, each done once per test session and shared by the tests that need it."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.done: dict[str, Path] = {}

    def get(self, name: str, args: list[str]) -> Path:
        if name not in self.done:
            root = self.folder / name
            code, stderr = run([*args, f"--trainer.default_root_dir={root}"])
            assert code == 0, stderr[-3000:]
            self.done[name] = root
        return self.done[name]
