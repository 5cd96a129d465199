"""experiments/slurm/: the sbatch template (DDP under srun, requeue on SIGUSR1, stable run dir and
W&B id, resume from the newest checkpoint) and the torchrun recipe."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

REPO = Path(__file__).parents[1]
SBATCH = REPO / "experiments" / "slurm" / "train.sbatch"
TORCHRUN = REPO / "experiments" / "slurm" / "torchrun.sh"


def _directives(script: Path) -> dict[str, str]:
    found = re.findall(r"^#SBATCH --([\w-]+)(?:=(\S+))?", script.read_text(), flags=re.M)
    return {key: value for key, value in found}


def _stub(folder: Path, name: str, body: str) -> None:
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(f"#!/bin/bash\n{body}\n")
    (folder / name).chmod(0o755)


def _slurm_env(tmp_path: Path, stubs: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "PATH": f"{stubs}:{Path(sys.executable).parent}:{os.environ['PATH']}",
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "SLURM_JOB_ID": "4242",
        "SLURM_JOB_NAME": "kdlab-test",
        "SLURM_NTASKS": extra.pop("SLURM_NTASKS", "1"),
        "SLURM_NTASKS_PER_NODE": extra.pop("SLURM_NTASKS_PER_NODE", "1"),
        "SLURM_JOB_NUM_NODES": "1",
        "SLURM_NNODES": "1",
        "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0",
        "SLURM_NODEID": "0",
        "SLURM_NODELIST": "localhost",
        "CALLS": str(tmp_path / "calls"),
        **extra,
    }


def test_sbatch_template_requests_requeue_and_one_task_per_device():
    directives = _directives(SBATCH)
    assert directives["signal"] == "SIGUSR1@90"
    assert "requeue" in directives and directives["open-mode"] == "append"
    assert directives["ntasks-per-node"] == directives["gpus-per-node"], "one process per GPU"
    text = SBATCH.read_text()
    assert text.splitlines()[1].startswith("# sbatch experiments/slurm/train.sbatch -c ")
    assert re.search(r"^srun \$\{KDLAB:-kdlab\} fit \"\$@\"", text, flags=re.M)
    subprocess.run(["bash", "-n", str(SBATCH)], check=True)
    subprocess.run(["bash", "-n", str(TORCHRUN)], check=True)


def test_sbatch_script_passes_devices_run_dir_wandb_id_and_the_newest_checkpoint(tmp_path):
    stubs = tmp_path / "bin"
    _stub(stubs, "srun", 'echo "WANDB_RUN_ID=$WANDB_RUN_ID WANDB_RESUME=$WANDB_RESUME $*" >> "$CALLS"')
    env = _slurm_env(tmp_path, stubs, SLURM_NTASKS="8", SLURM_NTASKS_PER_NODE="4", SLURM_JOB_NUM_NODES="2")

    def submit() -> str:
        subprocess.run(
            ["bash", str(SBATCH), "-c", "x.yaml"], cwd=tmp_path, env=env, check=True, capture_output=True
        )
        return (tmp_path / "calls").read_text().splitlines()[-1]

    first = submit()
    run_dir = "runs/slurm/kdlab-test-4242"
    expected = ["WANDB_RUN_ID=kdlab-4242 WANDB_RESUME=allow", "kdlab fit -c x.yaml", "--trainer.devices=4"]
    expected += ["--trainer.num_nodes=2", "--trainer.strategy=ddp", f"--trainer.default_root_dir={run_dir}"]
    for part in expected:
        assert part in first
    assert "--ckpt_path" not in first, "a fresh job starts from scratch"
    checkpoints = tmp_path / run_dir / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "last.ckpt").write_bytes(b"")
    assert submit().endswith(f"--ckpt_path={run_dir}/checkpoints/last.ckpt")
    time.sleep(0.05)  # mtime resolution
    (tmp_path / run_dir / "hpc_ckpt_1.ckpt").write_bytes(b"")
    requeued = submit()
    assert requeued.endswith(f"--ckpt_path={run_dir}/hpc_ckpt_1.ckpt"), "the requeue checkpoint is newer"
    assert "WANDB_RUN_ID=kdlab-4242" in requeued, "the requeued job continues the same W&B run"


def test_a_requeued_job_resumes_from_the_checkpoint_lightning_saved_on_sigusr1(tmp_path):
    stubs = tmp_path / "bin"
    _stub(stubs, "srun", 'exec "$@"')
    _stub(stubs, "scontrol", 'echo "scontrol $*" >> "$CALLS"')
    env = _slurm_env(tmp_path, stubs, ACCELERATOR="cpu", KDLAB=f"{sys.executable} -m kdlab.cli")
    args = [
        "--model=kdlab.DistillationModule",
        "--model.student=kdlab.models.MLP",
        "--data=kdlab.data.DigitsDataModule",
        "--trainer.max_epochs=3",
        "--trainer.limit_train_batches=2",
        "--trainer.limit_val_batches=1",
        "--trainer.enable_progress_bar=false",
        "--trainer.callbacks+=tests.slurm_signal.RequeueAt",
    ]
    killed = subprocess.run(["bash", str(SBATCH), *args], cwd=REPO, env=env, capture_output=True, text=True)
    run_dir = REPO / "runs" / "slurm" / "kdlab-test-4242"
    try:
        assert killed.returncode != 0, "the job was ended after the signal"
        assert (tmp_path / "calls").read_text().strip() == "scontrol requeue 4242"
        assert list(run_dir.glob("hpc_ckpt_*.ckpt")), killed.stdout[-2000:] + killed.stderr[-2000:]
        resumed = subprocess.run(
            ["bash", str(SBATCH), *args], cwd=REPO, env=env, capture_output=True, text=True
        )
        assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
        assert "resume from runs/slurm/kdlab-test-4242/hpc_ckpt_1.ckpt" in resumed.stdout
        last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
        assert last["epoch"] == 2 and last["global_step"] >= 6
        versions = sorted(run_dir.glob("logs/version_*/metrics.csv"))
        assert pd.read_csv(versions[-1])["epoch"].min() >= 1, "the requeued job did not start over"
    finally:
        subprocess.run(["rm", "-rf", str(run_dir)], check=False)


@pytest.mark.slow
@pytest.mark.ddp
def test_torchrun_recipe_trains_with_ddp_on_two_cpu_processes(tmp_path):
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "MASTER_PORT": "29533",
        "OMP_NUM_THREADS": "1",
    }
    args = [
        "--model=kdlab.DistillationModule",
        "--model.student=kdlab.models.MLP",
        "--data=kdlab.data.DigitsDataModule",
        "--trainer.accelerator=cpu",
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=4",
        "--trainer.limit_val_batches=2",
        "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={tmp_path}",
    ]
    done = subprocess.run(
        ["bash", str(TORCHRUN), "2", *args], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 4  # each of the 2 processes took 4 steps on its shard
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in done.stdout + done.stderr
