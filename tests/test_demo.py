"""kdlab demo: teacher, scratch and KD students on the digits, as a table, CSV, JSON and plot."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from kdlab.cli import main
from kdlab.tools.demo import run_demo


def test_demo_writes_table_csv_json_and_plot(tmp_path, capsys):
    assert main(["demo", "--seeds=2", "--epochs=2", "--teacher_epochs=2", f"--output={tmp_path}"]) == 0
    printed = capsys.readouterr().out
    assert "[1/5] teacher, 2 epochs: test acc1" in printed and "[5/5] student (KD), seed 1" in printed
    assert "student (KD)" in printed and "student (scratch)" in printed and "teacher" in printed
    runs = pd.read_csv(tmp_path / "results.csv")
    assert sorted(runs["model"].value_counts().items()) == [
        ("student (KD)", 2),
        ("student (scratch)", 2),
        ("teacher", 1),
    ]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [row["model"] for row in summary] == ["teacher", "student (scratch)", "student (KD)"]
    assert summary[2]["params"] == summary[1]["params"] < summary[0]["params"]
    assert summary[2]["compression"] == pytest.approx(summary[0]["params"] / summary[2]["params"])
    assert all(row["cpu_latency_ms"] > 0 for row in summary)
    assert (tmp_path / "accuracy_vs_params.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "teacher.safetensors").is_file()


@pytest.mark.slow
def test_full_demo_kd_student_is_at_least_as_accurate_as_scratch(tmp_path):
    rows = {row["model"]: row for row in run_demo(output=str(tmp_path))}
    assert rows["student (KD)"]["test_acc1_mean"] >= rows["student (scratch)"]["test_acc1_mean"]
    assert rows["teacher"]["test_acc1_mean"] > 0.97


def test_the_demo_gives_the_same_accuracies_every_time(tmp_path):
    tables = []
    for attempt in ("first", "second"):
        main(["demo", "--seeds=1", "--epochs=2", "--teacher_epochs=2", f"--output={tmp_path / attempt}"])
        tables.append(pd.read_csv(tmp_path / attempt / "results.csv"))
    pd.testing.assert_frame_equal(tables[0], tables[1])
