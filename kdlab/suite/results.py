"""Reading a suite's results: each task's ``result.json``, and ``results.csv``.

``results.csv`` has one row per finished task: ``role`` is ``teacher`` for the suite's teacher
runs (their network is in ``student``) and ``run`` otherwise; ``method`` is the row label
(``vanilla`` for a run without a teacher); ``teacher``/``student`` are architecture names (class
names, torchvision's model name); ``*_epoch`` and ``*_acc1``/``*_acc5`` are the best and last
checkpoints' epochs and test accuracies; ``teacher_acc1`` is the teacher's test accuracy as
measured in the run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from kdlab.suite.plan import Suite

RESULT = "result.json"  # written into each task's run directory when it finished

COLUMNS = [
    "run", "role", "method", "teacher", "student", "seed", "best_epoch", "best_acc1", "best_acc5",
    "last_epoch", "last_acc1", "last_acc5", "teacher_acc1", "params", "seconds", "run_dir",
]  # fmt: skip


def collect(suite: Suite) -> pd.DataFrame:
    """The results of every finished task, in plan order."""
    rows = [
        json.loads((task.run_dir / RESULT).read_text())
        for task in suite.tasks
        if (task.run_dir / RESULT).is_file()
    ]
    return pd.DataFrame(rows, columns=COLUMNS)


def load_results(suite_dir: str | Path) -> pd.DataFrame:
    """``results.csv`` of a suite directory (teacher/student empty strings, not NaN)."""
    results = pd.read_csv(Path(suite_dir) / "results.csv")
    for column in ("teacher", "student", "method", "role"):
        results[column] = results[column].fillna("").astype(str)
    return results


def pairs(results: pd.DataFrame) -> list[tuple[str, str]]:
    """The table's columns: teacher → student pairs of the distillation runs, in order of first
    appearance (the vanilla students alone when nothing was distilled)."""
    students = results[results["role"] == "run"]
    distilled = students[students["teacher"] != ""]
    source = distilled if len(distilled) else students
    return list(dict.fromkeys(zip(source["teacher"], source["student"])))
