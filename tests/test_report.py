"""``kdlab report RUN_DIR`` on real runs: a CSV-logged fit (then tested), the same fit logged to an
offline W&B run, and the directories it must refuse with a one-line error."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from kdlab.cli import main
from kdlab.models import ConvNet

from .kdlab_runs import checkpoint, digits_args
from .wandb_records import finished_records, history

REPO = Path(__file__).parents[1]
PNG = b"\x89PNG\r\n\x1a\n"
# kdlab's per-step curves (StepLogging: step/loss, step/<term>, step/lr), written every 2 steps.
PER_STEP = [
    f"--config={REPO / 'experiments' / 'features' / 'step_logging.yaml'}",
    "--trainer.log_every_n_steps=2",
]


def _kdlab(*args: str) -> tuple[int, str]:
    """``kdlab <args>`` in this process: (exit code, stderr); process-wide settings put back."""
    stderr = io.StringIO()
    environment = dict(os.environ)
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    with contextlib.redirect_stderr(stderr):
        try:
            code = main(list(args))
        except SystemExit as exit_:
            code = exit_.code
        finally:
            torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
            os.environ.clear()
            os.environ.update(environment)
    return int(code or 0), stderr.getvalue()


def _report(capsys, *args: str) -> tuple[int, str, str]:
    """``kdlab report <args>``: (exit code, stdout, stderr)."""
    capsys.readouterr()
    code, stderr = _kdlab("report", *args)
    return code, capsys.readouterr().out, stderr


def _fit_args(folder: Path, root: Path) -> list[str]:
    return [*digits_args(folder), *PER_STEP, f"--trainer.default_root_dir={root}"]


@pytest.fixture(scope="module")
def csv_run(tmp_path_factory) -> Path:
    """A 3-epoch digits KD fit logged to CSV (logs/version_0), then `kdlab test` of its best
    checkpoint (logs/version_1, test metrics only)."""
    folder = tmp_path_factory.mktemp("report_csv")
    root = folder / "kd"
    code, stderr = _kdlab("fit", *_fit_args(folder, root))
    assert code == 0, stderr[-3000:]
    code, stderr = _kdlab("test", *_fit_args(folder, root), "--ckpt_path=best")
    assert code == 0, stderr[-3000:]
    return root


@pytest.fixture(scope="module")
def wandb_run(tmp_path_factory) -> Path:
    """The same fit as ``csv_run``, logged to an offline W&B run by experiments/logger/wandb.yaml."""
    folder = tmp_path_factory.mktemp("report_wandb")
    root = folder / "kd"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WANDB_MODE", "offline")
        patch.setenv("WANDB_DIR", str(folder))
        logger = REPO / "experiments" / "logger" / "wandb.yaml"
        args = [*_fit_args(folder, root), f"--config={logger}", f"--trainer.logger.init_args.save_dir={root}"]
        code, stderr = _kdlab("fit", *args)
        import wandb

        wandb.finish()
        wandb.teardown()  # its settings singleton would keep this environment
    assert code == 0, stderr[-3000:]
    return root


def _epochs(csv: Path) -> pd.DataFrame:
    """metrics.csv one row per epoch, read independently of the report."""
    return pd.read_csv(csv).dropna(subset=["epoch"]).groupby("epoch").last()


def _printed(out: str, key: str) -> list[str]:
    """The cells of the table row of ``key`` in the printed report."""
    (row,) = [line for line in out.splitlines() if line.startswith(f"│ {key} ")]
    return [cell.strip() for cell in row.strip("│").split("│")]


def _summary(folder: Path) -> dict:
    return json.loads((folder / "summary.json").read_text())


# ----------------------------------------------------------------------------- a CSV-logged run
def test_report_prints_the_final_and_best_metrics_of_the_csv_log(csv_run, capsys):
    code, out, stderr = _report(capsys, str(csv_run))
    assert code == 0, stderr
    epochs = _epochs(csv_run / "logs" / "version_0" / "metrics.csv")
    last_epoch = int(epochs["val/acc1"].dropna().index[-1])
    assert _printed(out, "val/acc1") == [
        "val/acc1",
        f"{epochs['val/acc1'].dropna().iloc[-1]:.4f}",
        str(last_epoch),
    ]
    assert _printed(out, "train/loss")[1] == f"{epochs['train/loss'].dropna().iloc[-1]:.4f}"
    best = int(epochs["val/acc1"].idxmax())
    highest = epochs["val/acc1"].max()
    assert f"best val/acc1 {highest:.4f} ({100 * highest:.2f}%) at epoch {best}" in out
    assert checkpoint(csv_run / "checkpoints" / "best.ckpt")["epoch"] == best  # saved at its end
    # The newest fit is read; the later `kdlab test` version supplies test/*.
    assert "CSV log version_0 of" in out and "version_1" in out
    test = pd.read_csv(csv_run / "logs" / "version_1" / "metrics.csv")
    assert _printed(out, "test/acc1")[1] == f"{test['test/acc1'].dropna().iloc[-1]:.4f}"
    assert f"checkpoints in {csv_run / 'checkpoints'}:" in out
    assert _printed(out, "best.ckpt")[:2] == ["best.ckpt", "best val/acc1"]
    assert _printed(out, "last.ckpt")[:2] == ["last.ckpt", "last epoch"]
    logged = pd.read_csv(csv_run / "logs" / "version_0" / "metrics.csv")
    teacher, student = (
        int(logged[f"compression/{n}/params"].dropna().iloc[0]) for n in ("teacher", "student")
    )
    assert _printed(out, "parameters")[:3] == ["parameters", f"{teacher:,}", f"{student:,}"]


def test_summary_json_and_curves_png_hold_what_the_log_holds(csv_run, capsys):
    code, _, stderr = _report(capsys, str(csv_run))
    assert code == 0, stderr
    summary = _summary(csv_run / "report")
    epochs = _epochs(csv_run / "logs" / "version_0" / "metrics.csv")
    for key in ("val/acc1", "val/loss", "val/agreement", "train/loss", "train/ce"):
        assert summary["final"][key] == epochs[key].dropna().iloc[-1], key
    test = pd.read_csv(csv_run / "logs" / "version_1" / "metrics.csv")
    assert summary["final"]["test/acc1"] == test["test/acc1"].dropna().iloc[-1]
    assert summary["final_epoch"] == int(epochs.index.max())
    assert summary["best"] == {
        "metric": "val/acc1",
        "value": epochs["val/acc1"].max(),
        "epoch": int(epochs["val/acc1"].idxmax()),
    }
    assert summary["source"]["version"] == "version_0"
    assert summary["source"]["versions"] == ["version_0", "version_1"]
    assert summary["checkpoints"]["best"] == str(csv_run / "checkpoints" / "best.ckpt")
    assert set(summary["compression"]) == {"teacher", "student", "ratio"}
    student = checkpoint(csv_run / "checkpoints" / "best.ckpt")["state_dict"]
    assert summary["compression"]["student"]["params"] == sum(
        t.numel() for k, t in student.items() if k.startswith("student.")
    )
    teacher = ConvNet(width=4)  # digits_args' teacher
    assert summary["compression"]["teacher"]["params"] == sum(p.numel() for p in teacher.parameters())
    png = csv_run / "report" / "curves.png"
    assert png.stat().st_size > 0 and png.read_bytes()[:8] == PNG
    import matplotlib.image

    assert matplotlib.image.imread(png).ndim == 3  # decodes as an image
    # StepLogging wrote per-step losses, so the loss panel is by step; accuracies are by epoch.
    assert summary["plots"]["loss"]["x"] == "step"
    assert summary["plots"]["loss"]["series"] == ["train/loss (per step)", "train/loss", "val/loss"]
    assert summary["plots"]["accuracy"] == {
        "x": "epoch",
        "series": ["val/acc1", "val/agreement", "test/acc1"],
    }


def test_a_log_folder_output_no_plot_and_version(csv_run, capsys, tmp_path):
    log = csv_run / "logs" / "version_0"
    code, out, stderr = _report(capsys, str(log), "--output", str(tmp_path / "elsewhere"), "--no-plot")
    assert code == 0, stderr
    assert f"CSV log {log}" in out
    summary = _summary(tmp_path / "elsewhere")
    assert summary["final"]["val/acc1"] == _epochs(log / "metrics.csv")["val/acc1"].dropna().iloc[-1]
    assert "test/acc1" not in summary["final"]  # a lone log folder: the test version is not looked for
    assert "plots" not in summary and not (tmp_path / "elsewhere" / "curves.png").exists()
    assert not (log / "report").exists()

    code, out, stderr = _report(capsys, str(csv_run), "--version", "1", "--output", str(tmp_path / "v1"))
    assert code == 0, stderr
    summary = _summary(tmp_path / "v1")
    assert summary["source"]["version"] == "version_1" and summary["best"] is None
    assert "val/acc1" not in summary["final"] and "test/acc1" in summary["final"]
    assert "no val/acc1 logged" in out

    code, _, stderr = _report(capsys, str(csv_run), "--version", "7")
    assert code == 2
    assert stderr.strip() == (
        f"kdlab report: error: there is no version '7' in {csv_run / 'logs'}; it holds version_0, version_1 "
        "(--version N reads version_N)"
    )


def test_the_best_epoch_is_the_highest_val_acc1_not_the_last(csv_run, capsys, tmp_path):
    """The run's own log with its last epoch's val/acc1 lowered below the first's."""
    run = tmp_path / "run"
    shutil.copytree(csv_run / "logs" / "version_0", run / "logs" / "version_0")
    csv = run / "logs" / "version_0" / "metrics.csv"
    metrics = pd.read_csv(csv)
    rows = metrics["val/acc1"].notna()
    first, last = metrics.index[rows][0], metrics.index[rows][-1]
    metrics.loc[last, "val/acc1"] = metrics.loc[first, "val/acc1"] / 2
    metrics.to_csv(csv, index=False)
    code, out, stderr = _report(capsys, str(run))
    assert code == 0, stderr
    epochs = _epochs(csv)
    assert (
        _summary(run / "report")["best"]["epoch"]
        == int(epochs["val/acc1"].idxmax())
        != int(metrics["epoch"][last])
    )
    assert _printed(out, "val/acc1")[1] == f"{metrics.loc[last, 'val/acc1']:.4f}"


