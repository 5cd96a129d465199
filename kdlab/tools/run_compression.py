"""The compression table of a run, as ``kdlab fit`` recorded it when fit started.

:class:`~kdlab.callbacks.CompressionReport` (on in every ``kdlab fit``) logs its numbers through
every logger, so they are in ``metrics.csv`` and in the W&B history as
``compression/<network>/<quantity>``; a :class:`~kdlab.callbacks.KDDashboard` measuring without it
writes them to ``dashboard/compression.csv`` only (in the CSV log folder, else the run directory).
"""

from __future__ import annotations

import csv
from pathlib import Path

from rich.table import Table

from kdlab.callbacks.compression import NOISY_SPREAD
from kdlab.tools.run_files import RunFiles

Report = dict[str, dict[str, float]]  # network (teacher, student, model, ratio) -> quantity -> value
NETWORKS = ("teacher", "student", "model", "ratio")
QUANTITIES = {  # quantity: (label, format)
    "params": ("parameters", "{:,.0f}"),
    "flops": ("FLOPs / image", "{:,.0f}"),
    "bytes": ("safetensors bytes", "{:,.0f}"),
    "cpu_latency_ms": ("CPU latency / image (ms)", "{:.3f}"),
    "gpu_latency_ms": ("GPU latency / image (ms)", "{:.3f}"),
}


def read_compression(run: RunFiles) -> tuple[Report | None, Path | None]:
    """The run's compression numbers and the file they came from beside the log (None when they are
    in the log itself); (None, None) when the run recorded none."""
    report: Report = {}
    for column in run.history:
        parts = str(column).split("/")
        values = run.history[column].dropna()
        if len(parts) == 3 and parts[0] == "compression" and len(values):
            report.setdefault(parts[1], {})[parts[2]] = float(values.iloc[-1])
    if report:
        return report, None
    for path in (run.log_dir / "dashboard" / "compression.csv", run.root / "dashboard" / "compression.csv"):
        if path.is_file():
            with path.open(newline="") as handle:
                for row in csv.DictReader(handle):
                    quantity = row.pop("quantity")
                    for network, value in row.items():
                        if value:
                            network = "ratio" if network == "student / teacher" else network
                            report.setdefault(network, {})[quantity] = float(value)
            return report, path
    return None, None


def compression_table(report: Report) -> Table:
    """The numbers as CompressionReport prints them, with a caption when latencies were noisy."""
    networks = [n for n in NETWORKS if n in report]
    noisy = [
        f"{network} {key.split('_')[0].upper()}"
        for network in networks
        for key, value in report[network].items()
        if key.endswith("_spread") and value > NOISY_SPREAD
    ]
    caption = None
    if noisy:
        caption = f"latency varied over {NOISY_SPREAD:g}x between passes ({', '.join(noisy)}): a busy machine"
    table = Table(title="Compression (measured when fit started)", caption=caption)
    table.add_column("")
    for network in networks:
        table.add_column("student / teacher" if network == "ratio" else network, justify="right")
    for key, (label, fmt) in QUANTITIES.items():
        if any(key in report[n] for n in networks):
            formats = ["{:.3g}" if n == "ratio" else fmt for n in networks]
            cells = [f.format(report[n][key]) if key in report[n] else "" for f, n in zip(formats, networks)]
            table.add_row(label, *cells)
    return table
