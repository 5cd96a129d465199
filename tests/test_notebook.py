"""notebooks/results.ipynb runs top to bottom on a real suite's outputs (the tiny digits suite)."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from .suite_fixtures import tiny_suite  # noqa: F401 (fixture)

REPO = Path(__file__).parents[1]


def test_results_notebook_draws_the_suite_table_and_plots(tiny_suite, monkeypatch):  # noqa: F811
    import nbformat
    from nbclient import NotebookClient

    assert tiny_suite.exit_code == 0
    monkeypatch.setenv("KDLAB_SUITE_DIR", str(tiny_suite.output))
    # The kernel is a child process: it must import this checkout's kdlab.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    notebook = nbformat.read(REPO / "notebooks" / "results.ipynb", as_version=4)
    assert "parameters" in notebook.cells[1].metadata.get("tags", []), "papermill can set SUITE_DIR"
    NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}
    ).execute()

    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    shown = [o.get("text", "") for o in outputs]
    shown += [o.get("data", {}).get(kind, "") for o in outputs for kind in ("text/plain", "text/markdown")]
    text = "\n".join(map(str, shown))
    assert f"5 finished runs in {tiny_suite.output}" in text
    table = (tiny_suite.output / "table.md").read_text().split("\n", 1)[1]
    assert table.strip() in text, "the notebook shows the suite's own table"
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 2  # size plot and training curves
    results = pd.read_csv(tiny_suite.output / "results.csv")
    assert f"{results['best_acc1'].iloc[1]:.4f}"[:5] in text, "the results frame is displayed"