def test_lightnings_per_step_columns_are_drawn_by_step_too(csv_run, capsys, tmp_path):
    """The run's own log with StepLogging's step/loss as the train/loss_step of a module that logs
    ``on_step=True, on_epoch=True``; without per-step columns the loss panel is by epoch."""
    log = tmp_path / "run" / "logs" / "version_0"
    shutil.copytree(csv_run / "logs" / "version_0", log)
    metrics = pd.read_csv(log / "metrics.csv")
    steps = metrics[[c for c in metrics if not c.startswith("step/")]].assign(
        **{"train/loss_step": metrics["step/loss"]}
    )
    steps.to_csv(log / "metrics.csv", index=False)
    code, _, stderr = _report(capsys, str(tmp_path / "run"))
    assert code == 0, stderr
    assert _summary(tmp_path / "run" / "report")["plots"]["loss"]["x"] == "step"
    assert "train/loss_step" not in _summary(tmp_path / "run" / "report")["final"]
    epochs_only = metrics[[c for c in metrics if not c.startswith("step/")]]
    epochs_only.to_csv(log / "metrics.csv", index=False)
    code, _, stderr = _report(capsys, str(tmp_path / "run"))
    assert code == 0, stderr
    assert _summary(tmp_path / "run" / "report")["plots"]["loss"] == {
        "x": "epoch",
        "series": ["train/loss", "val/loss"],
    }


