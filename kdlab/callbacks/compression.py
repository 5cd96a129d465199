"""A compression report at the start of fit: what the student saves relative to its teacher."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn

from kdlab.models.profile import count_flops, count_parameters, latency_quantiles, serialized_bytes

NOISY_SPREAD = 2.0  # 90th over 10th percentile of the timed passes above which latency is flagged


class CompressionReport(Callback):
    """Measure teacher and student when fit starts, print a table, log ``compression/...``.

    For each network: parameters, FLOPs per image (``torch.utils.flop_counter``, 2 per
    multiply-add), size of its safetensors state dict, and median per-image latency on CPU
    (and on the GPU when one is present), plus student/teacher ratios. Runs on global rank
    zero only; the numbers are kept in ``self.report`` and logged through every logger as
    ``compression/<network>/<quantity>`` and ``compression/ratio/<quantity>``.

    Args:
        input_shape: Shape of one input without the batch dimension, e.g. ``[3, 32, 32]``;
            None takes the datamodule's ``input_shape``.
        latency_batch_size: Images per timed forward pass (1 = single-image latency).
        warmup: Untimed forward passes before timing.
        repeats: Timed forward passes (the median is reported).
        gpu: Also time on the GPU when CUDA is available.
    """

    def __init__(
        self,
        input_shape: Sequence[int] | None = None,
        latency_batch_size: int = 1,
        warmup: int = 3,
        repeats: int = 20,
        gpu: bool = True,
    ) -> None:
        super().__init__()
        self.input_shape = None if input_shape is None else tuple(input_shape)
        self.latency_batch_size = latency_batch_size
        self.warmup = warmup
        self.repeats = repeats
        self.gpu = gpu
        self.report: dict[str, dict[str, float]] = {}

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        self.report = self.measure_run(trainer, pl_module)
        _print_table(self.report, self._input_shape(trainer), self.timing_label())
        busy = [
            f"{net} {key.split('_')[0].upper()}"
            for net, row in self.report.items()
            if net != "ratio"
            for key, value in row.items()
            if key.endswith("_spread") and value > NOISY_SPREAD
        ]
        if busy:
            rank_zero_warn(
                f"CompressionReport: latency varied more than {NOISY_SPREAD}x between passes "
                f"({', '.join(busy)}): the machine was busy; measure on a quiet machine (e.g. "
                "benchmarks/zoo_compression.py) before quoting these latencies"
            )
        metrics = {
            f"compression/{net}/{key}": value
            for net, row in self.report.items()
            for key, value in row.items()
        }
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)

    def measure_run(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, dict[str, float]]:
        """The numbers of the run's networks by name (``student``, ``teacher``, their ``ratio``;
        ``model`` for a module without a student), without printing or logging them.

        Raises:
            ValueError: no input shape (neither given nor the datamodule's ``input_shape``).
        """
        shape = self._input_shape(trainer)
        report = {name: self.measure(model, shape) for name, model in _networks(pl_module).items()}
        if "teacher" in report:
            student, teacher = report["student"], report["teacher"]
            report["ratio"] = {
                key: student[key] / teacher[key]
                for key in student
                if teacher[key] and not key.endswith("_spread")
            }
        return report

    def measure(self, model: nn.Module, input_shape: Sequence[int]) -> dict[str, float]:
        """The numbers of one network (parameters, flops, bytes, cpu_latency_ms[, gpu_latency_ms])."""
        timing = {"batch_size": self.latency_batch_size, "warmup": self.warmup, "repeats": self.repeats}
        row = {
            "params": float(count_parameters(model)),
            "flops": float(count_flops(model, input_shape)),
            "bytes": float(serialized_bytes(model)),
        }
        devices = {"cpu": "cpu"} | ({"gpu": "cuda"} if self.gpu and torch.cuda.is_available() else {})
        for label, device in devices.items():
            low, median, high = latency_quantiles(model, input_shape, device, **timing)
            row[f"{label}_latency_ms"] = 1e3 * median
            row[f"{label}_latency_spread"] = high / low  # 90th over 10th percentile of the passes
        return row

    def timing_label(self) -> str:
        """How the latencies were measured, for the table."""
        threads = torch.get_num_threads()
        return (
            f"latency: median of {self.repeats} passes after {self.warmup} warm-up, "
            f"{self.latency_batch_size} image(s) per pass, {threads} CPU thread{'s' if threads > 1 else ''}"
        )

    def _input_shape(self, trainer: Trainer) -> tuple[int, ...]:
        if self.input_shape is not None:
            return self.input_shape
        datamodule = getattr(trainer, "datamodule", None)
        shape = getattr(datamodule, "input_shape", None)
        if shape is None:
            raise ValueError(
                f"CompressionReport needs the shape of one input: {type(datamodule).__name__} has no "
                "input_shape attribute. Pass CompressionReport(input_shape=[channels, height, width])."
            )
        return tuple(shape)


def _networks(pl_module: LightningModule) -> dict[str, nn.Module]:
    student = getattr(pl_module, "student", None)
    if not isinstance(student, nn.Module):
        return {"model": pl_module}
    teacher = getattr(pl_module, "teacher", None)
    return {"student": student} | ({"teacher": teacher} if isinstance(teacher, nn.Module) else {})


_ROWS = (
    ("params", "parameters", "{:,.0f}"),
    ("flops", "FLOPs / image", "{:,.0f}"),
    ("bytes", "safetensors bytes", "{:,.0f}"),
    ("cpu_latency_ms", "CPU latency / image (ms)", "{:.3f}"),
    ("gpu_latency_ms", "GPU latency / image (ms)", "{:.3f}"),
)


def _print_table(report: dict[str, dict[str, float]], shape: Sequence[int], caption: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Compression report (input {'×'.join(map(str, shape))})", caption=caption)
    table.add_column("")
    columns = [name for name in ("teacher", "student", "model", "ratio") if name in report]
    for name in columns:
        table.add_column("student / teacher" if name == "ratio" else name, justify="right")
    for key, label, fmt in _ROWS:
        if any(key in report[name] for name in columns):
            formats = {name: "{:.3f}" if name == "ratio" else fmt for name in columns}
            cells = [
                formats[name].format(report[name][key]) if key in report[name] else "" for name in columns
            ]
            table.add_row(label, *cells)
    Console().print(table)
