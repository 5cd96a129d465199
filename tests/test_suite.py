"""`kdlab suite`: configs × seeds into results.csv, a paper-style table and plots; skip, resume,
failures, SLURM arrays, and the plan's checks."""

from __future__ import annotations

import os
import statistics
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import torch

from kdlab.cli import build
from kdlab.cli import main as kdlab_main
from kdlab.errors import ConfigurationError
from kdlab.suite import main as suite_main
from kdlab.suite.plan import load_suite

from .suite_fixtures import tiny_suite, write_configs, write_suite  # noqa: F401 (fixture)

REPO = Path(__file__).parents[1]


def main(argv: list[str]) -> int:
    """``kdlab suite`` with the builder the kdlab command gives it."""
    return suite_main(argv, build)


def test_tiny_suite_writes_results_table_and_plots(tiny_suite):  # noqa: F811
    assert tiny_suite.exit_code == 0
    results = pd.read_csv(tiny_suite.output / "results.csv")
    assert len(results) == 5  # the teacher once, vanilla and kd with 2 seeds each
    assert list(results["role"]) == ["teacher", "run", "run", "run", "run"]
    assert list(results["method"]) == ["teacher", "vanilla", "kd", "vanilla", "kd"]
    assert set(results["seed"]) == {0, 1}
    kd = results[results["method"] == "kd"]
    assert set(kd["teacher"]) == {"ConvNet"} and set(kd["student"]) == {"MLP"}
    assert results["last_epoch"].eq(1).all() and results["best_epoch"].between(0, 1).all()
    for column in ("best_acc1", "last_acc1", "best_acc5", "last_acc5"):
        assert results[column].between(0, 1).all()
    assert kd["teacher_acc1"].eq(results.iloc[0]["best_acc1"]).all(), "students test the suite's teacher"
    for _, row in results.iterrows():  # the recorded epochs are the checkpoints' own
        checkpoint = torch.load(Path(row["run_dir"]) / "checkpoints" / "best.ckpt", weights_only=True)
        assert checkpoint["epoch"] == row["best_epoch"]

    table = (tiny_suite.output / "table.md").read_text()
    assert "| | ConvNet → MLP |" in table.replace("|  |", "| |")
    assert table.index("| Teacher |") < table.index("| Student |") < table.index("| kd |")
    for checkpoint in ("best", "last"):
        values = [100 * v for v in kd[f"{checkpoint}_acc1"]]
        expected = f"| kd | {statistics.fmean(values):.2f} ± {statistics.stdev(values):.2f} |"
        assert expected in table, f"{checkpoint}: {expected} not in\n{table}"
    for plot in ("accuracy_vs_params.png", "training_curves.png"):
        assert (tiny_suite.output / plot).read_bytes()[:4] == b"\x89PNG"


def test_rerun_skips_finished_runs(tiny_suite, capsys):  # noqa: F811
    stamps = {p: p.stat().st_mtime_ns for p in tiny_suite.output.rglob("result.json")}
    assert len(stamps) == 5
    assert main([str(tiny_suite.file), "--launcher", "inprocess"]) == 0
    assert capsys.readouterr().out.count("finished earlier, skipped") == 5
    assert {p: p.stat().st_mtime_ns for p in tiny_suite.output.rglob("result.json")} == stamps


