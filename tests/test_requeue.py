"""SLURM requeue without a cluster: SIGUSR1 -> hpc checkpoint -> ``scontrol requeue`` -> resume.

The run sees the environment variables SLURM sets (so Lightning picks ``SLURMEnvironment`` with
``auto_requeue``), ``scontrol`` is a script on PATH that records its arguments, and the
requeued job is the same command run again, which resumes from ``hpc_ckpt_1.ckpt`` by itself.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
from pathlib import Path

import pytest

from .kdlab_runs import (
    assert_same_training_state,
    checkpoint,
    digits_args,
    kill_group,
    metrics,
    release,
    run,
    start,
    wait_for,
)

JOB_ID = "4242"


def _slurm_env(tmp_path: Path) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> "{tmp_path / "scontrol.log"}"\n')
    scontrol.chmod(scontrol.stat().st_mode | stat.S_IEXEC)
    return {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "SLURM_JOB_ID": JOB_ID,
        "SLURM_JOB_NAME": "kdlab-requeue-test",
        "SLURM_NTASKS": "1",
        "SLURM_NTASKS_PER_NODE": "1",
        "SLURM_NNODES": "1",
        "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0",
        "SLURM_NODEID": "0",
        "SLURM_NODELIST": "localhost",
    }


def test_sigusr1_writes_hpc_checkpoint_requeues_and_the_requeued_job_resumes(
    tmp_path, monkeypatch, kdlab_references
):
    args = digits_args(kdlab_references.folder)
    reference = kdlab_references.get("digits", args)
    env = _slurm_env(tmp_path)
    root = tmp_path / "run"
    root.mkdir()
    pause = [
        "--trainer.callbacks+=tests.reliability_helpers.PauseAt",
        f"--trainer.callbacks.folder={root}",
        "--trainer.callbacks.points=[[1, 2], [1, 4]]",
    ]
    log = root / "job1.log"
    job = start([*args, *pause, f"--trainer.default_root_dir={root}"], log, **env)
    try:
        wait_for(root / "at-e1-b2", job, log)
        os.kill(job.pid, signal.SIGUSR1)  # SLURM's warning before the time limit, mid-epoch
        release(root, 1, 2)
        wait_for(root / "at-e1-b4", job, log)
    finally:
        kill_group(job)  # what SLURM does to a requeued job
    assert (tmp_path / "scontrol.log").read_text().split() == ["requeue", JOB_ID]
    hpc = checkpoint(root / "hpc_ckpt_1.ckpt")
    # The signal came while batch 2 of epoch 1 was about to start; the checkpoint is taken when
    # that step has finished (epoch 0's 6 steps + 3), not in the middle of it.
    assert hpc["global_step"] == 9
    (position,) = hpc["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    assert (position["epoch"], position["batches"]) == (1, 3)

    # Only the hpc checkpoint may explain a resume (last.ckpt would give the same numbers).
    shutil.rmtree(root / "checkpoints")
    for name, value in env.items():  # the requeued job: same command, same kind of environment
        monkeypatch.setenv(name, value)
    code, stderr = run([*args, f"--trainer.default_root_dir={root}"])
    assert code == 0, stderr[-3000:]
    assert_same_training_state(
        checkpoint(root / "checkpoints" / "last.ckpt"), checkpoint(reference / "checkpoints" / "last.ckpt")
    )
    resumed, uninterrupted = metrics(root, 1), metrics(reference, 0)
    assert resumed.index.min() == 1, "the requeued job started over instead of resuming"
    columns = [c for c in uninterrupted.columns if c.startswith(("train/", "val/")) and "teacher" not in c]
    assert resumed.loc[[2], columns].equals(uninterrupted.loc[[2], columns])
    val = [c for c in columns if c.startswith("val/")]
    assert resumed.loc[[1], val].equals(uninterrupted.loc[[1], val])


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.ddp
def test_a_signal_reaching_one_rank_makes_both_save_at_the_same_step(tmp_path, kdlab_references):
    """Two ranks started the way ``srun`` starts them; SIGUSR1 reaches rank 1 only (signals reach
    tasks at different moments). Both must take the checkpoint at the end of the same step, rank 0
    writes it once with both ranks' generator states, and only rank 0 requeues."""
    env = _slurm_env(tmp_path)
    env.update(SLURM_NTASKS="2", SLURM_NTASKS_PER_NODE="2", MASTER_ADDR="127.0.0.1")
    env["MASTER_PORT"] = str(_free_port())
    root = tmp_path / "run"
    root.mkdir()
    args = [
        *digits_args(kdlab_references.folder),
        "--data.batch_size=32",
        "--trainer.accelerator=cpu",
        "--trainer.devices=2",
        "--trainer.strategy=ddp",
        "--trainer.callbacks+=tests.reliability_helpers.PauseAt",
        f"--trainer.callbacks.folder={root}",
        "--trainer.callbacks.points=[[1, 2], [1, 4]]",  # PauseAt holds rank 0 (rank 1 waits for it)
        f"--trainer.default_root_dir={root}",
    ]
    ranks = [
        start(
            args, root / f"rank{rank}.log", **{**env, "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank)}
        )
        for rank in (0, 1)
    ]
    try:
        wait_for(root / "at-e1-b2", ranks[0], root / "rank0.log")
        os.kill(ranks[1].pid, signal.SIGUSR1)
        release(root, 1, 2)
        wait_for(root / "at-e1-b4", ranks[0], root / "rank0.log")
    finally:
        for process in ranks:
            kill_group(process)
    assert (tmp_path / "scontrol.log").read_text().split() == ["requeue", JOB_ID]
    assert sorted(p.name for p in root.glob("hpc_ckpt_*")) == ["hpc_ckpt_1.ckpt"]
    hpc = checkpoint(root / "hpc_ckpt_1.ckpt")
    assert hpc["global_step"] == 9
    (position,) = hpc["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    assert (position["epoch"], position["batches"]) == (1, 3)
    assert len(hpc["callbacks"]["RandomState"]["ranks"]) == 2
