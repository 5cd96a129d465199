"""KDDashboard and RunConfig: per-class tables, reliability diagrams, compression table, temperatures
and the full run config, with the CSV logger and with an offline W&B run."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import save_file
from torchmetrics.classification import BinaryCalibrationError

from kdlab.callbacks._tally import EvaluationTally, per_class_rows, reliability_rows
from kdlab.cli import main
from kdlab.models import MLP, ConvNet

from .test_cli import _args
from .wandb_records import config, history, image_files, table

REPO = Path(__file__).parents[1]
VAL_SAMPLES = 128  # limit_val_batches=2 of 64


@pytest.fixture
def teacher(tmp_path):
    path = tmp_path / "teacher.safetensors"
    save_file(ConvNet(width=8).state_dict(), str(path))
    return path


def _git_commit() -> str | None:
    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


def test_tally_matches_torchmetrics_ece_and_counts_per_class():
    torch.manual_seed(0)
    logits, targets = torch.randn(300, 7) * 3, torch.randint(0, 7, (300,))
    teacher_logits = logits + torch.randn(300, 7)
    tally = EvaluationTally(num_bins=15)
    for part in range(3):
        rows = slice(100 * part, 100 * (part + 1))
        tally.update(logits[rows], targets[rows], teacher_logits[rows])
    counts = tally.reduce(strategy=None)
    _, bins, ece = reliability_rows(counts)
    confidence, prediction = logits.softmax(1).max(1)
    expected = BinaryCalibrationError(n_bins=15, norm="l1")(confidence, (prediction == targets).long())
    assert ece == pytest.approx(float(expected), abs=1e-5)
    assert sum(row[2] for row in bins) == 300
    columns, rows = per_class_rows(counts, has_teacher=True, names=list("abcdefg"))
    assert columns == ["class", "name", "support", "student_acc1", "teacher_acc1", "agreement"]
    for index, name, support, student, teacher, agreement in rows:
        mine = targets == index
        assert name == "abcdefg"[index] and support == int(mine.sum())
        assert student == pytest.approx(float((prediction[mine] == index).float().mean()))
        assert teacher == pytest.approx(float((teacher_logits[mine].argmax(1) == index).float().mean()))
        assert agreement == pytest.approx(
            float((teacher_logits[mine].argmax(1) == prediction[mine]).float().mean())
        )


def test_csv_run_writes_tables_diagrams_compression_temperature_and_full_config(tmp_path, teacher):
    root = tmp_path / "run"
    dashboard = f"--config={REPO / 'experiments' / 'logger' / 'dashboard.yaml'}"
    assert main(["fit", *_args(root, dashboard, teacher=str(teacher))]) == 0
    logs = root / "logs" / "version_0"
    metrics = pd.read_csv(logs / "metrics.csv")
    final = metrics.dropna(subset=["val/acc1"]).iloc[-1]

    per_class = pd.read_csv(logs / "dashboard" / "val_epoch1_per_class.csv")
    assert list(per_class.columns) == [
        "class",
        "name",
        "support",
        "student_acc1",
        "teacher_acc1",
        "agreement",
    ]
    assert len(per_class) == 10 and per_class["support"].sum() == VAL_SAMPLES
    weighted = (per_class["student_acc1"] * per_class["support"]).sum() / VAL_SAMPLES
    assert weighted == pytest.approx(final["val/acc1"], abs=1e-5)
    agreement = (per_class["agreement"] * per_class["support"]).sum() / VAL_SAMPLES
    assert agreement == pytest.approx(final["val/agreement"], abs=1e-5)

    bins = pd.read_csv(logs / "dashboard" / "val_epoch1_reliability.csv")
    gaps = (bins["accuracy"] - bins["confidence"]).abs() * bins["count"] / bins["count"].sum()
    assert gaps.sum() == pytest.approx(final["val/ece"], abs=1e-4)
    assert (logs / "dashboard" / "val_epoch1_reliability.png").read_bytes()[:4] == b"\x89PNG"
    assert metrics["val/worst_class_acc1"].dropna().iloc[-1] == pytest.approx(per_class["student_acc1"].min())

    compression = pd.read_csv(logs / "dashboard" / "compression.csv").set_index("quantity")
    assert compression.loc["params", "teacher"] == sum(p.numel() for p in ConvNet(width=8).parameters())
    assert compression.loc["params", "student"] == sum(p.numel() for p in MLP(hidden=[16]).parameters())
    assert set(metrics["train/temperature/kd"].dropna()) == {4.0}

    hparams = yaml.safe_load((logs / "hparams.yaml").read_text())
    assert hparams["trainer"]["max_epochs"] == 2 and hparams["trainer"]["limit_train_batches"] == 3
    assert hparams["data"]["class_path"] == "kdlab.data.DigitsDataModule"
    saved = torch.load(root / "checkpoints" / "last.ckpt", weights_only=True)["kdlab_teacher"]
    assert hparams["kdlab"]["teacher"] == saved and len(saved["sha256"]) == 64
    if _git_commit():
        assert hparams["kdlab"]["git"]["commit"] == _git_commit()

    best = str(root / "checkpoints" / "best.ckpt")
    assert main(["test", *_args(root, dashboard, f"--ckpt_path={best}", teacher=str(teacher))]) == 0
    tested = pd.read_csv(next((root / "logs" / "version_1" / "dashboard").glob("test_epoch*_per_class.csv")))
    assert tested["support"].sum() == 360  # the whole test split (20% of 1,797)


@pytest.fixture
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_RUN_ID", "kdlab-dashboard-1")  # as experiments/slurm/train.sbatch sets it
    yield
    import wandb

    wandb.finish()
    wandb.teardown()  # its settings singleton would keep this test's environment


def test_offline_wandb_run_holds_the_kd_dashboard(tmp_path, teacher, offline):
    logger = REPO / "experiments" / "logger" / "wandb.yaml"
    extra = (f"--config={logger}", f"--trainer.logger.init_args.save_dir={tmp_path}")
    assert main(["fit", *_args(tmp_path / "run", *extra, teacher=str(teacher))]) == 0
    import wandb

    wandb.finish()
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    assert run_dir.name.endswith("-kdlab-dashboard-1"), "the run id comes from WANDB_RUN_ID"
    logged = set().union(*history(run_dir))
    every_term = {"train/ce", "train/kd", "train/loss", "train/temperature/kd"}
    assert every_term | {"val/agreement", "val/kl", "val/ece", "val/acc1", "val/worst_class_acc1"} <= logged

    columns, rows = table(run_dir, "val/per_class_accuracy")
    assert columns == ["class", "name", "support", "student_acc1", "teacher_acc1", "agreement"]
    assert len(rows) == 10 and sum(row[2] for row in rows) == VAL_SAMPLES
    columns, rows = table(run_dir, "val/reliability_bins")
    assert len(rows) == 15 and sum(row[2] for row in rows) == VAL_SAMPLES
    (diagram,) = image_files(run_dir, "val/reliability_diagram")
    assert diagram.read_bytes()[:4] == b"\x89PNG"
    columns, rows = table(run_dir, "compression")
    assert columns == ["quantity", "teacher", "student", "student / teacher"]
    assert {row[0] for row in rows} >= {"params", "flops", "bytes", "cpu_latency_ms"}

    run_config = config(run_dir)
    assert run_config["trainer"]["max_epochs"] == 2
    assert run_config["data"]["class_path"] == "kdlab.data.DigitsDataModule"
    assert run_config["model"]["init_args"]["teacher_weights"] == str(teacher)
    assert run_config["kdlab"]["teacher"]["path"] == str(teacher)
    assert len(run_config["kdlab"]["teacher"]["sha256"]) == 64
    if _git_commit():
        assert run_config["kdlab"]["git"]["commit"] == _git_commit()
