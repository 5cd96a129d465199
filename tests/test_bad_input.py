"""Bad input through the ``kdlab`` command: each a short error (exit status 2, a few lines, no
traceback) that says what is wrong, before training or at the failing step.

Complements tests/test_cli.py (argument typos, malformed YAML, teacher files).
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from kdlab.models import ConvNet

from .datagen import write_cifar10, write_image_tree
from .kdlab_runs import QUIET, USER_ERROR, checkpoint, run, teacher_file


def _digits(root: Path, *extra: str, teacher: Path | None = None) -> list[str]:
    args = [
        "--seed_everything=0",
        "--model=kdlab.DistillationModule",
        "--model.student=kdlab.models.MLP",
        "--model.student.hidden=[16]",
        "--data=kdlab.data.DigitsDataModule",
        f"--trainer.default_root_dir={root}",
        "--trainer.max_epochs=2",
        "--trainer.limit_train_batches=6",
        "--trainer.limit_val_batches=2",
        *QUIET,
    ]
    if teacher is not None:
        args += ["--model.teacher=kdlab.models.ConvNet", "--model.teacher.width=4"]
        args += [f"--model.teacher_weights={teacher}", "--model.distillers+=kdlab.losses.KD"]
    return [*args, *extra]


def _fails(args: list[str], *expected: str) -> str:
    code, stderr = run(args)
    assert code == USER_ERROR, f"exit status {code}; stderr:\n{stderr[-3000:]}"
    error = stderr[stderr.find("error:") :]
    assert "Traceback" not in stderr and len(error.splitlines()) <= 12, stderr[-3000:]
    for text in expected:
        assert text in error, f"{text!r} not in:\n{error}"
    return error


# ----------------------------------------------------------------------------- data
def test_missing_or_misnamed_data(tmp_path):
    cifar = ["--data=kdlab.data.CIFARDataModule", "--data.dataset=cifar10", "--model.student.in_channels=3"]
    cifar += ["--model.student.image_size=32"]
    _fails(
        [*_digits(tmp_path), *cifar, f"--data.root={tmp_path / 'nowhere'}"], "cifar10 not found", "nowhere"
    )
    write_cifar10(tmp_path / "cifar")  # a CIFAR-10 folder given as CIFAR-100
    _fails(
        [*_digits(tmp_path), *cifar, f"--data.root={tmp_path / 'cifar'}", "--data.dataset=cifar100"],
        "cifar100 not found",
        "cifar-100-python",
    )
    (tmp_path / "cifar" / "cifar-10-batches-py" / "data_batch_4").unlink()
    _fails(
        [*_digits(tmp_path), *cifar, f"--data.root={tmp_path / 'cifar'}"], "cifar10 not found", "data_batch_4"
    )
    imagenet = ["--data=kdlab.data.ImageNetDataModule", "--model.student.in_channels=3"]
    imagenet += ["--model.student.image_size=16", "--data.image_size=16", "--data.num_workers=0"]
    _fails([*_digits(tmp_path), *imagenet, f"--data.root={tmp_path / 'nowhere'}"], "ImageNet root", "nowhere")
    write_image_tree(tmp_path / "tree", ["n01440764", "n02102040"], per_class=2)
    _fails(
        [
            *_digits(tmp_path),
            *imagenet,
            f"--data.root={tmp_path / 'tree'}",
            "--data.classes=[n01440764, n02102004]",
        ],
        "class folder",
        "n02102004 is missing",
        "did you mean 'n02102040'",
    )


def test_empty_subsets(tmp_path):
    _fails(
        [*_digits(tmp_path), "--data.train_fraction=0.001"],
        "train_fraction=0.001",
        "fewer than one per class",
    )
    write_cifar10(tmp_path / "cifar")
    cifar = [
        "--data=kdlab.data.CIFARDataModule",
        "--data.dataset=cifar10",
        f"--data.root={tmp_path / 'cifar'}",
    ]
    cifar += ["--model.student.in_channels=3", "--model.student.image_size=32"]
    _fails([*_digits(tmp_path), *cifar, "--data.classes=[]"], "classes is empty")
    _fails([*_digits(tmp_path), *cifar, "--data.samples_per_class=0"], "samples_per_class must be at least 1")
    _fails([*_digits(tmp_path), *cifar, "--data.samples_per_class=50"], "samples_per_class=50", "has only 10")
    write_image_tree(tmp_path / "tree", ["a", "b"], per_class=1)
    for image in (tmp_path / "tree" / "train" / "b").iterdir():
        image.unlink()
    imagenet = [
        "--data=kdlab.data.ImageNetDataModule",
        f"--data.root={tmp_path / 'tree'}",
        "--data.num_workers=0",
    ]
    imagenet += ["--model.student.in_channels=3", "--model.student.image_size=16", "--data.image_size=16"]
    _fails([*_digits(tmp_path), *imagenet], "class folder", "holds no images")


# ----------------------------------------------------------------------------- models
def test_class_count_mismatch_between_teacher_file_and_data(tmp_path):
    hundred = tmp_path / "cifar100_teacher.safetensors"
    save_file(ConvNet(width=4, num_classes=100).state_dict(), str(hundred))
    _fails(
        _digits(tmp_path, teacher=hundred),
        "do not fit ConvNet",
        "fc.weight: file (100, 16) vs model (10, 16)",
    )


def test_wrong_tap_name(tmp_path):
    wrong = "--model.distillers+=tests.reliability_helpers.WrongTap"
    args = _digits(tmp_path, wrong, teacher=teacher_file(tmp_path))
    _fails(args, "layer_that_does_not_exist", "MLP", "valid")


def test_invalid_schedule_values(tmp_path):
    if importlib.util.find_spec("kdlab.callbacks.schedules") is None:
        pytest.skip("kdlab.callbacks.schedules is not in this branch yet")
    base = _digits(tmp_path, teacher=teacher_file(tmp_path))
    temperature = [
        "--trainer.callbacks+=kdlab.callbacks.TemperatureSchedule",
        "--trainer.callbacks.kind=linear",
    ]
    _fails([*base, *temperature, "--trainer.callbacks.start=-1", "--trainer.callbacks.end=2"], "start", "-1")
    warmup = ["--trainer.callbacks+=kdlab.callbacks.LossWeightSchedule"]
    _fails([*base, *warmup, "--trainer.callbacks.warmup_epochs=-3"], "warmup_epochs", "-3")


def test_invalid_loss_and_checkpoint_settings(tmp_path):
    _fails([*_digits(tmp_path), "--model.ce_weight=-1"], "ce_weight must be a number >= 0")
    teacher = teacher_file(tmp_path)
    _fails([*_digits(tmp_path, teacher=teacher), "--model.distillers.init_args.temperature=0"], "temperature")
    every = ["--trainer.callbacks+=kdlab.checkpointing.BestAndLastCheckpoint"]
    _fails([*_digits(tmp_path), *every, "--trainer.callbacks.every_n_train_steps=0"], "every_n_train_steps")


# ----------------------------------------------------------------------------- non-finite losses
NON_FINITE_KD = ["--model.distillers+=tests.reliability_helpers.NonFiniteAt", "--model.distillers.call=8"]


@pytest.mark.parametrize(
    ("culprit", "term"),
    [
        (NON_FINITE_KD, "nonfiniteat=nan"),
        ([*NON_FINITE_KD, "--model.distillers.value=inf"], "nonfiniteat=inf"),
        (["--model.student=tests.reliability_helpers.NonFiniteStudent", "--model.student.call=8"], "ce=nan"),
    ],
    ids=["distiller-nan", "distiller-inf", "ce-nan"],
)
def test_non_finite_loss_stops_names_term_and_batch_and_keeps_the_last_good_checkpoint(
    tmp_path, culprit, term
):
    every_step = ["--trainer.callbacks+=kdlab.checkpointing.BestAndLastCheckpoint"]
    every_step += ["--trainer.callbacks.every_n_train_steps=1"]
    args = _digits(tmp_path, *culprit, *every_step, teacher=teacher_file(tmp_path))
    # Training call 8 = epoch 1, batch 1 (6 steps per epoch): its checkpoint must not be written.
    _fails(args, term, "at epoch 1, batch 1", "last good checkpoint is kept")
    last = checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert last["global_step"] == 7
    assert all(torch.isfinite(value).all() for value in last["state_dict"].values())
    assert not list((tmp_path / "checkpoints").glob(".*"))


def test_corrupt_checkpoint_to_resume_from(tmp_path):
    assert run(_digits(tmp_path))[0] == 0
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:4096])
    _fails([*_digits(tmp_path), "--ckpt_path=last"], "last.ckpt", "corrupt or truncated", "best.ckpt")
    _fails([*_digits(tmp_path), f"--ckpt_path={last}"], "corrupt or truncated")


# ----------------------------------------------------------------------------- configuration text
@pytest.mark.parametrize(
    ("yaml", "expected"),
    [
        ("trainer:\n  max_epohcs: 3\n", "did you mean 'trainer.max_epochs'"),
        ("modle:\n  class_path: kdlab.DistillationModule\n", "did you mean 'model.class_path'"),
        ("model:\n  init_args:\n    ce_wieght: 0.5\n", "did you mean 'ce_weight'"),
        ("model:\n  init_args:\n    student:\n      init_args: {hiden: [8]}\n", "did you mean 'hidden'"),
        ("data:\n  init_args: {batch_sise: 8}\n", "did you mean 'batch_size'"),
    ],
    ids=["trainer-key", "top-level-key", "module-argument", "student-argument", "data-argument"],
)
def test_typo_in_a_yaml_key_suggests_the_close_match(tmp_path, yaml, expected):
    config = tmp_path / "config.yaml"
    config.write_text(yaml)
    _fails([*_digits(tmp_path), f"--config={config}"], expected)


@pytest.mark.parametrize(
    ("argument", "expected"),
    [
        ("--model.student.init_args.hiden=[8]", "did you mean 'hidden'"),
        ("--data.init_args.batch_sise=8", "did you mean 'batch_size'"),
        ("--model.distillers.init_args.temperatur=2", "did you mean 'temperature'"),
        ("--trainer.callbacks.every_n_train_step=2", "did you mean 'every_n_train_steps'"),
    ],
    ids=["student-argument", "data-argument", "distiller-argument", "callback-argument"],
)
def test_typo_in_a_nested_command_line_key_suggests_the_close_match(tmp_path, argument, expected):
    extra = [argument]
    if "distillers" in argument:
        extra = ["--model.distillers+=kdlab.losses.KD", argument]
    if "callbacks" in argument:
        extra = ["--trainer.callbacks+=kdlab.checkpointing.BestAndLastCheckpoint", argument]
    teacher = teacher_file(tmp_path) if "distillers" in argument else None
    _fails([*_digits(tmp_path, teacher=teacher), *extra], expected)


@pytest.mark.parametrize(
    "text",
    [
        "model:\n  init_args: {student: [\n",
        "data:\n\tclass_path: kdlab.data.DigitsDataModule\n",
        "a: 'unclosed\n",
    ],
    ids=["unclosed-bracket", "tab-indent", "unclosed-quote"],
)
def test_malformed_yaml_names_the_line(tmp_path, text):
    config = tmp_path / "config.yaml"
    config.write_text(text)
    _fails([*_digits(tmp_path), f"--config={config}"], "malformed", "line")