def test_unfinished_run_is_resumed_from_its_last_checkpoint(tmp_path, monkeypatch):
    configs = write_configs(tmp_path)
    runs = f"  - {{configs: [{configs['trainer']}, {configs['vanilla']}]}}\n"
    suite_file = write_suite(tmp_path, seeds="[3]", runs=runs, teacher=False)
    (vanilla,) = load_suite(suite_file).tasks
    # An interrupted attempt: one of the two epochs done, checkpoints written, no result.
    interrupted = ["fit", f"--config={configs['trainer']}", f"--config={configs['vanilla']}"]
    interrupted.append("--trainer.max_epochs=1")
    assert kdlab_main([*interrupted, f"--trainer.default_root_dir={vanilla.run_dir}"]) == 0
    assert not (vanilla.run_dir / "result.json").exists()

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    assert main([str(suite_file), "--launcher=subprocess"]) == 0, (vanilla.run_dir / "suite.log").read_text()
    resumed = pd.read_csv(vanilla.run_dir / "logs" / "version_1" / "metrics.csv")
    assert resumed["epoch"].min() == 1, "the rerun continued at epoch 1 instead of starting over"
    last = torch.load(vanilla.run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 4  # 2 epochs of 2 batches
    assert "--task=0" in (vanilla.run_dir / "suite.log").read_text(), "it ran in a subprocess"


def test_a_failed_run_is_recorded_and_the_others_still_run(tmp_path, capsys):
    configs = write_configs(tmp_path)
    trainer, vanilla = configs["trainer"], configs["vanilla"]
    suite_file = tmp_path / "failing.yaml"
    suite_file.write_text(
        f"output: {tmp_path / 'out'}\nseeds: [0]\n"
        f"teachers:\n  convnet:\n    configs: [{trainer}, {configs['teacher']}]\n"
        "    args: [--model.init_args.student.init_args.width=abc]\n"
        f"runs:\n  - {{name: broken, configs: [{trainer}, {vanilla}],\n"
        "     args: [--model.init_args.ce_weight=abc]}\n"
        f"  - {{configs: [{trainer}, {configs['kd']}], teacher: convnet}}\n"
        f"  - {{configs: [{trainer}, {vanilla}], args: [--trainer.max_epochs=1]}}\n"
    )
    assert main([str(suite_file), "--launcher", "inprocess"]) == 1
    out = tmp_path / "out"
    assert "ce_weight" in (out / "broken" / "seed0" / "error.txt").read_text()
    assert (out / "teachers" / "convnet" / "seed0" / "error.txt").is_file()
    assert "teacher 'convnet' has no weights" in (out / "kd" / "seed0" / "error.txt").read_text()
    results = pd.read_csv(out / "results.csv")
    assert list(results["run"]) == ["vanilla"]
    table = (out / "table.md").read_text()
    assert "Not finished" in table and "broken (seed 0)" in table and "convnet (seed 0)" in table
    assert "rerun the same command" in capsys.readouterr().out


def test_a_student_whose_teacher_did_not_run_says_so(tmp_path):
    suite_file = write_suite(tmp_path, seeds="[0]")
    suite = load_suite(suite_file)
    kd = next(t for t in suite.tasks if t.name == "kd")
    from kdlab.suite import run_task

    assert run_task(suite, kd, [], build) == 1
    error = (kd.run_dir / "error.txt").read_text()
    assert "teacher 'convnet' has no weights" in error and "teachers run first" in error


def test_slurm_mode_writes_array_jobs_chained_by_dependencies(tmp_path):
    suite_file = write_suite(tmp_path)
    assert main([str(suite_file), "--slurm", "--", "--trainer.max_epochs=240"]) == 0
    folder = tmp_path / "out" / "slurm"
    teachers, runs = (folder / "teachers.sbatch").read_text(), (folder / "runs.sbatch").read_text()
    assert "#SBATCH --array=0-0" in teachers and "#SBATCH --array=1-4" in runs
    for directive in ("--signal=SIGUSR1@90", "--requeue", "--open-mode=append", "--ntasks-per-node=1"):
        assert f"#SBATCH {directive}" in runs
    assert (
        "srun " in runs and "--task=${SLURM_ARRAY_TASK_ID}" in runs and "-- --trainer.max_epochs=240" in runs
    )
    for script in ("teachers.sbatch", "runs.sbatch", "submit.sh"):
        subprocess.run(["bash", "-n", str(folder / script)], check=True)
    # Submit with a stand-in sbatch that prints its arguments and a job id.
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "sbatch").write_text('#!/bin/bash\necho "sbatch $*" >> "$SBATCH_LOG"\necho $((RANDOM + 100))\n')
    (fake / "sbatch").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}", "SBATCH_LOG": str(tmp_path / "calls")}
    subprocess.run(["bash", str(folder / "submit.sh")], check=True, env=env, capture_output=True)
    calls = (tmp_path / "calls").read_text().splitlines()
    assert len(calls) == 3 and calls[0].endswith("teachers.sbatch")
    assert "--dependency=afterok:" in calls[1] and calls[1].endswith("runs.sbatch")
    assert "--dependency=afterany:" in calls[2] and "--report-only" in calls[2]


def test_plan_expands_a_matrix_and_names_runs(tmp_path):
    configs = write_configs(tmp_path)
    trainer = configs["trainer"]
    runs = (
        f"  - name: '{{method}}/T{{temperature}}'\n"
        f"    configs: [{trainer}, {configs['kd']}]\n"
        f"    teacher: convnet\n"
        f"    args: ['--model.init_args.distillers.0.init_args.temperature={{temperature}}',\n"
        f"           '--data.init_args.seed={{seed}}']\n"
        f"    matrix: {{temperature: [2, 4], method: [{{method: kd, other: x}}]}}\n"
        f"  - {{configs: [{trainer}, {configs['vanilla']}]}}\n"
    )
    suite = load_suite(write_suite(tmp_path, seeds="[0, 1]", runs=runs))
    names = [(t.name, t.seed) for t in suite.tasks]
    assert names == [
        ("convnet", 0),
        ("kd/T2", 0), ("kd/T4", 0), ("vanilla", 0),
        ("kd/T2", 1), ("kd/T4", 1), ("vanilla", 1),
    ]  # fmt: skip
    assert suite.tasks[1].args[-2].endswith("temperature=2") and suite.tasks[1].teacher == "convnet"
    assert [t.args[-1] for t in suite.tasks[1:] if t.name == "kd/T4"] == [
        "--data.init_args.seed=0",
        "--data.init_args.seed=1",
    ]  # {seed}: each task's own
    assert suite.tasks[1].run_dir == tmp_path / "out" / "kd" / "T2" / "seed0"
    assert suite.teacher_weights["convnet"] == tmp_path / "out/teachers/convnet/seed0/checkpoints/best.ckpt"


