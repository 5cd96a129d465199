"""``kdlab report``: print and plot a finished run from its files, for those who do not use W&B.

    kdlab report runs/digits/kd            # -> runs/digits/kd/report/{curves.png,summary.json}

It reads the run's CSV log (``logs/version_N/metrics.csv``, the newest fit unless ``--version N``)
or its W&B run (the ``.wandb`` log of an offline or online run) and prints the files read, the
final metrics (last epoch's train/val epoch means, test metrics if the run was tested), the best
``val/acc1`` and its epoch, the checkpoints and the compression table logged when fit started.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from kdlab.errors import KDLabError
from kdlab.tools.run_compression import compression_table, read_compression
from kdlab.tools.run_curves import plot_curves
from kdlab.tools.run_files import FIT_PREFIXES, RunFiles, read_run

BEST = "val/acc1"  # the metric BestAndLastCheckpoint keeps best.ckpt by
CHECKPOINTS = {"best.ckpt": f"best {BEST}", "last.ckpt": "last epoch"}


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``kdlab report``; returns the exit status (2 for a run it cannot report)."""
    args = _parser().parse_args(argv)
    try:
        run = read_run(args.run_dir, args.version)
    except KDLabError as error:
        print(f"kdlab report: error: {error}", file=sys.stderr)
        return 2
    summary = summarize(run)
    given = Path(args.run_dir)
    output = Path(args.output) if args.output else (given.parent if given.is_file() else given) / "report"
    output.mkdir(parents=True, exist_ok=True)
    if not args.no_plot:
        summary["plots"] = plot_curves(run, output / "curves.png", (summary["best"] or {}).get("epoch"))
    (output / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    console = Console()
    print_report(run, summary, console)
    written = [output / "summary.json"] + ([] if args.no_plot else [output / "curves.png"])
    _line(console, f"kdlab report: wrote {', '.join(map(str, written))}")
    return 0


def summarize(run: RunFiles) -> dict[str, Any]:
    """What ``summary.json`` holds: the source, final metrics, best epoch, checkpoints, compression."""
    final = final_metrics(run)
    fit_epochs = [
        epoch for key, (_, epoch) in final.items() if key.startswith(FIT_PREFIXES) and epoch is not None
    ]
    summary = {
        "source": {
            "kind": run.kind,
            "files": [str(f) for f in run.files],
            "version": run.version,
            "versions": run.versions,
        },
        "model": _model(run.config),
        "final_epoch": max(fit_epochs, default=None),
        "final": {key: value for key, (value, _) in final.items()},
        "best": best_epoch(run),
        "checkpoints": checkpoints(run.root),
    }
    summary["compression"], source = read_compression(run)
    if source is not None:
        summary["source"]["files"].append(str(source))
    if run.kind == "wandb":
        summary["wandb_summary"] = {k: v for k, v in run.summary.items() if _plain(v)}
    return summary


def final_metrics(run: RunFiles) -> dict[str, tuple[float, int | None]]:
    """Each train/, val/ and test/ key's last value and its epoch (None for test metrics and keys
    logged without one); a key logged at every step counts by its epoch means."""
    epochs = run.by_epoch()
    final = {}
    for key in epochs:
        values = epochs[key].dropna()
        if key.startswith((*FIT_PREFIXES, "test/")) and len(values):  # a test's epoch is not the fit's
            final[key] = (float(values.iloc[-1]), None if key.startswith("test/") else int(values.index[-1]))
    for key in run.history:  # logged without an epoch, beside an epoch's metrics (worst-class accuracy)
        values = run.history[key].dropna()
        wanted = key.startswith((*FIT_PREFIXES, "test/")) and not key.endswith("_step")
        if wanted and key not in final and len(values):
            final[key] = (float(values.iloc[-1]), None)
    return dict(sorted(final.items(), key=lambda item: (_stage(item[0]), item[0])))


def best_epoch(run: RunFiles, metric: str = BEST) -> dict[str, Any] | None:
    """The epoch of the highest ``metric`` (the first, on a tie, as the checkpoint keeps it), or None."""
    epochs = run.by_epoch()
    if metric not in epochs or epochs[metric].isna().all():
        return None
    epoch = int(epochs[metric].idxmax())
    return {"metric": metric, "value": float(epochs[metric][epoch]), "epoch": epoch}


def checkpoints(root: Path) -> dict[str, Any]:
    """The checkpoint files of the run (``checkpoints/*.ckpt``, SLURM's ``hpc_ckpt_*.ckpt``)."""
    files = sorted((root / "checkpoints").glob("*.ckpt")) + sorted(root.glob("hpc_ckpt_*.ckpt"))
    named = {name: root / "checkpoints" / f"{name}.ckpt" for name in ("best", "last")}
    return {
        "folder": str(root / "checkpoints"),
        **{name: str(path) if path.is_file() else None for name, path in named.items()},
        "files": [{"path": str(f), "bytes": f.stat().st_size} for f in files],
    }


def print_report(run: RunFiles, summary: dict[str, Any], console: Console) -> None:
    """The report of ``summarize(run)`` as text and tables on ``console``."""
    log = "CSV log" if run.kind == "csv" else "W&B run"
    if run.version is None:
        _line(console, f"kdlab report: {log} {run.log_dir}")
    else:
        choose = "--version N" if run.kind == "csv" else "--version RUN_ID"
        others = f" (of {', '.join(run.versions)}; {choose} for another)" if len(run.versions) > 1 else ""
        _line(console, f"kdlab report: {log} {run.version} of {run.root}{others}")
    for path in summary["source"]["files"]:
        _line(console, f"  read {path}")
    for note in run.notes:
        _line(console, f"  note: {note}")
    model = summary["model"]
    if model:
        _line(console, "  " + ", ".join(f"{role} {name}" for role, name in model.items()))
    epoch = summary["final_epoch"]
    table = Table(title="Final metrics" + ("" if epoch is None else f" (epoch {epoch})"))
    for column, justify in (("metric", "left"), ("value", "right"), ("epoch", "right")):
        table.add_column(column, justify=justify)
    for key, (value, logged) in final_metrics(run).items():
        table.add_row(key, _number(value), "" if logged is None else str(logged))
    console.print(table)
    best = summary["best"]
    if best is None:
        _line(console, f"no {BEST} logged: no best epoch")
    else:
        _line(
            console,
            f"best {BEST} {_number(best['value'])} ({100 * best['value']:.2f}%) at epoch {best['epoch']}",
        )
    _print_checkpoints(summary["checkpoints"], console)
    if summary["compression"]:
        console.print(compression_table(summary["compression"]))


def _print_checkpoints(found: dict[str, Any], console: Console) -> None:
    if not found["files"]:
        _line(console, f"no checkpoints in {found['folder']}")
        return
    _line(console, f"checkpoints in {found['folder']}:")
    table = Table()
    for column, justify in (("file", "left"), ("kept", "left"), ("size", "right")):
        table.add_column(column, justify=justify)
    for entry in found["files"]:
        name = Path(entry["path"]).name
        kept = CHECKPOINTS.get(name, "SLURM requeue" if name.startswith("hpc_ckpt_") else "")
        table.add_row(name, kept, f"{entry['bytes'] / 1024:,.1f} KiB")
    console.print(table)


def _model(config: dict[str, Any]) -> dict[str, str]:
    """Student, teacher and distillers by class name, from the run's hyper-parameters."""
    named = {}
    for role in ("student", "teacher"):
        spec = config.get(role)
        if isinstance(spec, dict) and spec.get("class_path"):
            named[role] = str(spec["class_path"])
    distillers = [d.get("class_path", "") for d in config.get("distillers") or [] if isinstance(d, dict)]
    if distillers:
        named["distillers"] = ", ".join(str(d).rpartition(".")[2] for d in distillers)
    return named


def _stage(key: str) -> int:
    return next(i for i, prefix in enumerate(("train/", "val/", "test/", "")) if key.startswith(prefix))


def _number(value: float) -> str:
    return f"{value:.4f}" if value == 0 or 1e-3 <= abs(value) < 1e5 else f"{value:.4g}"


def _plain(value: Any) -> bool:
    """A number, or a dict of numbers (a summary's ``{"max": ...}``): what summary.json keeps of W&B's."""
    if isinstance(value, dict):
        return bool(value) and all(_plain(v) for v in value.values())
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _line(console: Console, text: str) -> None:
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kdlab report", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a kdlab fit run directory, log folder or W&B run")
    parser.add_argument("--version", help="log version N (version_N) or W&B run id (default: the newest fit)")
    parser.add_argument(
        "--output", help="where to write curves.png and summary.json (default: RUN_DIR/report)"
    )
    parser.add_argument("--no-plot", action="store_true", help="write summary.json only, no curves.png")
    return parser
