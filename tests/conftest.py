"""Shared test settings: quiet, offline, small and deterministic."""

from __future__ import annotations

import logging
import os
import warnings

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("WANDB_DISABLE_GIT", "true")
# Tests run many small models: one intra-op thread is faster than two that wait on each other.
torch.set_num_threads(1)
logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
warnings.filterwarnings("ignore", message=".*does not have many workers.*")
warnings.filterwarnings("ignore", message=".*log_every_n_steps.*")
warnings.filterwarnings("ignore", message=".*args parameter is intended to run from within Python.*")


@pytest.fixture
def trainer_kwargs(tmp_path):
    """Keyword arguments for a quiet, CPU-only Lightning Trainer writing into tmp_path."""
    return {
        "accelerator": "cpu",
        "devices": 1,
        "default_root_dir": str(tmp_path),
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "logger": False,
        "enable_checkpointing": False,
    }


@pytest.fixture(scope="session")
def kdlab_references(tmp_path_factory):
    """Uninterrupted ``kdlab fit`` runs, each done once per session (see tests/kdlab_runs.py)."""
    from .kdlab_runs import References

    return References(tmp_path_factory.mktemp("references"))
