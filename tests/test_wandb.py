"""Switching the logger to W&B with experiments/logger/wandb.yaml (offline mode)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kdlab.cli import main

from .test_cli import _args
from .wandb_records import config, history

REPO = Path(__file__).parents[1]


@pytest.fixture
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    yield
    import wandb

    wandb.finish()
    wandb.teardown()  # its settings singleton would keep this test's environment


def test_short_fit_logs_metrics_and_config_to_an_offline_wandb_run(tmp_path, offline):
    logger_yaml = REPO / "experiments" / "logger" / "wandb.yaml"
    assert (
        main(
            [
                "fit",
                *_args(tmp_path),
                f"--config={logger_yaml}",
                f"--trainer.logger.init_args.save_dir={tmp_path}",
            ]
        )
        == 0
    )
    import wandb

    wandb.finish()
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    rows = history(run_dir)
    logged = set().union(*rows)
    assert {"train/loss", "train/ce", "val/acc1", "val/acc5", "val/ece", "epoch"} <= logged
    assert sum("val/acc1" in row for row in rows) == 2  # one per epoch
    assert 0.0 <= rows[-1].get("val/acc1", rows[-2].get("val/acc1")) <= 1.0
    assert config(run_dir)["student"]["class_path"] == "kdlab.models.MLP"
