"""The base class of every distillation term, and what it is told when it builds its adapters."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from kdlab.outputs import Batch, Outputs


class IncompatibleShapesError(ValueError):
    """A distiller cannot work with the tapped shapes of this teacher/student pair."""


@dataclass(frozen=True)
class BuildContext:
    """Everything a distiller may need at :meth:`Distiller.build`.

    Args:
        student_shapes: Shape of every tapped student feature, by tap name (batch first).
        teacher_shapes: The same for the teacher.
        student: The student network.
        teacher: The frozen teacher network (its weights are already loaded).
        student_paths: Each student tap name resolved to ``"<module path>"`` or
            ``"<module path>:input"`` (aliases go through the model's ``feature_points``).
        teacher_paths: The same for the teacher.
        num_samples: Number of training samples, i.e. one more than the largest ``batch.indices``
            value (for per-sample state such as CRD's memory banks): the datamodule's
            ``num_train_samples`` if it has one, else the length of its training dataset; None
            outside ``fit``.
    """

    student_shapes: Mapping[str, torch.Size]
    teacher_shapes: Mapping[str, torch.Size]
    student: nn.Module | None = None
    teacher: nn.Module | None = None
    student_paths: Mapping[str, str] = field(default_factory=dict)
    teacher_paths: Mapping[str, str] = field(default_factory=dict)
    num_samples: int | None = None


class Distiller(nn.Module):
    """One weighted term of the total loss, computed from student and teacher outputs.

    Subclasses implement :meth:`forward`. Feature-based methods list the layers they need in
    ``student_taps`` / ``teacher_taps``: a tap alias of the model (``"stage3"``,
    ``"stage3_preact"``, ``"embedding"``, resolved through its ``feature_points``) or a module
    path (``"layer3"`` for a module's output, ``"layer3.2.relu:input"`` for its input). The
    tapped tensors arrive in ``Outputs.features`` under the names given here. Adapters whose
    size depends on the tapped shapes are created in :meth:`build`, before the optimizer
    exists; learnable parts live inside the distiller, so they are optimised together with
    the student and saved in checkpoints.

    Multi-stage methods (AB, FT, FSP, two-stage FitNet) set ``init_epochs`` > 0 and implement
    :meth:`init_loss`: during the first ``init_epochs`` epochs of ``fit`` the module trains
    only the init objectives of the distillers still in their init phase (no cross-entropy,
    no other term), with an optimizer of their own (the run's class and hyper-parameters, at
    ``init_lr``), as RepDistiller's init stage does: the run's optimizer starts the main phase
    with a fresh state. The phase follows from the epoch counter, so a resumed run continues
    in the right phase.

    Args:
        weight: Multiplier of this term in the total loss.
        student_taps: Student layers this term reads (None: the class default).
        teacher_taps: Teacher layers this term reads (None: the class default).
    """

    student_taps: tuple[str, ...] = ()
    teacher_taps: tuple[str, ...] = ()
    init_epochs: int = 0
    #: Learning rate of the init phase (None: the run optimizer's configured one).
    init_lr: float | None = None
    #: Run the teacher on training batches with its BatchNorms on batch statistics, as reference
    #: code that keeps the teacher in train mode does (OFD); its running statistics never change.
    teacher_batch_statistics: bool = False
    #: How many (student, teacher) tap pairs the method takes, ``(least, most)`` (None: any);
    #: checked when the distiller is created.
    tap_pair_count: tuple[int, int | None] | None = None

    def __init__(
        self,
        weight: float = 1.0,
        student_taps: Sequence[str] | None = None,
        teacher_taps: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(weight, (int, float)) or weight != weight or weight < 0:
            raise ValueError(f"{type(self).__name__}: weight must be a number >= 0, got {weight!r}")
        self.weight = float(weight)
        if student_taps is not None:
            self.student_taps = _tap_names(self, "student_taps", student_taps)
        if teacher_taps is not None:
            self.teacher_taps = _tap_names(self, "teacher_taps", teacher_taps)
        if self.tap_pair_count is not None:
            self._check_tap_pair_count(*self.tap_pair_count)

    @property
    def name(self) -> str:
        """Short name used in logged keys, e.g. ``train/kd``."""
        return type(self).__name__.lower()

    def build(self, context: BuildContext) -> None:
        """Create adapters that depend on tapped shapes (called once before the optimizer exists).

        Args:
            context: The tapped shapes, the networks, resolved tap paths and the training-set size.

        Raises:
            IncompatibleShapesError: the method cannot work with these shapes; the message names
                the layers and their shapes.
        """

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement forward(student, teacher, batch)")

    def init_loss(self, student: Outputs, teacher: Outputs, batch: Batch) -> Tensor:
        """The objective of the init phase (the first ``init_epochs`` epochs), unweighted."""
        raise NotImplementedError(f"{type(self).__name__} has no init phase (init_epochs must be 0)")

    # ------------------------------------------------------------------------- helpers for subclasses
    def tap_pairs(self) -> list[tuple[str, str]]:
        """(student tap, teacher tap) pairs; raises if the two lists differ in length."""
        if len(self.student_taps) != len(self.teacher_taps):
            raise ValueError(
                f"{type(self).__name__}: student_taps {list(self.student_taps)} and teacher_taps "
                f"{list(self.teacher_taps)} must name the same number of layers (they are paired in order)"
            )
        return list(zip(self.student_taps, self.teacher_taps, strict=True))

    def init_phase(self, init_epochs: int, init_lr: float | None, least: int = 1) -> None:
        """Set and check the init phase's length (at least ``least`` epochs) and learning rate."""
        name = type(self).__name__
        if isinstance(init_epochs, bool) or not isinstance(init_epochs, int) or init_epochs < least:
            needs = "it trains only in its init phase, so " if least else ""
            raise ValueError(f"{name}: {needs}init_epochs must be an integer >= {least}, got {init_epochs!r}")
        if init_lr is not None and not init_lr > 0:
            raise ValueError(f"{name}: init_lr must be > 0 (None: the run's learning rate), got {init_lr!r}")
        self.init_epochs, self.init_lr = init_epochs, init_lr

    def _check_tap_pair_count(self, least: int, most: int | None) -> None:
        count = len(self.tap_pairs())
        if count < least or (most is not None and count > most):
            bound = (
                "exactly" if least == most else "at least" if most is None else f"at most {most} and at least"
            )
            raise ValueError(
                f"{type(self).__name__}: takes {bound} {least} (student, teacher) tap pairs, got {count}"
            )

    def shape_error(
        self, problem: str, pairs: Sequence[tuple[str, torch.Size, str, torch.Size]]
    ) -> Exception:
        """An :class:`IncompatibleShapesError` naming each (student layer, teacher layer) and shape."""
        listed = "; ".join(
            f"student '{s}' {tuple(ss)} vs teacher '{t}' {tuple(ts)}" for s, ss, t, ts in pairs
        )
        return IncompatibleShapesError(f"{type(self).__name__}: {problem}: {listed}")


def check_temperature(owner: str, temperature: float) -> float:
    """Return ``temperature`` as a float, or raise a ValueError naming ``owner`` if it is not > 0."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
        raise ValueError(f"{owner}: temperature must be a number > 0, got {temperature!r}")
    return float(temperature)


def check_non_negative(owner: str, **values: float) -> None:
    """Raise a ValueError naming ``owner`` and the argument if any value is not a number >= 0."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise ValueError(f"{owner}: {name} must be a number >= 0, got {value!r}")


def _tap_names(distiller: Distiller, label: str, taps: Sequence[str]) -> tuple[str, ...]:
    if isinstance(taps, str) or not all(isinstance(t, str) and t for t in taps):
        raise ValueError(
            f"{type(distiller).__name__}: {label} must be a list of layer names (aliases such as 'stage3' "
            f"or module paths such as 'layer3' / 'layer3.0.relu:input'), got {taps!r}"
        )
    return tuple(taps)
