"""Compression numbers (parameters, FLOPs, bytes, latency) and the CompressionReport callback."""

from __future__ import annotations

import csv

import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import CSVLogger
from safetensors.torch import save_file
from torch import nn

from kdlab import DistillationModule
from kdlab.callbacks import CompressionReport
from kdlab.data import DigitsDataModule
from kdlab.models import MLP, ConvNet
from kdlab.models.cifar import resnet8, resnet20
from kdlab.models.profile import (
    count_flops,
    count_parameters,
    latency_per_image,
    latency_quantiles,
    serialized_bytes,
)


def test_parameters_and_flops_by_hand():
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.Flatten(), nn.Linear(4 * 8 * 8, 10))
    assert count_parameters(model) == 36 + 256 * 10 + 10
    model[0].requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == 256 * 10 + 10
    # 2 FLOPs per multiply-add: conv 8·8 positions × 4 outputs × 9 taps, linear 256 × 10.
    assert count_flops(model, (1, 8, 8)) == 2 * (8 * 8 * 4 * 9) + 2 * 256 * 10


def test_resnet8_flops_match_the_benchmarks_multiply_adds():
    # resnet8 is reported as ~12.5M multiply-adds at 32×32 (2 FLOPs each).
    assert count_flops(resnet8(), (3, 32, 32)) == pytest.approx(25.0e6, rel=0.01)


def test_serialized_bytes_is_the_file_size(tmp_path):
    model = ConvNet(width=8)
    path = tmp_path / "m.safetensors"
    save_file(model.state_dict(), str(path))
    assert serialized_bytes(model) == path.stat().st_size
    torch.save(model.state_dict(), tmp_path / "m.pt")
    assert serialized_bytes(model, "torch") == pytest.approx((tmp_path / "m.pt").stat().st_size, rel=0.05)
    with pytest.raises(ValueError, match="safetensors' or 'torch'"):
        serialized_bytes(model, "onnx")


def test_measuring_leaves_the_model_alone():
    model = ConvNet(width=8).train()
    fired = []
    model.layer1.register_forward_hook(lambda *args: fired.append(1))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    count_flops(model, (1, 8, 8))
    seconds = latency_per_image(model, (1, 8, 8), warmup=1, repeats=3)
    assert 0 < seconds < 1
    assert fired == [] and model.training and len(model.layer1._forward_hooks) == 1
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BN stats untouched


def _read_metrics(path) -> dict[str, float]:
    with open(path) as handle:
        rows = list(csv.DictReader(handle))
    return {k: float(v) for row in rows for k, v in row.items() if k.startswith("compression/") and v}


def test_report_is_printed_and_logged_at_fit_start(tmp_path, capsys):
    teacher, student = ConvNet(width=16), MLP(hidden=[16])
    report = CompressionReport(repeats=2, warmup=1)
    logger = CSVLogger(tmp_path, name="logs", version=0)
    trainer = Trainer(
        accelerator="cpu", max_epochs=1, limit_train_batches=1, limit_val_batches=1, logger=logger,
        callbacks=[report], enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
    )  # fmt: skip
    trainer.fit(DistillationModule(student, teacher=teacher), DigitsDataModule())
    printed = capsys.readouterr().out
    assert "Compression report (input 1×8×8)" in printed and "student / teacher" in printed
    numbers = report.report
    assert numbers["teacher"]["params"] == count_parameters(teacher)
    assert numbers["student"]["params"] == count_parameters(student)
    assert numbers["ratio"]["params"] == pytest.approx(count_parameters(student) / count_parameters(teacher))
    assert numbers["student"]["flops"] == count_flops(student, (1, 8, 8))
    logged = _read_metrics(tmp_path / "logs" / "version_0" / "metrics.csv")
    assert logged["compression/student/params"] == numbers["student"]["params"]
    assert logged["compression/ratio/bytes"] == pytest.approx(numbers["ratio"]["bytes"])
    assert logged["compression/teacher/cpu_latency_ms"] > 0


def test_without_an_input_shape_the_error_says_how_to_fix(trainer_kwargs):
    class NoShape(DigitsDataModule):
        input_shape = None

    trainer = Trainer(max_epochs=1, limit_train_batches=1, callbacks=[CompressionReport()], **trainer_kwargs)
    with pytest.raises(ValueError, match=r"no input_shape.*CompressionReport\(input_shape="):
        trainer.fit(DistillationModule(MLP()), NoShape())


def test_zoo_pair_config_reports_compression_on_the_digits(tmp_path, capsys):
    from pathlib import Path

    from kdlab.cli import main

    config = Path(__file__).parents[1] / "experiments" / "digits" / "resnet20-resnet8-kd.yaml"
    tiny = "--trainer.max_epochs 1 --trainer.limit_train_batches 2 --trainer.limit_val_batches 1"
    quiet = "--trainer.enable_progress_bar false --trainer.enable_model_summary false"
    args = [
        "fit",
        "-c",
        str(config),
        "--model.teacher_weights",
        "null",
        "--trainer.default_root_dir",
        str(tmp_path),
    ]
    main([*args, *tiny.split(), *quiet.split()])
    printed = capsys.readouterr().out
    assert "Compression report (input 1×8×8)" in printed
    # resnet8 / resnet20 parameters at 10 classes: stems and stages of the benchmark, 1 input channel.
    ratio = count_parameters(resnet8(10, 1)) / count_parameters(resnet20(10, 1))
    assert f"{ratio:.3f}" in printed
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()


def test_latency_is_the_median_of_timed_passes_and_a_busy_machine_is_flagged(monkeypatch, trainer_kwargs):
    import itertools
    import statistics
    import types

    import kdlab.models.profile as profile

    timed = [1.0, 1.1, 1.2, 1.0, 30.0, 1.1, 1.0, 1.2, 1.1, 1.0]  # one pass hit by another process
    passes, calls, now = itertools.cycle([5.0, 5.0, *timed]), itertools.count(), [0.0]

    def perf_counter() -> float:  # every second reading ends a pass that took the next duration
        if next(calls) % 2:
            now[0] += next(passes)
        return now[0]

    monkeypatch.setattr(profile, "time", types.SimpleNamespace(perf_counter=perf_counter))
    deciles = statistics.quantiles(timed, n=10, method="inclusive")
    low, median, high = latency_quantiles(MLP(), (1, 8, 8), warmup=2, repeats=10)
    assert (low, median, high) == pytest.approx((deciles[0], 1.1, deciles[-1]))  # warm-up left out
    assert high / low > 2
    assert latency_per_image(MLP(), (1, 8, 8), warmup=2, repeats=10) == pytest.approx(1.1)

    report = CompressionReport(warmup=2, repeats=10)
    module = DistillationModule(MLP(hidden=[16]), teacher=ConvNet(width=8))
    options = {"max_epochs": 1, "limit_train_batches": 1, "limit_val_batches": 0}
    with pytest.warns(UserWarning, match=r"latency varied more than 2.0x .*the machine was busy"):
        Trainer(**(trainer_kwargs | options), callbacks=[report]).fit(module, DigitsDataModule())
    assert "median of 10 passes after 2 warm-up" in report.timing_label()


def test_the_kdlab_command_reports_compression_by_default(tmp_path):
    from kdlab.cli import KDLabCLI

    args = ["--model=kdlab.DistillationModule", "--model.student=kdlab.models.MLP"]
    args += ["--data=kdlab.data.DigitsDataModule", f"--trainer.default_root_dir={tmp_path}"]
    cli = KDLabCLI(args=args, run=False)
    assert any(isinstance(c, CompressionReport) for c in cli.trainer.callbacks)
