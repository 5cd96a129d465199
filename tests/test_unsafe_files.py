"""Files from strangers: every way kdlab reads a pickle refuses one that would run code (and the
code never runs), reads the usual checkpoint layouts, and calls a truncated file what it is.

Complements tests/test_teacher_loading.py (teacher formats, prefixes, refused pickles).
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from kdlab.checkpointing import AtomicCheckpointIO
from kdlab.data.cifar_files import read_split
from kdlab.errors import CheckpointError, TeacherLoadError
from kdlab.models import ConvNet
from kdlab.models._weights import read_weights
from kdlab.teacher import load_teacher_weights, read_state_dict
from kdlab.tools.export import ExportError, load_checkpoint
from kdlab.tools.export import main as export_main

from .datagen import write_cifar10
from .kdlab_runs import digits_args, run


class _RunsCode:
    """Unpickling this calls os.mkdir(marker): visible proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "code-ran"
    yield path
    assert not path.exists(), "unpickling ran the code hidden in the file"


@pytest.fixture
def teacher_state():
    torch.manual_seed(0)
    return ConvNet(width=4).state_dict()


def _evil_checkpoint(path: Path, state: dict, marker: Path) -> Path:
    torch.save({"state_dict": {f"student.{k}": v for k, v in state.items()}, "x": _RunsCode(marker)}, path)
    return path


@pytest.mark.parametrize(
    ("layout", "wrap"),
    [
        ("repdistiller", lambda sd: {"epoch": 240, "model": sd, "accuracy": torch.tensor(73.1)}),
        ("mdistiller", lambda sd: {"epoch": 240, "model": {f"module.{k}": v for k, v in sd.items()}}),
        ("lightning-plain", lambda sd: {"state_dict": sd, "epoch": 3, "global_step": 10}),
        ("compiled-ddp", lambda sd: {"state_dict": {f"_orig_mod.module.{k}": v for k, v in sd.items()}}),
    ],
)
def test_teacher_checkpoint_layouts_of_other_codebases_load(tmp_path, teacher_state, layout, wrap):
    path = tmp_path / f"{layout}.pth"
    torch.save(wrap(teacher_state), path)
    teacher = ConvNet(width=4)
    load_teacher_weights(teacher, path)
    for key, value in teacher_state.items():
        assert torch.equal(teacher.state_dict()[key], value), key


def test_every_pickle_reader_refuses_code(tmp_path, teacher_state, marker, capsys):
    evil = _evil_checkpoint(tmp_path / "evil.ckpt", teacher_state, marker)
    with pytest.raises(TeacherLoadError, match=r"refused to load.*GLOBAL posix\.mkdir"):
        read_state_dict(evil)
    with pytest.raises(ValueError, match="refused to load"):
        read_weights(evil)  # kdlab.models' local-weights loader (torchvision models, zoo files)
    with pytest.raises(ExportError, match=r"plain checkpoint.*GLOBAL posix\.mkdir"):
        load_checkpoint(evil)
    assert export_main(["--ckpt", str(evil), "--format", "safetensors", "--output", str(tmp_path / "s")]) == 1
    assert "GLOBAL posix.mkdir" in capsys.readouterr().err
    with pytest.raises(CheckpointError, match=r"refused to load the checkpoint.*GLOBAL posix\.mkdir"):
        AtomicCheckpointIO().load_checkpoint(evil)


def test_resuming_from_a_code_pickle_is_refused_on_the_command_line(tmp_path, teacher_state, marker):
    evil = _evil_checkpoint(tmp_path / "evil.ckpt", teacher_state, marker)
    code, stderr = run(
        [*digits_args(tmp_path), f"--trainer.default_root_dir={tmp_path}", f"--ckpt_path={evil}"]
    )
    assert code == 2
    assert "kdlab: error: refused to load the checkpoint" in stderr and "Traceback" not in stderr


def test_cifar_reader_refuses_code_in_a_batch_file(tmp_path, marker):
    write_cifar10(tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(pickle.dumps({"data": _RunsCode(marker), "labels": [0]}, protocol=2))
    with pytest.raises(ValueError, match=r"data_batch_3 is not a CIFAR python batch file.*posix.mkdir"):
        read_split(tmp_path, "cifar10", "train")


def test_truncated_files_are_clear_errors_everywhere(tmp_path, teacher_state):
    whole = tmp_path / "whole.ckpt"
    torch.save({"state_dict": {f"student.{k}": v for k, v in teacher_state.items()}}, whole)
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size * 2 // 3])
    with pytest.raises(TeacherLoadError, match="corrupt, truncated"):
        read_state_dict(cut)
    with pytest.raises(ValueError, match="corrupt"):
        read_weights(cut)
    with pytest.raises(ExportError, match="be complete"):
        load_checkpoint(cut)
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        AtomicCheckpointIO().load_checkpoint(cut)
    cut_safetensors = tmp_path / "cut.safetensors"
    save_file(teacher_state, str(tmp_path / "whole.safetensors"))
    cut_safetensors.write_bytes((tmp_path / "whole.safetensors").read_bytes()[:200])
    with pytest.raises(TeacherLoadError, match="corrupt, truncated"):
        read_state_dict(cut_safetensors)
    write_cifar10(tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    batch.write_bytes(batch.read_bytes()[:1000])
    with pytest.raises(ValueError, match="data_batch_2 is not a CIFAR python batch file"):
        read_split(tmp_path, "cifar10", "train")
