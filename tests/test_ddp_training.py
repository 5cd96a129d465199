"""DDP on CPU (2 processes, gloo) through ``kdlab fit``: same results as one process with the same
global batch, metrics reduced over both processes, each checkpoint written once, fail-fast.

Why the results match: both DataModules cut batches with ``ShardedBatchSampler``, where rank
``r`` of 2 takes positions ``r, r+2, ...`` of the epoch's permutation, so with 32 samples per
rank the two ranks' batch ``k`` together hold exactly positions ``64k .. 64k+63``: the
single-process batch ``k`` of 64. The MLP student has no BatchNorm (the teacher's is frozen),
CE and KD are batch means, and DDP averages the two equal-sized ranks' gradients, which is the
gradient of the 64-sample mean. Only the order of floating-point sums differs, hence a
tolerance of a few ulps instead of bit equality. Validation shards interleave the same way, so
the first 3 batches of 32 per rank are the first 3 batches of 64.
"""

from __future__ import annotations

import subprocess
import time

import pytest
import torch

from .kdlab_runs import QUIET, checkpoint, kill_group, metrics, run, start, teacher_file


def _args(folder, root, batch_size: int, extra: tuple[str, ...] = ()) -> list[str]:
    return [
        "--seed_everything=0",
        "--trainer.deterministic=true",
        "--model=kdlab.DistillationModule",
        "--model.student=kdlab.models.MLP",
        "--model.student.hidden=[16]",
        "--model.teacher=kdlab.models.ConvNet",
        "--model.teacher.width=4",
        f"--model.teacher_weights={teacher_file(folder)}",
        "--model.ce_weight=0.5",
        "--model.distillers+=kdlab.losses.KD",
        "--data=kdlab.data.DigitsDataModule",
        f"--data.batch_size={batch_size}",
        "--trainer.max_epochs=2",
        "--trainer.limit_train_batches=6",
        "--trainer.limit_val_batches=3",
        "--trainer.plugins=tests.reliability_helpers.RecordingCheckpointIO",
        f"--trainer.plugins.log={root / 'writes.log'}",
        f"--trainer.default_root_dir={root}",
        *QUIET,
        *extra,
    ]


def _ddp(args: list[str], root, timeout: float) -> tuple[int, str, float]:
    """Run on 2 CPU processes; kill the whole group if it does not end within ``timeout``."""
    root.mkdir(parents=True, exist_ok=True)
    log = root / "ddp.log"
    began = time.monotonic()
    process = start(
        [*args, "--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.strategy=ddp"], log
    )
    try:
        code = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(process)
        pytest.fail(f"the DDP run hung for {timeout} s:\n{log.read_text()[-4000:]}")
    return code, log.read_text(), time.monotonic() - began


@pytest.mark.ddp
def test_two_processes_match_one_with_the_same_global_batch(tmp_path, kdlab_references):
    folder = kdlab_references.folder
    single = tmp_path / "single"
    code, stderr = run(_args(folder, single, batch_size=64))
    assert code == 0, stderr[-3000:]
    ddp = tmp_path / "ddp"
    code, output, _ = _ddp(_args(folder, ddp, batch_size=32), ddp, timeout=300)
    assert code == 0, output[-4000:]

    # Each checkpoint is written once, by rank 0, at the same moments as in the single process.
    writes = (ddp / "writes.log").read_text().splitlines()
    assert writes == (single / "writes.log").read_text().splitlines()
    assert writes and all(line.startswith("0 ") for line in writes)
    assert sorted(p.name for p in (ddp / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]

    trained, expected = (
        checkpoint(ddp / "checkpoints" / "last.ckpt"),
        checkpoint(single / "checkpoints" / "last.ckpt"),
    )
    assert trained["global_step"] == expected["global_step"] == 12
    for key, value in expected["state_dict"].items():
        torch.testing.assert_close(trained["state_dict"][key], value, rtol=1e-5, atol=1e-6, msg=key)

    # Validation metrics are reduced over both processes' shards: rank 0's half alone differs.
    got, want = metrics(ddp, 0), metrics(single, 0)
    for column in ("val/acc1", "val/acc5", "val/agreement", "val/kl", "val/ece", "train/loss", "train/kd"):
        torch.testing.assert_close(
            torch.tensor(got[column].to_numpy()), torch.tensor(want[column].to_numpy()), rtol=1e-4, atol=1e-5
        )


@pytest.mark.ddp
def test_a_non_finite_loss_on_one_rank_stops_both_quickly_and_keeps_the_good_checkpoint(
    tmp_path, kdlab_references
):
    root = tmp_path / "ddp"
    # Rank 1's 8th training step (epoch 1, batch 1) goes NaN; rank 0's stays finite.
    faulty = (
        "--model.distillers+=tests.reliability_helpers.NonFiniteAt",
        "--model.distillers.init_args.call=8",
        "--model.distillers.init_args.rank=1",
    )
    code, output, seconds = _ddp(_args(kdlab_references.folder, root, 32, faulty), root, timeout=180)
    assert code != 0
    # Rank 1 names the term and the batch; rank 0 says that it stopped because rank 1 did.
    assert "kdlab: error: non-finite loss term(s) nonfiniteat=nan at epoch 1, batch 1" in output
    assert "kdlab: error: another process of this distributed run stopped" in output
    assert "Traceback" not in output
    last = checkpoint(root / "checkpoints" / "last.ckpt")
    assert last["global_step"] == 6  # the end of epoch 0, the last good state
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values())
    print(f"both ranks stopped {seconds:.1f} s after launch")
