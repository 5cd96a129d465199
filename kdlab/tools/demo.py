"""``kdlab demo``: teacher, student from scratch and distilled student on the bundled digits.

Everything runs on data that ships with scikit-learn, so a fresh install can see
distillation work end to end in a few minutes on a laptop CPU; every run is seeded, so the
table's accuracies are the same on every run of the demo.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.loggers import CSVLogger
from safetensors.torch import save_file
from torch import nn

from kdlab.data import DigitsDataModule
from kdlab.losses import KD
from kdlab.models import MLP, ConvNet
from kdlab.module import DistillationModule

SGD = partial(torch.optim.SGD, lr=0.05, momentum=0.9, weight_decay=5e-4)


def _fit_and_test(module: DistillationModule, name: str, seed: int, epochs: int, output: Path) -> float:
    seed_everything(seed, verbose=False)
    trainer = Trainer(
        max_epochs=epochs,
        logger=CSVLogger(output / "logs", name=name, version=f"seed{seed}"),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        deterministic=True,
    )
    data = DigitsDataModule(seed=0)
    trainer.fit(module, data)
    return trainer.test(module, data, verbose=False)[0]["test/acc1"]


def _latency_ms(model: nn.Module, input_shape: tuple[int, ...], repeats: int = 200) -> float:
    """Median CPU wall time of one single-image forward pass, in milliseconds."""
    model = model.eval().cpu()
    x = torch.zeros(1, *input_shape)
    times = []
    with torch.inference_mode():
        for _ in range(20):
            model(x)
        for _ in range(repeats):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def _summary(name: str, model: nn.Module, accuracies: list[float], teacher_params: int) -> dict:
    params = sum(p.numel() for p in model.parameters())
    return {
        "model": name,
        "runs": len(accuracies),
        "test_acc1_mean": statistics.fmean(accuracies),
        "test_acc1_std": statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0,
        "params": params,
        "compression": teacher_params / params,
        "cpu_latency_ms": _latency_ms(model, DigitsDataModule.input_shape),
    }


def _print_table(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="kdlab demo: digits, test top-1 over seeds")
    for column in ("model", "acc1 %", "seeds", "params", "smaller", "CPU ms/img"):
        table.add_column(column, justify="left" if column == "model" else "right", no_wrap=True)
    for row in rows:
        table.add_row(
            row["model"],
            f"{100 * row['test_acc1_mean']:.2f} ± {100 * row['test_acc1_std']:.2f}",
            str(row["runs"]),
            f"{row['params']:,}",
            f"{row['compression']:.1f}×",
            f"{row['cpu_latency_ms']:.3f}",
        )
    Console().print(table)


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    for row in rows:
        axis.errorbar(
            row["params"], 100 * row["test_acc1_mean"], yerr=100 * row["test_acc1_std"], fmt="o", capsize=4
        )
        axis.annotate(
            row["model"],
            (row["params"], 100 * row["test_acc1_mean"]),
            textcoords="offset points",
            xytext=(6, -12),
        )
    axis.set_xscale("log")
    axis.margins(x=0.35, y=0.15)
    axis.set_xlabel("parameters")
    axis.set_ylabel("test accuracy (%)")
    axis.set_title("Digits: accuracy against size")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def run_demo(
    seeds: int = 3,
    epochs: int = 30,
    teacher_epochs: int = 20,
    temperature: float = 4.0,
    output: str = "runs/demo",
) -> list[dict]:
    """Train a teacher, then a student from scratch and with KD on the digits; print and save a table.

    Args:
        seeds: Number of seeds for each student.
        epochs: Training epochs of each student.
        teacher_epochs: Training epochs of the teacher.
        temperature: KD temperature.
        output: Run directory for the table (CSV, JSON), the plot (PNG), logs and teacher weights.
    """
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    stages, started = 1 + 2 * seeds, time.perf_counter()

    def progress(stage: int, what: str, accuracy: float) -> None:
        elapsed = time.perf_counter() - started
        print(f"[{stage}/{stages}] {what}: test acc1 {100 * accuracy:.2f}% ({elapsed:.0f} s)", flush=True)

    print(f"kdlab demo: a ConvNet teacher, then an MLP student alone and with KD, {seeds} seeds each")
    seed_everything(0, verbose=False)  # before the teacher is built: its initialisation is seeded too
    teacher = ConvNet()
    teacher_accuracy = _fit_and_test(
        DistillationModule(teacher, optimizer=SGD), "teacher", 0, teacher_epochs, out
    )
    progress(1, f"teacher, {teacher_epochs} epochs", teacher_accuracy)
    save_file(teacher.state_dict(), str(out / "teacher.safetensors"))

    students: dict[str, Callable[[], DistillationModule]] = {
        "student (scratch)": lambda: DistillationModule(MLP(), optimizer=SGD),
        "student (KD)": lambda: DistillationModule(
            MLP(),
            teacher=ConvNet(),
            teacher_weights=str(out / "teacher.safetensors"),
            distillers=[KD(weight=0.9, temperature=temperature)],
            ce_weight=0.1,
            optimizer=SGD,
        ),
    }
    runs = [{"model": "teacher", "seed": 0, "test_acc1": teacher_accuracy}]
    for name, build in students.items():
        for seed in range(seeds):
            seed_everything(seed, verbose=False)  # the student's initialisation depends on the seed
            accuracy = _fit_and_test(build(), name.split()[1].strip("()"), seed, epochs, out)
            runs.append({"model": name, "seed": seed, "test_acc1": accuracy})
            progress(len(runs), f"{name}, seed {seed}, {epochs} epochs", accuracy)

    teacher_params = sum(p.numel() for p in teacher.parameters())
    rows = [_summary("teacher", teacher, [teacher_accuracy], teacher_params)]
    for name in students:
        accuracies = [r["test_acc1"] for r in runs if r["model"] == name]
        rows.append(_summary(name, MLP(), accuracies, teacher_params))

    _write(runs, rows, out)
    _print_table(rows)
    print(f"results: {out / 'results.csv'}, {out / 'summary.json'}, {out / 'accuracy_vs_params.png'}")
    return rows


def _write(runs: list[dict], rows: list[dict], out: Path) -> None:
    import pandas as pd

    pd.DataFrame(runs).to_csv(out / "results.csv", index=False)
    (out / "summary.json").write_text(json.dumps(rows, indent=2))
    _plot(rows, out / "accuracy_vs_params.png")


def main(argv: list[str] | None = None) -> int:
    """``kdlab demo [--seeds N] [--epochs E] [--output DIR]``."""
    from jsonargparse import CLI

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", module="lightning")
    CLI(run_demo, args=argv, as_positional=False)
    return 0
