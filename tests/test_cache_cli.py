"""``kdlab cache`` fills a config's cache upfront; ``kdlab fit`` with the same config then hits it."""

from __future__ import annotations

import csv
from pathlib import Path

import torch
import yaml

from kdlab.cli import main
from kdlab.data.augment import draw_views

from .datagen import write_cifar10
from .kd_helpers import random_teacher_file

ADD_ON = Path(__file__).parents[1] / "experiments" / "cache" / "cifar.yaml"


def _config(tmp_path: Path) -> Path:
    write_cifar10(tmp_path, per_batch=20)
    teacher = random_teacher_file(tmp_path / "teacher.safetensors", seed=2)
    config = {
        "seed_everything": 0,
        "model": {
            "class_path": "kdlab.DistillationModule",
            "init_args": {
                "student": {"class_path": "kdlab.models.cifar.resnet8"},
                "teacher": {"class_path": "kdlab.models.cifar.resnet8"},
                "teacher_weights": str(teacher),
                "distillers": [{"class_path": "kdlab.losses.KD"}],
            },
        },
        "data": {
            "class_path": "kdlab.data.CIFARDataModule",
            "init_args": {"dataset": "cifar10", "root": str(tmp_path), "batch_size": 32},
        },
        "trainer": {
            "max_epochs": 2,
            "limit_val_batches": 0,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "default_root_dir": str(tmp_path / "run"),
        },
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_fill_upfront_then_fit_without_running_the_teacher(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KDLAB_CACHE", str(tmp_path / "cache"))
    config = _config(tmp_path)
    args = ["-c", str(config), "-c", str(ADD_ON), "--data.init_args.views_per_sample", "3"]
    assert main(["cache", *args]) == 0
    assert "300 rows computed" in capsys.readouterr().out  # 3 views × 100 samples
    assert main(["cache", *args]) == 0
    again = capsys.readouterr().out
    assert "0 rows computed" in again and "300 already there" in again
    assert main(["fit", *args]) == 0
    metrics = next((tmp_path / "run").rglob("metrics.csv")).read_text().splitlines()
    rows = list(csv.DictReader(metrics))
    rates = [float(r["cache/hit_rate"]) for r in rows if r.get("cache/hit_rate")]
    assert rates == [1.0, 1.0]


def test_fill_by_epochs_and_clear_errors(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KDLAB_CACHE", str(tmp_path / "cache"))
    config = _config(tmp_path)
    with_cache = ["-c", str(config), "--trainer.callbacks+=kdlab.callbacks.TeacherCache"]
    assert main(["cache", *with_cache, "--epochs", "3"]) == 0
    out = capsys.readouterr().out
    indices = torch.arange(100)
    distinct = len({(i, v) for e in range(3) for i, v in zip(range(100), draw_views(indices, e, 0).tolist())})
    assert distinct < 300  # a few samples draw a view twice in three epochs; computed once
    assert "epochs 0..2" in out and f"  {distinct} rows computed" in out
    assert f"{300 - distinct} already there" in out
    assert main(["cache", "-c", str(config)]) == 2
    assert "add {class_path: kdlab.callbacks.TeacherCache}" in capsys.readouterr().err
