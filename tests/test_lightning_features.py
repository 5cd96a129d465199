"""The Lightning features of experiments/features/*.yaml, each composed with a distillation run
from the command line and checked for its effect (not only that the run finishes)."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
import torch
from lightning.pytorch import Callback
from safetensors.torch import load_file

from kdlab.callbacks import StudentEMA
from kdlab.callbacks.ema import EMA_KEY
from kdlab.cli import build, main

from .kdlab_runs import checkpoint, digits_args, metrics, run

FEATURES = Path(__file__).parents[1] / "experiments" / "features"


def fit_with(feature: str, tmp_path: Path, *extra: str, probe: Callback | None = None):
    """``kdlab fit -c experiments/features/<feature>.yaml`` + the digits KD run, in this process."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    args = ["-c", str(FEATURES / f"{feature}.yaml"), *digits_args(tmp_path)]
    args += [f"--trainer.default_root_dir={tmp_path / 'run'}", *extra]
    cli = build(args, run=False)
    if probe is not None:
        cli.trainer.callbacks.append(probe)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return cli


class OptimizerSteps(Callback):
    """Records the global gradient norm at each optimizer step (after clipping) and the dtype of
    the student's first layer output."""

    def __init__(self) -> None:
        self.norms: list[float] = []
        self.dtypes: set[torch.dtype] = set()

    def on_train_start(self, trainer, pl_module) -> None:
        def after_step(optimizer, *_):  # grads are computed by the step's closure
            grads = [
                p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None
            ]
            self.norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))

        trainer.optimizers[0].register_step_post_hook(after_step)
        first = next(m for m in pl_module.student.modules() if isinstance(m, torch.nn.Linear))
        first.register_forward_hook(lambda m, a, out: self.dtypes.add(out.dtype) if m.training else None)


def test_bf16_runs_the_students_layers_in_bfloat16_and_keeps_weights_in_float32(tmp_path):
    probe = OptimizerSteps()
    cli = fit_with("bf16", tmp_path, probe=probe)
    assert probe.dtypes == {torch.bfloat16}
    assert {p.dtype for p in cli.model.student.parameters()} == {torch.float32}
    assert math.isfinite(metrics(tmp_path / "run", 0)["train/loss"].iloc[-1])


def test_gradient_clipping_bounds_the_norm_each_optimizer_step_sees(tmp_path):
    unclipped = OptimizerSteps()
    fit_with("gradient_clipping", tmp_path / "a", "--trainer.gradient_clip_val=null", probe=unclipped)
    clipped = OptimizerSteps()
    fit_with("gradient_clipping", tmp_path / "b", "--trainer.gradient_clip_val=0.05", probe=clipped)
    assert max(unclipped.norms) > 0.1  # clipping has something to do
    assert max(clipped.norms) <= 0.05 * (1 + 1e-4)


def test_accumulation_steps_the_optimizer_once_per_four_batches(tmp_path):
    probe = OptimizerSteps()
    cli = fit_with("accumulate", tmp_path, probe=probe)
    batches = cli.trainer.max_epochs * 6  # digits_args: 6 training batches per epoch
    assert cli.trainer.global_step == len(probe.norms) == cli.trainer.max_epochs * math.ceil(6 / 4)
    assert len(probe.norms) < batches


def test_early_stopping_ends_the_run_when_val_acc1_stops_improving(tmp_path):
    cli = fit_with(
        "early_stopping",
        tmp_path,
        "--trainer.max_epochs=20",
        "--trainer.callbacks.0.init_args.patience=1",
        "--trainer.callbacks.0.init_args.min_delta=0.5",  # no epoch improves by 50 points
    )
    assert cli.trainer.current_epoch == 2  # epoch 0 sets the best, epoch 1 misses it: stop
    assert (tmp_path / "run" / "checkpoints" / "best.ckpt").is_file()


def test_named_checkpoints_are_the_top_three_by_val_acc1_besides_best_and_last(tmp_path):
    fit_with("named_checkpoints", tmp_path, "--trainer.max_epochs=4")
    named = sorted((tmp_path / "run" / "logs" / "version_0" / "checkpoints").glob("*.ckpt"))
    assert len(named) == 3
    logged = metrics(tmp_path / "run", 0)["val/acc1"]
    for path in named:
        epoch, accuracy = path.stem.split("-acc1_")
        assert float(accuracy) == pytest.approx(logged.loc[int(epoch.removeprefix("epoch"))], abs=1e-4)
    kept = sorted(logged.sort_values(ascending=False).index[:3].tolist())
    assert sorted(int(p.stem[5:8]) for p in named) == kept or logged.duplicated().any()
    assert {p.name for p in (tmp_path / "run" / "checkpoints").glob("*.ckpt")} == {"best.ckpt", "last.ckpt"}


def test_step_logging_writes_each_term_and_the_lr_every_n_steps(tmp_path):
    fit_with("step_logging", tmp_path, "--trainer.log_every_n_steps=2")
    frame = pd.read_csv(tmp_path / "run" / "logs" / "version_0" / "metrics.csv")
    steps = frame.dropna(subset=["step/loss"])
    assert steps["step"].tolist() == list(range(2, 18 + 1, 2))  # 3 epochs × 6 steps
    torch.testing.assert_close(
        torch.tensor(steps["step/loss"].values),
        torch.tensor((steps["step/ce"] + steps["step/noisykd"]).values),
        check_dtype=False,
    )
    assert steps["step/lr"].round(6).tolist() == [0.05] * 3 + [0.025] * 3 + [0.0125] * 3  # StepLR, 0.5/epoch