# ----------------------------------------------------------------------------- an offline W&B run
@pytest.mark.slow
def test_an_offline_wandb_run_reports_what_the_csv_run_of_the_same_fit_does(wandb_run, csv_run, capsys):
    code, out, stderr = _report(capsys, str(wandb_run))
    assert code == 0, stderr
    (folder,) = (wandb_run / "wandb").glob("offline-run-*")
    assert f"W&B run {folder.name} of {wandb_run}" in out
    assert str(next(folder.glob("run-*.wandb"))) in out
    summary = _summary(wandb_run / "report")
    assert summary["source"]["kind"] == "wandb"
    # What W&B received, read by the tests' own reader of the .wandb file:
    logged = [row["val/acc1"] for row in history(folder) if "val/acc1" in row]
    assert summary["final"]["val/acc1"] == logged[-1]
    assert summary["best"]["value"] == max(logged)
    summaries = [
        json.loads(item.value_json)
        for record in finished_records(folder)
        if record.WhichOneof("record_type") == "summary"
        for item in record.summary.update
        if list(item.nested_key) == ["val/acc1"] or item.key == "val/acc1"
    ]
    assert summary["wandb_summary"]["val/acc1"] == summaries[-1] == {"max": summary["best"]["value"]}
    # The CSV run of the same configuration: same metrics, best epoch, curves.
    _report(capsys, str(csv_run))
    reference = _summary(csv_run / "report")
    for key, value in reference["final"].items():
        if not key.startswith("test/"):
            assert summary["final"][key] == pytest.approx(value, rel=1e-6), key
    assert summary["best"]["epoch"] == reference["best"]["epoch"]
    assert summary["final_epoch"] == reference["final_epoch"]
    assert summary["compression"]["student"]["params"] == reference["compression"]["student"]["params"]
    assert summary["checkpoints"]["last"] == str(wandb_run / "checkpoints" / "last.ckpt")
    assert summary["plots"]["loss"] == reference["plots"]["loss"]
    assert (wandb_run / "report" / "curves.png").read_bytes()[:8] == PNG


