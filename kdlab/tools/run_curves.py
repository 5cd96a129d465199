"""The curves of one run for ``kdlab report``: losses and accuracies against the epoch (or the step,
where the run logged per step), drawn with matplotlib's non-interactive backend."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from kdlab.tools.run_files import RunFiles

LOSSES = ("train/loss", "train/loss_epoch", "val/loss")
ACCURACIES = {  # key: label
    "train/acc1": "train/acc1",
    "val/acc1": "val/acc1",
    "train/agreement": "train agreement with the teacher",
    "val/agreement": "val agreement with the teacher",
}


def plot_curves(run: RunFiles, path: Path, best_epoch: int | None = None) -> dict[str, Any]:
    """Write the loss panel and the accuracy panel of ``run`` to ``path`` (PNG).

    Args:
        run: The run's files.
        path: The PNG to write.
        best_epoch: The epoch of the best ``val/acc1``, marked on its curve (None: no mark).

    Returns:
        What was drawn: ``{"path", "loss": {"x", "series"}, "accuracy": {"x", "series"}}``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = run.by_epoch()
    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(10, 4))
    drawn = {
        "path": str(path),
        "loss": _losses(loss_axis, run, epochs),
        "accuracy": _accuracies(accuracy_axis, epochs, best_epoch),
    }
    title = run.version or run.log_dir.name
    figure.suptitle(f"{run.root.name} ({title})" if run.root.name else title, fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return drawn


def _losses(axis: Any, run: RunFiles, epochs: pd.DataFrame) -> dict[str, Any]:
    per_step = {key: values for key, values in run.by_step().items() if key in LOSSES}
    keys = [key for key in LOSSES if key in epochs and epochs[key].notna().any()]
    series = []
    if per_step:  # steps on the x axis; epoch means at the last step of their epoch
        last_step = run.history.dropna(subset=["epoch", "step"]).groupby("epoch")["step"].max()
        last_step.index = last_step.index.astype(int)
        for key, values in per_step.items():
            axis.plot(values.index, values.values, linewidth=0.8, alpha=0.6, label=f"{key} (per step)")
            series.append(f"{key} (per step)")
        for key in keys:
            values = epochs[key].dropna()
            label = f"{key} (epoch mean)" if key.startswith("train/") else key
            axis.plot(last_step.reindex(values.index), values.values, _style(values), label=label)
            series.append(key)
    else:
        for key in keys:
            values = epochs[key].dropna()
            axis.plot(values.index, values.values, _style(values), label=key)
            series.append(key)
    x = "step" if per_step else "epoch"
    _finish(axis, x, "loss", "Loss", bool(series))
    return {"x": x, "series": series}


def _accuracies(axis: Any, epochs: pd.DataFrame, best_epoch: int | None) -> dict[str, Any]:
    series = []
    for key, label in ACCURACIES.items():
        if key in epochs and epochs[key].notna().any():
            values = epochs[key].dropna()
            axis.plot(values.index, 100 * values.values, _style(values), label=label)
            series.append(key)
    if best_epoch is not None and "val/acc1" in series:
        best = 100 * epochs["val/acc1"][best_epoch]
        axis.plot([best_epoch], [best], "*", markersize=14, color="gold", markeredgecolor="black")
        axis.annotate(
            f"best {best:.2f}%", (best_epoch, best), textcoords="offset points", xytext=(-8, -14), ha="right"
        )
    if "test/acc1" in epochs and epochs["test/acc1"].notna().any():
        test = 100 * epochs["test/acc1"].dropna().iloc[-1]
        axis.axhline(test, linestyle="--", color="gray", label=f"test/acc1 {test:.2f}%")
        series.append("test/acc1")
    _finish(axis, "epoch", "accuracy (%)", "Accuracy", bool(series))
    return {"x": "epoch", "series": series}


def _style(values: pd.Series) -> str:
    """Lines with a dot per epoch while the dots stay apart."""
    return ".-" if len(values) <= 40 else "-"


def _finish(axis: Any, x: str, y: str, title: str, drawn: bool) -> None:
    from matplotlib.ticker import MaxNLocator

    axis.set_title(title, fontsize=10)
    axis.set_xlabel(x)
    axis.set_ylabel(y)
    axis.grid(alpha=0.3)
    if x == "epoch":
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    if drawn:
        axis.legend(fontsize=8)
    else:
        axis.text(0.5, 0.5, "not logged", ha="center", va="center", transform=axis.transAxes)
