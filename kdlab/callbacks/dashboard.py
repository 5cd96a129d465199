"""A KD dashboard for any logger: per-class accuracy, reliability diagram, compression, temperature."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from kdlab.callbacks._figures import reliability_diagram
from kdlab.callbacks._tally import EvaluationTally, per_class_rows, reliability_rows
from kdlab.callbacks.compression import CompressionReport
from kdlab.checks import data_class_names

# W&B run summaries: the best value of these, not the last.
_SUMMARIES = {"val/acc1": "max", "val/acc5": "max", "val/agreement": "max", "val/ece": "min", "val/kl": "min"}


class KDDashboard(Callback):
    """What distillation is doing, beyond the scalars the module logs.

    The module already logs every loss term (``train/<term>``) and, per evaluation,
    ``val/acc1``, ``val/agreement`` (student and teacher predict the same class), ``val/kl``
    (KL(teacher ‖ student)) and ``val/ece``. This callback adds:

    - ``train/temperature/<distiller>``: each distiller's current temperature, per epoch (the
      value schedules and CTKD set, or the configured constant);
    - a per-class table (support, student accuracy, teacher accuracy, agreement) and a
      reliability diagram (accuracy against confidence in ``num_bins`` bins, with ECE) of the
      final validation epoch (and every ``every_n_epochs``) and of each test;
    - the compression table (parameters, FLOPs, bytes, latency of teacher and student) of a
      :class:`CompressionReport` in the trainer's callbacks, or measured here when there is none.

    Tables and figures are written as CSV and PNG files under the CSV/TensorBoard logger's
    ``log_dir`` (else ``<default_root_dir>``), in ``dashboard/``; with a ``WandbLogger`` they are
    also logged as ``wandb.Table`` (``<stage>/per_class_accuracy``, ``<stage>/reliability_bins``,
    ``compression``) and ``wandb.Image`` (``<stage>/reliability_diagram``), and the run summary
    keeps the best ``val/acc1``. Every logger also receives ``<stage>/worst_class_acc1``.
    Needs a module whose validation/test steps return ``{"logits", "targets",
    "teacher_logits"}``, as ``DistillationModule``'s do.

    Args:
        every_n_epochs: Also publish the validation tables every this many epochs (None: only
            the final epoch's).
        num_bins: Confidence bins of the reliability diagram.
        compression: Publish the compression table (measured here if no CompressionReport ran).
    """

    def __init__(
        self, every_n_epochs: int | None = None, num_bins: int = 15, compression: bool = True
    ) -> None:
        super().__init__()
        if every_n_epochs is not None and every_n_epochs < 1:
            raise ValueError(f"KDDashboard: every_n_epochs must be >= 1 or None, got {every_n_epochs}")
        self.every_n_epochs = every_n_epochs
        self.compression = compression
        self.tallies = {"val": EvaluationTally(num_bins), "test": EvaluationTally(num_bins)}
        self.files: list[Path] = []  # everything written, for whoever wants to find it
        self._final: tuple[int, dict[str, Tensor], bool] | None = None
        self._warned = False

    # ----------------------------------------------------------------------------- set-up
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if not trainer.is_global_zero:
            return
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                for key, summary in _SUMMARIES.items():
                    logger.experiment.define_metric(key, summary=summary)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.compression and trainer.is_global_zero:
            self._publish_compression(trainer, pl_module)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        for name, distiller in dict(getattr(pl_module, "distillers", {})).items():
            value = getattr(distiller, "temperature", None)
            if isinstance(value, Tensor) and value.numel() == 1:
                value = value.detach().float().reshape(())
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                value = float(value)
            else:
                continue
            pl_module.log(f"train/temperature/{name}", value, on_step=False, on_epoch=True, batch_size=1)

    # ----------------------------------------------------------------------------- validation
    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.tallies["val"].reset()

    def on_validation_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int, *_: Any
    ) -> None:
        if not trainer.sanity_checking:
            self._collect("val", outputs)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        tally = self.tallies["val"]
        if trainer.sanity_checking or not tally:
            return
        epoch = trainer.current_epoch
        self._final = (epoch, tally.reduce(trainer.strategy), tally.has_teacher)
        due = self.every_n_epochs is not None and (epoch + 1) % self.every_n_epochs == 0
        if due or (trainer.max_epochs is not None and epoch + 1 >= trainer.max_epochs):
            self._publish(trainer, "val", *self._final)
            self._final = None

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._final is not None:  # stopped early, or no fixed number of epochs
            self._publish(trainer, "val", *self._final)
            self._final = None

    # ----------------------------------------------------------------------------- test
    def on_test_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.tallies["test"].reset()

    def on_test_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int, *_: Any
    ) -> None:
        self._collect("test", outputs)

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        tally = self.tallies["test"]
        if tally:
            self._publish(
                trainer, "test", trainer.current_epoch, tally.reduce(trainer.strategy), tally.has_teacher
            )

    # ----------------------------------------------------------------------------- helpers
    def _collect(self, stage: str, outputs: Any) -> None:
        if not isinstance(outputs, dict) or "logits" not in outputs or "targets" not in outputs:
            if not self._warned:
                self._warned = True
                rank_zero_warn(
                    "KDDashboard: the module's validation/test steps return no {'logits', 'targets'} "
                    "dict, so there are no per-class tables or reliability diagrams; use "
                    "kdlab.DistillationModule or return that dict from your steps."
                )
            return
        self.tallies[stage].update(outputs["logits"], outputs["targets"], outputs.get("teacher_logits"))

    def _publish(
        self, trainer: Trainer, stage: str, epoch: int, counts: dict[str, Tensor], has_teacher: bool
    ) -> None:
        if not trainer.is_global_zero:
            return
        folder, tag = self.output_dir(trainer), f"{stage}_epoch{epoch}"
        columns, rows = per_class_rows(counts, has_teacher, class_names(trainer))
        bin_columns, bins, ece = reliability_rows(counts)
        self.files += [
            _write_csv(folder / f"{tag}_per_class.csv", columns, rows),
            _write_csv(folder / f"{tag}_reliability.csv", bin_columns, bins),
            reliability_diagram(bins, ece, folder / f"{tag}_reliability.png", f"{stage}, epoch {epoch}"),
        ]
        step = trainer.global_step
        supported = [row[3] for row in rows if row[2] > 0]
        for logger in trainer.loggers:
            if supported:
                logger.log_metrics({f"{stage}/worst_class_acc1": min(supported)}, step=step)
            if isinstance(logger, WandbLogger):
                logger.log_table(f"{stage}/per_class_accuracy", columns, rows, step=step)
                logger.log_table(f"{stage}/reliability_bins", bin_columns, bins, step=step)
                logger.log_image(f"{stage}/reliability_diagram", [str(self.files[-1])], step=step)

    def _publish_compression(self, trainer: Trainer, pl_module: LightningModule) -> None:
        done = next((c for c in trainer.callbacks if isinstance(c, CompressionReport) and c.report), None)
        try:
            report = done.report if done is not None else CompressionReport().measure_run(trainer, pl_module)
        except ValueError as error:  # no input shape to measure with
            rank_zero_warn(f"KDDashboard: no compression table: {error}")
            return
        networks = [n for n in ("teacher", "student", "model", "ratio") if n in report]
        quantities = list(report[networks[0]])
        columns = ["quantity", *("student / teacher" if n == "ratio" else n for n in networks)]
        rows = [[q, *(report[n].get(q) for n in networks)] for q in quantities]
        self.files.append(_write_csv(self.output_dir(trainer) / "compression.csv", columns, rows))
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_table("compression", columns, rows, step=trainer.global_step)

    @staticmethod
    def output_dir(trainer: Trainer) -> Path:
        """``<log_dir>/dashboard`` of a CSV/TensorBoard logger, else ``<default_root_dir>/dashboard``."""
        logger = trainer.logger
        if isinstance(logger, (CSVLogger, TensorBoardLogger)) and logger.log_dir:
            return Path(logger.log_dir) / "dashboard"
        return Path(trainer.default_root_dir) / "dashboard"


def class_names(trainer: Trainer) -> list[str] | None:
    """The datamodule's class names (``label_names`` or ``class_names``), if it has them."""
    return data_class_names(getattr(trainer, "datamodule", None))


def _write_csv(path: Path, columns: list[str], rows: list[list]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows(rows)
    return path
