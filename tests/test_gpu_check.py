"""benchmarks/gpu_check.sh, the prepared GPU script, runs every step in its CPU dry mode."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .datagen import write_cifar10

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_script_runs_every_step_in_dry_mode(tmp_path):
    write_cifar10(tmp_path / "cifar", per_batch=120, test=40)
    out = tmp_path / "out"
    env = os.environ | {"KDLAB_BIN": str(Path(sys.executable).parent), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_check.sh"), str(tmp_path / "cifar"), str(out), "--dry"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    steps = [line.split()[0] for line in (out / "seconds.txt").read_text().splitlines()]
    assert steps == ["kd_step", "kd_epoch", "end_to_end", "fit_fast"]
    assert "online / floor" in (out / "kd_step.log").read_text()
    assert "KD gain over vanilla" in (out / "end_to_end.log").read_text()
    assert (out / "fit_fast" / "checkpoints" / "last.ckpt").is_file()
