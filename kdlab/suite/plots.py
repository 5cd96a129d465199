"""Plots of a suite: accuracy against parameters, and validation accuracy per epoch per pair."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from kdlab.suite.results import pairs


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def accuracy_vs_params(results: pd.DataFrame, path: Path, checkpoint: str = "best") -> Path:
    """One point per (method, network): mean ± std top-1 test accuracy against parameters.

    Methods that share a network are spread a little sideways so their error bars stay apart.
    """
    plt = _pyplot()
    metric = f"{checkpoint}_acc1"
    methods = list(dict.fromkeys(results["method"]))
    figure, axis = plt.subplots(figsize=(7, 4.5))
    labelled: set[str] = set()
    for (method, network), group in results.groupby(["method", "student"], sort=False):
        accuracy = 100 * group[metric].astype(float)
        std = float(accuracy.std()) if len(accuracy) > 1 else 0.0
        index = methods.index(method)
        params = float(group["params"].iloc[0]) * 1.04 ** (index - (len(methods) - 1) / 2)
        axis.errorbar(
            params, accuracy.mean(), yerr=std, fmt="s" if method == "teacher" else "o", capsize=3,
            color=f"C{index % 10}", label=None if method in labelled else method,
        )  # fmt: skip
        labelled.add(method)
        if network not in labelled:  # name each network once
            labelled.add(network)
            axis.annotate(
                network, (params, accuracy.mean()), textcoords="offset points", xytext=(6, 6), fontsize=7
            )
    axis.set_xscale("log")
    axis.set_xlabel("parameters")
    axis.set_ylabel(f"top-1 test accuracy (%), {checkpoint} checkpoint")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, loc="best")
    axis.margins(x=0.2, y=0.1)
    return _save(figure, path, plt)


def read_curve(run_dir: str | Path, key: str = "val/acc1") -> pd.Series:
    """``key`` per epoch from a run's CSV logs (every ``logs/version_*``, so resumed runs join up)."""
    frames = []
    versions = sorted(Path(run_dir).glob("logs/version_*/metrics.csv"), key=_version_number)
    for csv in versions:
        metrics = pd.read_csv(csv)
        if key in metrics and "epoch" in metrics:
            frames.append(metrics.dropna(subset=[key])[["epoch", key]])
    if not frames:
        return pd.Series(dtype=float, name=key)
    joined = pd.concat(frames).groupby("epoch")[key].last()
    return joined.rename(key)


def training_curves(results: pd.DataFrame, path: Path, key: str = "val/acc1") -> Path:
    """One panel per teacher → student pair: ``key`` per epoch, mean over seeds, per method (with
    the vanilla student and, dashed, the teacher's own training)."""
    plt = _pyplot()
    columns = pairs(results) or [("", "")]
    width = min(4, len(columns))
    height = -(-len(columns) // width)
    figure, axes = plt.subplots(height, width, figsize=(4.2 * width, 3.4 * height), squeeze=False)
    for axis in axes.flat[len(columns) :]:
        axis.set_visible(False)
    for axis, (teacher, student) in zip(axes.flat, columns):
        for method, group in _curve_groups(results, teacher, student).items():
            curves = [read_curve(run_dir, key) for run_dir in group["run_dir"]]
            curves = [c for c in curves if len(c)]
            if curves:
                mean = pd.concat(curves, axis=1).mean(axis=1)
                axis.plot(mean.index, 100 * mean.values, "--" if method == "teacher" else "-", label=method)
        axis.set_title(f"{teacher} → {student}" if teacher else student, fontsize=9)
        axis.set_xlabel("epoch")
        axis.set_ylabel(f"{key} (%)")
        axis.grid(alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=7)
    return _save(figure, path, plt)


def _curve_groups(results: pd.DataFrame, teacher: str, student: str) -> dict[str, pd.DataFrame]:
    """The runs drawn in a pair's panel: its teacher, the vanilla student, each method."""
    runs = results[results["role"] == "run"]
    groups = {
        "teacher": results[(results["role"] == "teacher") & (results["student"] == teacher)],
        "vanilla": runs[(runs["teacher"] == "") & (runs["student"] == student)],
    }
    if teacher:
        distilled = runs[(runs["teacher"] == teacher) & (runs["student"] == student)]
        groups |= dict(iter(distilled.groupby("method", sort=False)))
    return groups


def _version_number(csv: Path) -> int:
    match = re.search(r"version_(\d+)", str(csv))
    return int(match.group(1)) if match else 0


def _save(figure, path: Path, plt) -> Path:
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
