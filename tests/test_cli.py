"""The kdlab command: LightningCLI subcommands, linking, checkpoints, resume and bad input."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

from kdlab.cli import KDLabCLI, main
from kdlab.models import MLP, ConvNet


def _args(root, *extra, teacher: str | None = None):
    args = [
        "--model=kdlab.DistillationModule",
        "--model.student=kdlab.models.MLP",
        "--model.student.hidden=[16]",
        "--data=kdlab.data.DigitsDataModule",
        f"--trainer.default_root_dir={root}",
        "--trainer.max_epochs=2",
        "--trainer.limit_train_batches=3",
        "--trainer.limit_val_batches=2",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
    ]
    if teacher:
        args += [
            "--model.teacher=kdlab.models.ConvNet",
            "--model.teacher.width=8",
            f"--model.teacher_weights={teacher}",
            "--model.distillers+=kdlab.losses.KD",
            "--model.ce_weight=0.1",
        ]
    return [*args, *extra]


@pytest.fixture
def teacher_file(tmp_path):
    path = tmp_path / "teacher.safetensors"
    save_file(ConvNet(width=8).state_dict(), str(path))
    return path


def test_fit_writes_best_and_last_and_resumes_from_last(tmp_path, teacher_file):
    root = tmp_path / "run"
    assert main(["fit", *_args(root, teacher=str(teacher_file))]) == 0
    assert (root / "checkpoints" / "best.ckpt").is_file()
    assert (root / "checkpoints" / "last.ckpt").is_file()
    metrics = pd.read_csv(root / "logs" / "version_0" / "metrics.csv")
    assert {"train/ce", "train/kd", "train/loss", "val/acc1", "val/agreement", "val/kl", "val/ece"} <= set(
        metrics
    )
    assert metrics["val/teacher_acc1"].notna().sum() == 1  # logged once per fit

    assert (
        main(["fit", *_args(root, "--trainer.max_epochs=3", "--ckpt_path=last", teacher=str(teacher_file))])
        == 0
    )
    resumed = pd.read_csv(root / "logs" / "version_1" / "metrics.csv")
    assert resumed["epoch"].min() == 2, "the resumed run continues at epoch 2 instead of starting over"
    last = torch.load(root / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 9  # 3 epochs of 3 steps, not 2 + 3 from scratch


def test_validate_and_test_subcommands_use_a_checkpoint(tmp_path):
    root = tmp_path / "run"
    main(["fit", *_args(root)])
    ckpt = str(root / "checkpoints" / "best.ckpt")
    assert main(["validate", *_args(root), f"--ckpt_path={ckpt}"]) == 0
    assert main(["test", *_args(root), f"--ckpt_path={ckpt}"]) == 0


def test_a_fresh_fit_never_overwrites_a_runs_checkpoints(tmp_path, capsys):
    root = tmp_path / "run"
    assert main(["fit", *_args(root)]) == 0
    before = {p.name: p.read_bytes() for p in (root / "checkpoints").iterdir()}
    assert main(["fit", *_args(root, "--trainer.max_epochs=1")]) == 2
    error = capsys.readouterr().err
    assert "already holds a run (best.ckpt, last.ckpt)" in error and "--ckpt_path last" in error
    assert {p.name: p.read_bytes() for p in (root / "checkpoints").iterdir()} == before
    assert main(["fit", *_args(tmp_path / "other", "--trainer.max_epochs=1")]) == 0  # elsewhere: fine


@pytest.mark.parametrize("subcommand", ["validate", "test", "predict"])
@pytest.mark.parametrize("which", ["best", "last"])
def test_ckpt_path_best_and_last_name_the_runs_checkpoints(tmp_path, capsys, subcommand, which):
    root = tmp_path / "run"
    assert main(["fit", *_args(root, "--trainer.max_epochs=1")]) == 0
    assert main([subcommand, *_args(root), f"--ckpt_path={which}"]) == 0
    assert main([subcommand, *_args(tmp_path / "none"), f"--ckpt_path={which}"]) == 2
    assert f"there is no {tmp_path / 'none' / 'checkpoints' / which}.ckpt" in capsys.readouterr().err


def test_num_classes_is_linked_from_data_to_student_and_teacher(tmp_path, teacher_file):
    cli = KDLabCLI(args=[*_args(tmp_path, teacher=str(teacher_file))], run=False)
    assert cli.datamodule.num_classes == 10
    assert cli.model.student.num_classes == 10 and cli.model.teacher.num_classes == 10
    assert cli.model.student.fc.out_features == 10


def test_optimizer_from_yaml_covers_student_and_distillers_only(tmp_path, teacher_file):
    config = tmp_path / "optim.yaml"
    config.write_text(
        "model:\n  init_args:\n    optimizer:\n      class_path: torch.optim.AdamW\n"
        "      init_args: {lr: 0.003, weight_decay: 0.01}\n"
        "    lr_scheduler:\n      class_path: torch.optim.lr_scheduler.CosineAnnealingLR\n"
        "      init_args: {T_max: 5}\n"
    )
    cli = KDLabCLI(args=[*_args(tmp_path, teacher=str(teacher_file)), f"--config={config}"], run=False)
    configured = cli.model.configure_optimizers()
    optimizer = configured["optimizer"]
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults["lr"] == 0.003
    assert isinstance(configured["lr_scheduler"]["scheduler"], torch.optim.lr_scheduler.CosineAnnealingLR)
    optimised = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert optimised == {id(p) for p in cli.model.student.parameters()}


def test_print_config_and_help_document_every_argument(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    text = capsys.readouterr().out
    for argument in ("student", "teacher", "teacher_weights", "distillers"):
        assert f"--model.init_args.{argument}" in text
    for argument in ("ce_weight", "optimizer", "lr_scheduler"):
        assert f"--model.init_args.{argument}" in text
    assert "The frozen teacher network" in text
    with pytest.raises(SystemExit):
        main(["fit", "--model.help", "kdlab.DistillationModule"])
    text = capsys.readouterr().out
    for argument in (
        "student",
        "teacher",
        "teacher_weights",
        "distillers",
        "ce_weight",
        "optimizer",
        "lr_scheduler",
    ):
        assert f"--model.{argument}" in text
    assert "frozen" in text.lower() or "teacher" in text
    with pytest.raises(SystemExit):
        main(
            [
                "fit",
                "--model=kdlab.DistillationModule",
                "--model.student=kdlab.models.MLP",
                "--data=kdlab.data.DigitsDataModule",
                "--print_config",
            ]
        )
    assert "class_path: kdlab.models.MLP" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--model.student=kdlab.models.MPL"], "did you mean 'MLP'"),
        (["--model.ce_weight=abc"], "Expected a <class 'float'>"),
        (["--trainer.max_epohcs=3"], "did you mean 'trainer.max_epochs'"),
        (["--model.ce_wieght=0.5"], "ce_weight"),
    ],
)
def test_bad_arguments_give_short_errors_with_hints(tmp_path, capsys, extra, expected):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *_args(tmp_path), *extra])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert expected in error
    assert len(error.splitlines()) < 15 and "Traceback" not in error


def test_malformed_yaml_is_reported_with_its_file_and_line(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("model:\n  class_path: kdlab.DistillationModule\n   init_args: [\n")
    with pytest.raises(SystemExit):
        main(["fit", f"--config={config}"])
    error = capsys.readouterr().err
    assert f"{config} is not valid YAML" in error and "line 3" in error
    good = Path(__file__).parents[1] / "experiments" / "digits" / "vanilla.yaml"
    with pytest.raises(SystemExit):  # the bad file is named among several
        main(["fit", "-c", str(good), "-c", str(config)])
    assert f"kdlab: error: {config} is not valid YAML" in capsys.readouterr().err


def test_missing_teacher_file_is_a_short_error(tmp_path, capsys):
    assert main(["fit", *_args(tmp_path, teacher=str(tmp_path / "nope.safetensors"))]) == 2
    error = capsys.readouterr().err
    assert "no file at" in error and "nope.safetensors" in error and "Traceback" not in error


def test_teacher_weights_that_do_not_fit_name_the_keys(tmp_path, capsys):
    wrong = tmp_path / "wrong.safetensors"
    save_file(MLP().state_dict(), str(wrong))
    assert main(["fit", *_args(tmp_path, teacher=str(wrong))]) == 2
    error = capsys.readouterr().err
    assert "do not fit ConvNet" in error and "missing" in error and "layer1.0.weight" in error
    assert "unexpected" in error and "hidden.0.0.weight" in error


def test_teacher_and_student_with_different_classes_fail_before_training(trainer_kwargs):
    from lightning.pytorch import Trainer

    from kdlab import DistillationModule
    from kdlab.data import DigitsDataModule
    from kdlab.errors import ConfigurationError
    from kdlab.losses import KD

    # Models without a num_classes attribute are checked by probing their logits at set-up.
    teacher = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 7))
    module = DistillationModule(MLP(), teacher=teacher, distillers=[KD()])
    trainer = Trainer(max_epochs=1, **trainer_kwargs)
    with pytest.raises(ConfigurationError, match="teacher predicts 7 classes but the student 10"):
        trainer.fit(module, DigitsDataModule())
    assert trainer.global_step == 0
    with pytest.raises(ConfigurationError, match="the data has 10 classes but the student predicts 7"):
        Trainer(max_epochs=1, **trainer_kwargs).fit(DistillationModule(teacher), DigitsDataModule())
    # Models that declare num_classes are checked when the module is built.
    with pytest.raises(ConfigurationError, match="teacher predicts 10 classes but the student 5"):
        DistillationModule(MLP(num_classes=5), teacher=ConvNet(num_classes=10))


def test_one_list_element_can_be_overridden_by_index(tmp_path, teacher_file):
    args = [
        *_args(tmp_path, teacher=str(teacher_file)),
        "--model.init_args.distillers.0.init_args.temperature",
        "2",
    ]
    cli = KDLabCLI(args=args, run=False)
    assert cli.model.distillers["kd"].temperature == 2.0
    cli = KDLabCLI(
        args=[*_args(tmp_path, teacher=str(teacher_file)), "--model.distillers.0.weight=0.25"], run=False
    )
    assert cli.model.distillers["kd"].weight == 0.25
    with pytest.raises(ValueError, match="has no element 3"):
        KDLabCLI(
            args=[*_args(tmp_path, teacher=str(teacher_file)), "--model.distillers.3.weight=1"], run=False
        )


def test_a_composed_run_is_named_after_its_method_files(tmp_path, monkeypatch):
    from kdlab.cli.run_dir import method_name

    monkeypatch.chdir(tmp_path)
    experiments = Path(__file__).parents[1] / "experiments"
    pair = [experiments / "cifar100" / "base.yaml", experiments / "cifar100" / "resnet56-resnet20.yaml"]
    methods = [experiments / "method" / "kd.yaml", experiments / "method" / "crd.yaml"]
    args = [f"--config={c}" for c in pair + methods] + ["--model.init_args.teacher_weights=null"]
    cli = KDLabCLI(args=args, run=False)
    assert cli.trainer.default_root_dir == "runs/cifar100/resnet56-resnet20/kd+crd"
    assert list(cli.model.distillers) == ["kd", "crd"]
    # Without a method file: the distillers' names, or vanilla.
    assert method_name(["a/pair.yaml"], [{"class_path": "kdlab.losses.DKD"}]) == "dkd"
    assert method_name(["a/pair.yaml"], []) == "vanilla"


def test_a_num_classes_that_contradicts_the_data_is_an_error_naming_both(tmp_path, capsys):
    args = _args(tmp_path / "run", "--model.student.num_classes=5")
    assert main(["fit", *args]) == 2
    error = capsys.readouterr().err
    assert "num_classes is 5, but the data (kdlab.data.DigitsDataModule) has 10 classes" in error


def test_print_config_shows_the_linked_num_classes(capsys):
    experiments = Path(__file__).parents[1] / "experiments" / "cifar10"
    with pytest.raises(SystemExit):
        main(
            [
                "fit",
                "-c",
                str(experiments / "base.yaml"),
                "-c",
                str(experiments / "vanilla.yaml"),
                "--print_config",
            ]
        )
    printed = capsys.readouterr().out
    assert "num_classes: 10" in printed and "num_classes: 100" not in printed  # resnet8's default is 100


def test_a_fit_shows_loss_and_accuracy_then_a_closing_summary_and_no_noise(tmp_path, capsys, recwarn):
    from lightning.pytorch.utilities.model_summary.model_summary import get_human_readable_count

    from kdlab.models.profile import count_flops

    root = tmp_path / "run"
    cli = KDLabCLI(args=["fit", *_args(root, "--trainer.enable_model_summary=true")])
    assert {"train/loss", "val/acc1"} <= set(cli.trainer.progress_bar_metrics)
    printed = capsys.readouterr()
    best = cli.trainer.checkpoint_callback
    summary = f"kdlab: best val/acc1 {100 * float(best.best_model_score):.2f}% at epoch "
    assert summary in printed.out and f"{root / 'checkpoints' / 'best.ckpt'}; last: " in printed.out
    assert "fit took" in printed.out
    flops = count_flops(cli.model.student, (1, 8, 8))
    assert f"Total FLOPs: {get_human_readable_count(flops)}" in printed.out and flops > 0  # per image
    noise = ("💡 Tip", "smaller than the logging interval", "LeafSpec")
    assert not any(n in printed.out + printed.err for n in noise)
    assert not any(n in str(w.message) for w in recwarn for n in noise)


def test_the_summary_names_the_epoch_of_the_best_checkpoint(tmp_path, capsys):
    root = tmp_path / "run"
    cli = KDLabCLI(args=["fit", *_args(root, "--trainer.max_epochs=3")])
    epochs = pd.read_csv(root / "logs" / "version_0" / "metrics.csv").dropna(subset=["val/acc1"])
    best_epoch = int(epochs.loc[epochs["val/acc1"].idxmax(), "epoch"])
    assert cli.trainer.checkpoint_callback.best_epoch == best_epoch
    assert f"at epoch {best_epoch}:" in capsys.readouterr().out
    assert torch.load(root / "checkpoints" / "best.ckpt", weights_only=True)["epoch"] == best_epoch
    # The files carry it too, so a resumed run's summary names the right epoch.
    for name in ("best", "last"):
        states = torch.load(root / "checkpoints" / f"{name}.ckpt", weights_only=True)["callbacks"]
        recorded = [s["best_epoch"] for key, s in states.items() if key.startswith("BestAndLastCheckpoint")]
        assert recorded == [best_epoch], name


def test_a_cifar_fit_shows_the_model_summary_with_the_students_flops(tmp_path, capsys):
    from .datagen import write_cifar10

    write_cifar10(tmp_path / "data", per_batch=20, test=10)
    experiments = Path(__file__).parents[1] / "experiments" / "cifar10"
    args = ["fit", "-c", str(experiments / "base.yaml"), "-c", str(experiments / "vanilla.yaml")]
    args += [f"--data.init_args.root={tmp_path / 'data'}", f"--trainer.default_root_dir={tmp_path / 'run'}"]
    args += ["--trainer.max_epochs=1", "--trainer.limit_train_batches=1", "--trainer.limit_val_batches=1"]
    assert main([*args, "--trainer.enable_progress_bar=false"]) == 0
    assert "Total FLOPs: 25.0 M" in capsys.readouterr().out  # resnet8, one 32×32 image