@pytest.mark.slow
def test_a_wandb_run_folder_or_wandb_dir_and_a_run_id(wandb_run, capsys, tmp_path):
    (folder,) = (wandb_run / "wandb").glob("offline-run-*")
    run_id = folder.name.rpartition("-")[2]
    code, _, stderr = _report(capsys, str(wandb_run), "--output", str(tmp_path / "root"), "--no-plot")
    assert code == 0, stderr
    expected = _summary(tmp_path / "root")
    for args in ([str(folder)], [str(wandb_run / "wandb")], [str(wandb_run), "--version", run_id]):
        output = tmp_path / str(len(args)) / Path(args[0]).name
        code, _, stderr = _report(capsys, *args, "--output", str(output), "--no-plot")
        assert code == 0, stderr
        summary = _summary(output)
        assert summary["source"]["version"] == folder.name
        assert summary["checkpoints"]["best"] == str(wandb_run / "checkpoints" / "best.ckpt")
        assert summary["final"] == expected["final"]
    code, _, stderr = _report(capsys, str(wandb_run), "--version", "nosuchid")
    assert code == 2 and f"there is no W&B run 'nosuchid' in {wandb_run / 'wandb'}" in stderr


# ----------------------------------------------------------------------------- errors
def _error(capsys, *args: str) -> str:
    code, out, stderr = _report(capsys, *args)
    assert code == 2, out
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kdlab report: error: "), stderr
    return lines[0]


def test_a_missing_run_dir_is_an_error(capsys, tmp_path):
    message = _error(capsys, str(tmp_path / "runs" / "nothing"))
    assert f"there is no directory '{tmp_path / 'runs' / 'nothing'}'" in message
    assert "trainer.default_root_dir" in message


def test_a_directory_without_a_run_says_what_was_looked_for(capsys, tmp_path):
    (tmp_path / "kd" / "logs").mkdir(parents=True)
    message = _error(capsys, str(tmp_path))
    for looked_for in ("metrics.csv", "logs/version_*/", "lightning_logs/version_*/", "run-*.wandb"):
        assert looked_for in message
    assert "its folders kd hold runs: give one of them" in message
    assert "give the trainer.default_root_dir" in _error(capsys, str(tmp_path / "kd"))


@pytest.mark.parametrize(
    "content", ["", "epoch,step,train/loss,val/acc1\n"], ids=["zero-bytes", "header-only"]
)
def test_an_empty_metrics_csv_is_an_error(capsys, tmp_path, content):
    log = tmp_path / "logs" / "version_0"
    log.mkdir(parents=True)
    (log / "metrics.csv").write_text(content)
    message = _error(capsys, str(tmp_path))
    assert f"{log / 'metrics.csv'} is empty: the run stopped before it logged anything" in message


def test_a_log_without_metrics_or_with_only_compression_is_an_error(capsys, tmp_path):
    log = tmp_path / "logs" / "version_0"
    log.mkdir(parents=True)
    (log / "hparams.yaml").write_text("ce_weight: 0.5\n")  # what a run killed before its first log leaves
    assert f"{log} holds no metrics.csv" in _error(capsys, str(tmp_path))
    (log / "metrics.csv").write_text("compression/student/params,epoch,step\n1210.0,,0\n")
    assert "holds no train/, val/ or test/ metrics yet (only compression/student/params)" in _error(
        capsys, str(tmp_path)
    )


def test_an_unreadable_wandb_log_is_an_error(capsys, tmp_path):
    folder = tmp_path / "wandb" / "offline-run-20260101_000000-abc123"
    folder.mkdir(parents=True)
    (folder / "run-abc123.wandb").write_bytes(b"not a transaction log")
    message = _error(capsys, str(tmp_path))
    assert "W&B could not read" in message and "run-abc123.wandb" in message
