"""Lightning's model summary at fit start, with the student's FLOPs per image."""

from __future__ import annotations

from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import RichModelSummary
from torch import nn

from kdlab.models.profile import count_flops


class ModelSummaryWithFlops(RichModelSummary):
    """The model summary table (parameters per top-level module: student, teacher, distillers) with
    "Total FLOPs" = the student's FLOPs for one input image (2 per multiply-add).

    Lightning counts FLOPs by sending ``example_input_array`` through the datamodule's batch hooks,
    which datamodules that augment ``(images, targets, indices)`` batches on the device cannot take;
    this counts them on the student directly, from the datamodule's ``input_shape``. The ``kdlab``
    command uses it unless ``trainer.enable_model_summary`` is false or another summary is configured.

    Args:
        max_depth: Depth of modules shown (1: the module's direct children).
    """

    def __init__(self, max_depth: int = 1) -> None:
        super().__init__(max_depth=max_depth)

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        shape = getattr(trainer.datamodule, "input_shape", None)
        student = getattr(pl_module, "student", None)
        self._flops = (
            count_flops(student, shape) if shape is not None and isinstance(student, nn.Module) else 0
        )
        super().on_fit_start(trainer, pl_module)

    def summarize(self, *args: Any, total_flops: int = 0, **kwargs: Any) -> None:  # type: ignore[override]
        # Lightning's own count is 0 without an example input; this one is the student's.
        RichModelSummary.summarize(*args, total_flops=self._flops, **kwargs)
