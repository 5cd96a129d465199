"""A tiny digits suite (ConvNet teacher, MLP vanilla and KD students, 2 seeds) shared by the suite
and notebook tests. It runs once per session: the second test that asks for it reruns the suite
command, which then skips every finished run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

TRAINER = """\
data:
  class_path: kdlab.data.DigitsDataModule
trainer:
  max_epochs: 2
  limit_train_batches: 2
  limit_val_batches: 1
  enable_progress_bar: false
  enable_model_summary: false
"""
TEACHER = """\
model:
  class_path: kdlab.DistillationModule
  init_args:
    student: {class_path: kdlab.models.ConvNet, init_args: {width: 8}}
"""
VANILLA = """\
model:
  class_path: kdlab.DistillationModule
  init_args:
    student: {class_path: kdlab.models.MLP, init_args: {hidden: [16]}}
"""
KD = """\
model:
  class_path: kdlab.DistillationModule
  init_args:
    student: {class_path: kdlab.models.MLP, init_args: {hidden: [16]}}
    teacher: {class_path: kdlab.models.ConvNet, init_args: {width: 8}}
    ce_weight: 0.1
    distillers:
      - class_path: kdlab.losses.KD
        init_args: {weight: 0.9, temperature: 4.0}
"""


@dataclass
class TinySuite:
    file: Path
    output: Path
    exit_code: int


def write_configs(folder: Path) -> dict[str, Path]:
    """The configs of the tiny suite in ``folder`` (trainer, teacher, vanilla, kd)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, text in (("trainer", TRAINER), ("teacher", TEACHER), ("vanilla", VANILLA), ("kd", KD)):
        paths[name] = folder / f"{name}.yaml"
        paths[name].write_text(text)
    return paths


def write_suite(folder: Path, seeds: str = "[0, 1]", runs: str | None = None, teacher: bool = True) -> Path:
    """A suite file over the tiny configs; ``runs`` replaces the default runs section."""
    configs = write_configs(folder)
    trainer = configs["trainer"]
    runs = runs or (
        f"  - {{configs: [{trainer}, {configs['vanilla']}]}}\n"
        f"  - {{configs: [{trainer}, {configs['kd']}], teacher: convnet}}\n"
    )
    suite = folder / "suite.yaml"
    teachers = f"teachers:\n  convnet:\n    configs: [{trainer}, {configs['teacher']}]\n" if teacher else ""
    header = f"# kdlab suite {suite}\nname: tiny\noutput: {folder / 'out'}\nseeds: {seeds}\n"
    suite.write_text(f"{header}{teachers}runs:\n{runs}")
    return suite


@pytest.fixture(scope="session")
def tiny_suite(tmp_path_factory) -> TinySuite:
    """The tiny suite's output directory after `kdlab suite` (in-process, 5 runs)."""
    from kdlab.cli import build
    from kdlab.suite import main

    folder = tmp_path_factory.getbasetemp() / "tiny_suite"
    suite = folder / "suite.yaml"
    if not suite.is_file():
        write_suite(folder)
    code = main([str(suite), "--launcher", "inprocess"], build)
    return TinySuite(suite, folder / "out", code)
