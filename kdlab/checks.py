"""Consistency checks of a DistillationModule's parts, each failing with a message that says how to fix it."""

from __future__ import annotations

from torch import Tensor, nn

from kdlab.errors import ConfigurationError
from kdlab.losses.base import Distiller
from kdlab.outputs import Outputs


def unique_names(distillers: list[Distiller]) -> dict[str, Distiller]:
    named: dict[str, Distiller] = {}
    for distiller in distillers:
        if not isinstance(distiller, Distiller):
            raise ConfigurationError(
                f"distillers must be kdlab.losses.Distiller instances, got {type(distiller).__name__}"
            )
        name, suffix = distiller.name, 1
        while name in named or name == "ce":
            name, suffix = f"{distiller.name}_{suffix}", suffix + 1
        named[name] = distiller
    return named


def check_num_classes(student: nn.Module, teacher: nn.Module | None) -> None:
    student_classes = getattr(student, "num_classes", None)
    teacher_classes = getattr(teacher, "num_classes", None)
    if student_classes is not None and teacher_classes is not None and student_classes != teacher_classes:
        raise ConfigurationError(
            f"the teacher predicts {teacher_classes} classes but the student {student_classes}: "
            "give both the same num_classes (the CLI links it from data.num_classes)."
        )


def check_logits(student_logits: Tensor, teacher: Outputs | None, data_classes: int | None) -> None:
    produced = student_logits.shape[-1]
    if teacher is not None and teacher.logits.shape[-1] != produced:
        raise ConfigurationError(
            f"the teacher predicts {teacher.logits.shape[-1]} classes but the student {produced}: "
            "give both the same num_classes (the CLI links it from data.num_classes)."
        )
    if data_classes is not None and produced != data_classes:
        raise ConfigurationError(
            f"the data has {data_classes} classes but the student predicts {produced}: set the models' "
            "num_classes to the data's (the CLI links it from data.num_classes)."
        )


def verify_teacher(saved: dict[str, str | None] | None, current: dict[str, str | None] | None) -> None:
    if saved == current:
        return
    if saved is None or current is None:
        had = "was trained with a teacher" if saved else "was trained without a teacher"
        raise ConfigurationError(
            f"the checkpoint {had} but the current configuration "
            f"{'has none' if current is None else 'has one'}; resume with the same model.teacher."
        )
    if saved["sha256"] != current["sha256"]:
        was, now = saved["path"] or "built in code", current["path"] or "built in code"
        raise ConfigurationError(
            f"the teacher changed since the checkpoint was written: it was {was} (sha256 "
            f"{saved['sha256'][:16]}…), now {now} (sha256 {current['sha256'][:16]}…). Restore the "
            "original teacher file, or start a new run instead of resuming."
        )