def test_rich_progress_bar_and_a_deeper_model_summary_run_from_yaml(tmp_path, capsys):
    code, stderr = run(
        [
            "-c",
            str(FEATURES / "rich.yaml"),
            *[a for a in digits_args(tmp_path) if "enable_" not in a],
            f"--trainer.default_root_dir={tmp_path / 'run'}",
        ]
    )
    assert code == 0, stderr
    out = capsys.readouterr().out
    assert "student.hidden" in out and "student.fc" in out  # two levels deep (one: "student" only)
    assert "student.hidden.0" not in out and "FLOPs" in out
    assert "━" in out  # rich's table rules, in the summary and the progress bar


# ----------------------------------------------------------------------------- EMA
def test_ema_update_is_the_exponential_average_with_warmup():
    ema = StudentEMA(decay=0.9, warmup=True)
    ema.update({"w": torch.zeros(2), "n": torch.tensor(0)})
    ema.update({"w": torch.ones(2), "n": torch.tensor(5)})  # decay min(0.9, 1/10) = 0.1
    torch.testing.assert_close(ema.average["w"], torch.full((2,), 0.9))
    assert int(ema.average["n"]) == 5  # integer buffers are copied
    ema.update({"w": torch.ones(2) * 2, "n": torch.tensor(6)})  # decay min(0.9, 2/11)
    torch.testing.assert_close(ema.average["w"], 0.9 * 2 / 11 + 2 * (1 - 2 / 11) * torch.ones(2))
    with pytest.raises(ValueError, match=r"decay must be in \[0, 1\)"):
        StudentEMA(decay=1.0)


@pytest.mark.slow
def test_ema_weights_are_validated_checkpointed_and_exported(tmp_path):
    # A slow average without warm-up stays near the initial weights: far from the trained ones.
    slow = ["--trainer.callbacks.0.init_args.decay=0.98", "--trainer.callbacks.0.init_args.warmup=false"]
    cli = fit_with("ema", tmp_path, *slow)
    saved = checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    average = {k.removeprefix("student."): v for k, v in saved[EMA_KEY].items()}
    trained = {
        k.removeprefix("student."): v for k, v in saved["state_dict"].items() if k.startswith("student.")
    }
    assert average.keys() == trained.keys()

    def accuracy(weights: dict) -> float:
        student, data = cli.model.student, cli.datamodule
        student.load_state_dict(weights)
        student.eval()
        correct = total = 0
        with torch.no_grad():
            for i, batch in enumerate(data.val_dataloader()):
                if i == 3:  # digits_args: limit_val_batches=3
                    break
                inputs, targets = data.on_after_batch_transfer(batch, 0)[:2]
                correct += int((student(inputs).argmax(1) == targets).sum())
                total += len(targets)
        return correct / total

    averaged = accuracy(average)
    assert abs(averaged - accuracy(trained)) > 0.02  # the checks below can tell the two apart
    # The last val/acc1 is the averaged student's accuracy on the validation split.
    assert metrics(tmp_path / "run", 0)["val/acc1"].iloc[-1] == pytest.approx(averaged, abs=1e-6)
    # Validating the checkpoint later (kdlab validate --ckpt_path) also evaluates the average.
    args = ["-c", str(FEATURES / "ema.yaml"), *digits_args(tmp_path), *slow]
    args.append(f"--trainer.default_root_dir={tmp_path / 'v'}")
    later = build(args, run=False)
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    result = later.trainer.validate(
        later.model, datamodule=later.datamodule, ckpt_path=str(ckpt), verbose=False
    )
    assert result[0]["val/acc1"] == pytest.approx(averaged, abs=1e-6)
    # export writes the validated (averaged) weights by default, the trained ones when asked.
    for weights, expected in (("auto", average), ("student", trained)):
        out = tmp_path / f"{weights}.safetensors"
        assert (
            main(
                [
                    "export",
                    "--ckpt",
                    str(ckpt),
                    "--format",
                    "safetensors",
                    "--output",
                    str(out),
                    "--weights",
                    weights,
                ]
            )
            == 0
        )
        written = load_file(str(out))
        assert all(torch.equal(written[k], expected[k]) for k in expected)


@pytest.mark.slow
def test_a_resumed_ema_run_ends_where_an_uninterrupted_one_does(tmp_path):
    fit_with("ema", tmp_path / "whole", "--trainer.max_epochs=3")
    fit_with("ema", tmp_path / "cut", "--trainer.max_epochs=2")
    args = ["-c", str(FEATURES / "ema.yaml"), *digits_args(tmp_path / "cut")]
    args += [f"--trainer.default_root_dir={tmp_path / 'cut' / 'run'}", "--trainer.max_epochs=3"]
    code, stderr = run([*args, "--ckpt_path=last"])
    assert code == 0, stderr
    whole = checkpoint(tmp_path / "whole" / "run" / "checkpoints" / "last.ckpt")
    resumed = checkpoint(tmp_path / "cut" / "run" / "checkpoints" / "last.ckpt")
    for key, value in whole[EMA_KEY].items():
        assert torch.equal(resumed[EMA_KEY][key], value), key