@pytest.mark.parametrize(
    ("runs", "message"),
    [
        ("  - {configs: [nope.yaml]}\n", "no config file at nope.yaml"),
        (
            "  - {configs: [VANILLA], teacher: resnet}\n",
            "unknown teacher 'resnet'; the suite's teachers are: convnet",
        ),
        ("  - {configs: [VANILLA], seed: 3}\n", "unknown key(s) ['seed']"),
        ("  - {name: a, configs: [VANILLA]}\n  - {name: a, configs: [VANILLA]}\n", "would share"),
        (
            "  - {name: '{x}', configs: [VANILLA], matrix: {y: [1]}}\n",
            "uses {x}, which the matrix does not set",
        ),
        ("  - {name: teachers/x, configs: [VANILLA]}\n", "'teachers/' is where"),
    ],
)
def test_plan_errors_say_what_to_fix(tmp_path, runs, message):
    configs = write_configs(tmp_path)
    suite_file = write_suite(tmp_path, runs=runs.replace("VANILLA", str(configs["vanilla"])))
    with pytest.raises(
        ConfigurationError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
    ):
        load_suite(suite_file)


def test_command_line_errors_are_one_line(tmp_path, capsys):
    assert main([str(tmp_path / "missing.yaml")]) == 2
    assert "no suite file at" in capsys.readouterr().err
    assert main([str(write_suite(tmp_path)), "--task", "9"]) == 2
    assert "no task 9; the suite has tasks 0..4" in capsys.readouterr().err


@pytest.mark.slow
def test_the_digits_suite_runs_end_to_end(tmp_path, monkeypatch):
    suite_file = REPO / "experiments" / "digits" / "suite.yaml"
    monkeypatch.chdir(REPO)
    try:
        suite = load_suite(suite_file, output=tmp_path)
    except ConfigurationError as error:
        pytest.skip(f"the digits experiments are not all there yet: {error}")
    fast = ["--trainer.max_epochs=2", "--trainer.limit_train_batches=3", "--trainer.limit_val_batches=2"]
    assert (
        main([str(suite_file), f"--output={tmp_path}", "--seeds=0", "--launcher=inprocess", "--", *fast]) == 0
    )
    results = pd.read_csv(tmp_path / "results.csv")
    assert list(results["method"]) == ["teacher", "vanilla", "kd", "dkd", "dist", "ctkd", "mlkd"]
    assert len(suite.tasks) == 19
    table = (tmp_path / "table.md").read_text()
    assert "ConvNet → MLP" in table and "| ctkd |" in table


def test_kdlab_suite_is_a_tool_of_the_kdlab_command_and_dry_run_prints_the_plan(tmp_path, capsys):
    suite_file = write_suite(tmp_path, seeds="[0]")
    assert kdlab_main(["suite", str(suite_file), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "# 0: teacher convnet seed 0 (to run)" in out and "# 2: run kd seed 0 (to run)" in out
    teacher = tmp_path / "out" / "teachers" / "convnet" / "seed0" / "checkpoints" / "best.ckpt"
    assert f"--seed_everything=0 --trainer.default_root_dir={tmp_path / 'out' / 'kd' / 'seed0'}" in out
    assert f"--model.init_args.teacher_weights={teacher}" in out


def test_a_config_ending_in_a_question_mark_is_used_where_it_exists(tmp_path):
    configs = write_configs(tmp_path)
    tuned = tmp_path / "tuned"
    tuned.mkdir()
    (tuned / "kd.yaml").write_text((configs["kd"]).read_text())
    runs = (
        f"  - name: '{{which}}/kd'\n"
        f"    configs: [{configs['trainer']}, {configs['kd']}, '{tmp_path}/{{which}}/kd.yaml?']\n"
        f"    teacher: convnet\n"
        f"    matrix: {{which: [tuned, plain]}}\n"
    )
    tasks = {t.name: t for t in load_suite(write_suite(tmp_path, runs=runs)).tasks}
    assert tasks["tuned/kd"].configs == (str(configs["trainer"]), str(configs["kd"]), str(tuned / "kd.yaml"))
    assert tasks["plain/kd"].configs == (str(configs["trainer"]), str(configs["kd"]))
