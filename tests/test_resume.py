"""Kill and resume: a ``kdlab fit`` killed with SIGKILL mid-epoch and resumed from its last
checkpoint ends bit-identical to an uninterrupted run (CPU, deterministic, fixed seed).

Each case is a real subprocess, held by ``PauseAt`` at a chosen batch so the kill lands in the
middle of an epoch, then ``kdlab fit ... --ckpt_path last`` in this process. The configs train
with random numbers drawn from torch, numpy and Python (``NoisyKD``), a StepLR schedule and
per-epoch data order (digits: seeded sampler; CIFAR: seeded sampler and hashed views).

Stateful features extend it through their digits experiments: each ``experiments/digits/<name>.yaml``
listed in ``EXPERIMENTS`` (loss-weight schedule, CTKD's learned temperature and curriculum, CRD's
memory bank) runs through the same kill/resume comparison once it exists, and is skipped before.
Add the teacher-output cache's experiment there when it lands.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from .kdlab_runs import (
    REPO,
    assert_same_training_state,
    checkpoint,
    cifar_args,
    digits_args,
    kill_group,
    metrics,
    run,
    start,
    teacher_file,
    wait_for,
)

STEP_CHECKPOINTS = [
    "--trainer.callbacks+=kdlab.checkpointing.BestAndLastCheckpoint",
    "--trainer.callbacks.every_n_train_steps=2",
]
# (name, arguments, extra arguments, global step of last.ckpt when the run is killed at
#  epoch 1, batch 3, loader position recorded in it)
CASES = {
    # digits: 6 steps per epoch; last.ckpt from the end of epoch 0 (step 6)
    "digits-epoch_end": ("digits", [], 6, (0, 6)),
    # every 2 steps: the newest is step 8, two batches into epoch 1
    "digits-every_2_steps": ("digits", STEP_CHECKPOINTS, 8, (1, 2)),
    # CIFAR: 5 steps per epoch (80 images, batch 16); step 8 is three batches into epoch 1
    "cifar-every_2_steps": ("cifar", STEP_CHECKPOINTS, 8, (1, 3)),
}
EXPERIMENTS = ["dkd", "ctkd", "crd"]  # experiments/digits/<name>.yaml, when present


def _base_args(kind: str, folder: Path) -> list[str]:
    return digits_args(folder) if kind == "digits" else cifar_args(folder)


def _experiment_args(name: str, folder: Path) -> list[str]:
    config = REPO / "experiments" / "digits" / f"{name}.yaml"
    if not config.is_file():
        pytest.skip(f"{config.relative_to(REPO)} is not in this branch yet")
    return [
        f"--config={config}",
        f"--model.init_args.teacher_weights={teacher_file(folder, width=32)}",
        "--trainer.deterministic=true",
        "--trainer.max_epochs=3",
        "--trainer.limit_train_batches=6",
        "--trainer.limit_val_batches=3",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
    ]


def _kill_mid_epoch(args: list[str], root: Path) -> None:
    """Run until epoch 1, batch 3 is about to start, then SIGKILL the process."""
    root.mkdir(parents=True)
    pause = [
        "--trainer.callbacks+=tests.reliability_helpers.PauseAt",
        f"--trainer.callbacks.folder={root}",
        "--trainer.callbacks.points=[[1, 3]]",
    ]
    log = root / "killed.log"
    process = start([*args, *pause, f"--trainer.default_root_dir={root}"], log)
    wait_for(root / "at-e1-b3", process, log)
    kill_group(process)


def _resume_and_compare(args: list[str], root: Path, reference: Path, epoch_end: bool) -> None:
    code, stderr = run([*args, f"--trainer.default_root_dir={root}", "--ckpt_path=last"])
    assert code == 0, stderr[-3000:]
    resumed, uninterrupted = metrics(root, 1), metrics(reference, 0)
    assert resumed.index.min() == 1, "the resumed run started over instead of resuming"
    assert_same_training_state(
        checkpoint(root / "checkpoints" / "last.ckpt"), checkpoint(reference / "checkpoints" / "last.ckpt")
    )
    # Epoch means of the interrupted epoch cover the whole epoch only if it was replayed in full.
    epochs = [1, 2] if epoch_end else [2]
    columns = [c for c in uninterrupted.columns if c.startswith(("train/", "val/")) and "teacher" not in c]
    assert resumed.loc[epochs, columns].equals(uninterrupted.loc[epochs, columns])


@pytest.mark.parametrize("case", list(CASES))
def test_killed_mid_epoch_resumes_bit_identical(tmp_path, kdlab_references, case):
    kind, extra, killed_at_step, loader_position = CASES[case]
    args = [*_base_args(kind, kdlab_references.folder), *extra]
    reference = kdlab_references.get(kind, _base_args(kind, kdlab_references.folder))
    root = tmp_path / "run"
    _kill_mid_epoch(args, root)
    last = checkpoint(root / "checkpoints" / "last.ckpt")
    assert last["global_step"] == killed_at_step
    (position,) = last["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    assert (position["epoch"], position["batches"]) == loader_position
    assert not list((root / "checkpoints").glob(".*")), "a temporary checkpoint file was left behind"
    _resume_and_compare(args, root, reference, epoch_end=not extra)


def test_resume_without_the_random_state_would_differ(tmp_path, kdlab_references):
    """The control: the same mid-epoch checkpoint without its generator states resumes differently,
    so the bit-identical resumes above do depend on restoring them."""
    args = [*digits_args(kdlab_references.folder), *STEP_CHECKPOINTS]
    reference = kdlab_references.get("digits", digits_args(kdlab_references.folder))
    root = tmp_path / "run"
    code, stderr = run([*args, f"--trainer.default_root_dir={root}", "--trainer.max_epochs=2"])
    assert code == 0, stderr[-3000:]
    path = root / "checkpoints" / "last.ckpt"
    state = checkpoint(path)
    state["callbacks"] = {k: v for k, v in state["callbacks"].items() if k != "RandomState"}
    torch.save(state, path)
    code, stderr = run([*args, f"--trainer.default_root_dir={root}", "--ckpt_path=last"])
    assert code == 0, stderr[-3000:]
    resumed = checkpoint(path)["state_dict"]
    expected = checkpoint(reference / "checkpoints" / "last.ckpt")["state_dict"]
    assert not all(torch.equal(resumed[k], v) for k, v in expected.items())


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_killed_experiment_resumes_bit_identical(tmp_path, kdlab_references, name):
    args = [*_experiment_args(name, kdlab_references.folder), *STEP_CHECKPOINTS]
    reference = kdlab_references.folder / f"experiment-{name}"
    if not reference.is_dir():
        code, stderr = run([*args, f"--trainer.default_root_dir={reference}"])
        assert code == 0, stderr[-3000:]
    root = tmp_path / "run"
    _kill_mid_epoch(args, root)
    _resume_and_compare(args, root, reference, epoch_end=False)
