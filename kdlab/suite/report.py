"""A suite's results as KD papers print them: ``results.csv``, a markdown table, plots.

The table has one column per teacher → student pair and the rows the CRD/DKD tables have:
the teacher, the student trained alone (vanilla), then each method; cells are the mean ± sample
standard deviation of top-1 test accuracy (%) over seeds. Papers differ on which checkpoint
they report, so there are two tables: the best-validation-epoch and the last-epoch checkpoint.

The rows come from :mod:`kdlab.suite.results` (``results.csv``'s columns are described there).
"""

from __future__ import annotations

import statistics
from pathlib import Path

import pandas as pd

from kdlab.suite.plan import Suite
from kdlab.suite.plots import accuracy_vs_params, training_curves
from kdlab.suite.results import RESULT, collect, pairs

CHECKPOINTS = {"best": "best-validation-epoch checkpoint", "last": "last-epoch checkpoint"}


def paper_table(results: pd.DataFrame, checkpoint: str = "best") -> tuple[list[tuple[str, str]], list[list]]:
    """Columns (pairs) and rows ``[label, cell, cell, ...]`` of the table for ``checkpoint``."""
    metric = f"{checkpoint}_acc1"
    columns = pairs(results)
    runs = results[results["role"] == "run"]
    teachers = results[results["role"] == "teacher"]
    teacher_row, student_row = ["Teacher"], ["Student"]
    for teacher, student in columns:
        trained = teachers[teachers["student"] == teacher][metric]
        measured = runs[(runs["teacher"] == teacher) & (runs["student"] == student)]["teacher_acc1"].dropna()
        # A published teacher (no training run): its accuracy as the students' test runs measured it.
        teacher_row.append(cell(trained) if len(trained) else cell(measured[:1], note="*"))
        student_row.append(cell(runs[(runs["teacher"] == "") & (runs["student"] == student)][metric]))
    rows = [teacher_row, student_row] if any(t for t, _ in columns) else [student_row]
    methods = [m for m in dict.fromkeys(runs["method"]) if m != "vanilla"]
    for method in methods:
        mine = runs[runs["method"] == method]
        row = [method]
        for teacher, student in columns:
            row.append(cell(mine[(mine["teacher"] == teacher) & (mine["student"] == student)][metric]))
        rows.append(row)
    return columns, rows


def cell(values: pd.Series, note: str = "") -> str:
    """``mean ± std`` in percent over seeds (just the mean for one seed, ``–`` for none)."""
    values = [100 * float(v) for v in values if pd.notna(v)]
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.2f}{note}"
    return f"{statistics.fmean(values):.2f} ± {statistics.stdev(values):.2f}{note}"


def markdown(results: pd.DataFrame, title: str, failed: list[str] | None = None) -> str:
    """The two tables (best and last checkpoint) as one markdown document."""
    seeds = sorted(results[results["role"] == "run"]["seed"].unique().tolist())
    lines = [f"# {title}", ""]
    lines.append(f"Top-1 test accuracy (%), mean ± sample std over seeds {seeds}.")
    published = False
    for checkpoint, label in CHECKPOINTS.items():
        columns, rows = paper_table(results, checkpoint)
        published |= any(c.endswith("*") for row in rows for c in row[1:])
        lines += ["", f"## {label.capitalize()}", ""]
        header = ["", *(f"{t} → {s}" if t else s for t, s in columns)]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" + "---:|" * len(columns))
        lines += ["| " + " | ".join(row) + " |" for row in rows]
    if published:
        lines += [
            "",
            "\\* teacher not trained by the suite: its accuracy as measured in the students' test runs.",
        ]
    if failed:
        lines += ["", "Not finished (no result yet): " + ", ".join(failed) + "."]
    return "\n".join(lines) + "\n"


def write_report(suite: Suite) -> dict[str, Path]:
    """Write ``results.csv``, ``table.md`` and the plots into the suite directory."""
    suite.output.mkdir(parents=True, exist_ok=True)
    results = collect(suite)
    unfinished = [f"{t.name} (seed {t.seed})" for t in suite.tasks if not (t.run_dir / RESULT).is_file()]
    paths = {"results": suite.output / "results.csv", "table": suite.output / "table.md"}
    results.to_csv(paths["results"], index=False)
    paths["table"].write_text(markdown(results, f"Suite {suite.name}", unfinished))
    if len(results):
        paths["accuracy_vs_params"] = accuracy_vs_params(results, suite.output / "accuracy_vs_params.png")
        paths["training_curves"] = training_curves(results, suite.output / "training_curves.png")
    return paths
