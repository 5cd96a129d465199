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


def data_class_names(datamodule: object) -> list[str] | None:
    """The data's class names in label order (``label_names`` or ``class_names``), if it has them."""
    for attribute in ("label_names", "class_names"):
        names = getattr(datamodule, attribute, None)
        if names:
            return [str(name) for name in names]
    return None


def check_class_names(networks: dict[str, nn.Module | None], data_names: list[str] | None) -> None:
    """Each network that knows its classes (``class_names``: a Hugging Face config's labels, a
    kdlab checkpoint's data) must predict the data's classes in the data's label order."""
    for role, network in networks.items():
        known = getattr(network, "class_names", None)
        if not known or not data_names or list(known) == list(data_names):
            continue
        if sorted(known) != sorted(data_names):
            only_model = sorted(set(known) - set(data_names))[:8]
            only_data = sorted(set(data_names) - set(known))[:8]
            raise ConfigurationError(
                f"the {role} was trained on other classes than the data's: only the {role} has "
                f"{only_model or 'none'}, only the data has {only_data or 'none'}. Give it a {role} trained "
                "on this data, or restrict the data to the model's classes (data classes:)."
            )
        first = next(i for i, (a, b) in enumerate(zip(known, data_names)) if a != b)
        raise ConfigurationError(
            f"the {role} predicts the data's classes in another order: its label {first} is "
            f"'{known[first]}', the data's is '{data_names[first]}'. List the data's classes in the "
            f"{role}'s order (data classes: {list(known)})."
        )


def normalization_mismatches(networks: dict[str, nn.Module | None], datamodule: object) -> list[str]:
    """A warning for each network whose pretrained weights expect other input statistics
    (``input_normalization``: mean and std) than the data normalises with."""
    data_mean, data_std = getattr(datamodule, "mean", None), getattr(datamodule, "std", None)
    if data_mean is None or data_std is None:
        return []
    warnings = []
    for role, network in networks.items():
        expected = getattr(network, "input_normalization", None)
        if not expected:
            continue
        pairs = [(expected["mean"], data_mean), (expected["std"], data_std)]
        if all(len(a) == len(b) and all(abs(x - y) < 1e-3 for x, y in zip(a, b)) for a, b in pairs):
            continue
        mean, std = (list(map(float, expected[k])) for k in ("mean", "std"))
        warnings.append(
            f"the {role}'s pretrained weights expect inputs normalised with mean {mean} and std {std}, "
            f"the data normalises with mean {list(data_mean)} and std {list(data_std)}; if the {role} "
            f"was not fine-tuned on this data's normalisation, set the data's mean and std to its own "
            "(data init_args mean/std, where the DataModule takes them)"
        )
    return warnings


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
