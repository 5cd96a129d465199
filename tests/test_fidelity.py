"""Recipes and protocol that follow the papers' reference code (kdlab issue 14): one test per
deviation that an audit against the authors' code found, so that it cannot come back."""

from __future__ import annotations

from pathlib import Path

import pytest

from kdlab.callbacks import LossWeightSchedule
from kdlab.cli import KDLabCLI

from .kdlab_runs import QUIET

REPO = Path(__file__).resolve().parents[1]
CIFAR100 = REPO / "experiments" / "cifar100"


@pytest.fixture
def skip_weight_init(monkeypatch):
    import torch

    for name in ("kaiming_uniform_", "kaiming_normal_", "normal_", "uniform_", "xavier_uniform_"):
        monkeypatch.setattr(torch.nn.init, name, lambda tensor, *args, **kwargs: tensor)


def build(configs: list[Path], tmp_path: Path) -> KDLabCLI:
    args = [f"--config={c}" for c in configs]
    args += ["--model.init_args.teacher_weights=null", f"--trainer.default_root_dir={tmp_path}", *QUIET]
    return KDLabCLI(args=args, run=False)


@pytest.mark.parametrize("pair", sorted(p.parent.name for p in CIFAR100.glob("*/reviewkd.yaml")))
def test_reviewkd_recipes_warm_the_weight_up_over_20_epochs(pair, tmp_path, skip_weight_init):
    cli = build([CIFAR100 / "base.yaml", CIFAR100 / pair / "reviewkd.yaml"], tmp_path)
    (schedule,) = [c for c in cli.trainer.callbacks if isinstance(c, LossWeightSchedule)]
    assert schedule.warmup_epochs == 20
    assert [round(schedule.factor(epoch), 6) for epoch in (0, 9, 19, 30)] == [0.05, 0.5, 1.0, 1.0]
