"""Multi-Level Logit Distillation (Jin et al., CVPR 2023)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from kdlab.losses.base import Distiller, check_non_negative, check_temperature
from kdlab.losses.kd import kd_loss
from kdlab.outputs import Batch, Outputs

TEMPERATURES = (2.0, 3.0, 4.0, 5.0, 6.0)


def mlkd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    temperatures: Sequence[float] = TEMPERATURES,
    instance_weight: float = 1.0,
    batch_weight: float = 1.0,
    class_weight: float = 1.0,
) -> Tensor:
    """Multi-Level Logit Distillation (Jin et al., CVPR 2023).

    Prediction augmentation softens both networks' logits at every temperature ``T`` of
    ``temperatures`` (``P = softmax(z / T)``, shape ``(batch, classes)``), and at each one
    aligns three levels:

    - instance: ``T² · KL(P_t ‖ P_s)``, batch mean (Hinton KD at T);
    - batch: ``‖P_t P_tᵀ − P_s P_sᵀ‖²_F / batch``, the samples' ``(batch, batch)`` Gram matrix;
    - class: ``‖P_tᵀ P_t − P_sᵀ P_s‖²_F / classes``, the classes' ``(classes, classes)`` Gram.

    Returns the weighted sum over levels and temperatures.

    This function aligns one view. The method trains on two views of the same images in one
    step (:class:`MLKD` with ``CIFARDataModule(strong_view=True)``): a weak view (random crop +
    flip) and a strong one (the same plus RandAugment); student and teacher both see both, the
    cross-entropy applies to both, these three levels to the weak view and the instance level
    also to the strong view.

    Args:
        student_logits: ``(batch, classes)`` student scores.
        teacher_logits: ``(batch, classes)`` teacher scores.
        temperatures: The temperatures of prediction augmentation, each > 0.
        instance_weight: Weight of the instance-level (KL) term.
        batch_weight: Weight of the batch-level (sample correlation) term.
        class_weight: Weight of the class-level (class correlation) term.
    """
    if len(temperatures) == 0:
        raise ValueError("mlkd_loss: temperatures must not be empty")
    total = student_logits.new_zeros(())
    for temperature in temperatures:
        p_student = (student_logits / temperature).softmax(dim=1)
        p_teacher = (teacher_logits / temperature).softmax(dim=1)
        if instance_weight:
            total = total + instance_weight * kd_loss(student_logits, teacher_logits, temperature)
        if batch_weight:
            total = total + batch_weight * _gram_gap(p_student, p_teacher) / p_student.shape[0]
        if class_weight:
            total = total + class_weight * _gram_gap(p_student.T, p_teacher.T) / p_student.shape[1]
    return total


def _gram_gap(student: Tensor, teacher: Tensor) -> Tensor:
    """Squared Frobenius norm of the difference of the rows' Gram matrices."""
    return (teacher @ teacher.T - student @ student.T).pow(2).sum()


class MLKD(Distiller):
    """Multi-level logit distillation on a weak and, when the batch has one, a strong view.

    The loss is ``mlkd_loss`` of the weak view's logits with level weights ``instance_weight``,
    ``batch_weight`` and ``class_weight``, plus ``strong_weight`` times the instance level of the
    strong view's logits (``Batch.strong_inputs``, from ``CIFARDataModule(strong_view=True)``;
    the module adds the cross-entropy of the strong view too). Without a strong view, MLKD is
    single-view, a weaker method than the paper's.

    The defaults are the authors' code's effective weights (Jin-Ying/Multi-Level-Logit-
    Distillation, ``KD_ours``, with its CIFAR-100 CE 0.1, KD 0.9, T 4): it multiplies each
    already batch-averaged weak-view term by a median-confidence mask, i.e. by the mask's mean,
    exactly 0.5 for an even batch (below-median samples for the instance and batch levels,
    classes for the class level); its strong-view instance terms are unmasked. Known
    differences, kdlab following the paper: the authors' strong-view instance terms at T 2 and 6
    take the weak view's logits, and their strong-view batch and class terms are computed but not
    added to the loss (here too: they are not part of the loss).

    Args:
        weight: Multiplier of the MLKD term.
        temperatures: The temperatures of prediction augmentation.
        instance_weight: Weight of the weak view's instance-level term.
        batch_weight: Weight of the weak view's batch-level term.
        class_weight: Weight of the weak view's class-level term.
        strong_weight: Weight of the strong view's instance-level term.
    """

    def __init__(
        self,
        weight: float = 0.9,
        temperatures: list[float] | None = None,
        instance_weight: float = 0.5,
        batch_weight: float = 0.5,
        class_weight: float = 0.5,
        strong_weight: float = 1.0,
    ) -> None:
        super().__init__(weight)
        temperatures = list(TEMPERATURES if temperatures is None else temperatures)
        if not temperatures:
            raise ValueError("MLKD: temperatures must list at least one temperature, e.g. [2, 3, 4, 5, 6]")
        self.temperatures = [check_temperature("MLKD", t) for t in temperatures]
        check_non_negative(
            "MLKD",
            instance_weight=instance_weight,
            batch_weight=batch_weight,
            class_weight=class_weight,
            strong_weight=strong_weight,
        )
        self.instance_weight = float(instance_weight)
        self.batch_weight = float(batch_weight)
        self.class_weight = float(class_weight)
        self.strong_weight = float(strong_weight)

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> Tensor:
        loss = mlkd_loss(
            student.logits,
            teacher.logits,
            self.temperatures,
            self.instance_weight,
            self.batch_weight,
            self.class_weight,
        )
        if student.strong_logits is not None and teacher.strong_logits is not None and self.strong_weight:
            strong = mlkd_loss(student.strong_logits, teacher.strong_logits, self.temperatures, 1.0, 0.0, 0.0)
            loss = loss + self.strong_weight * strong
        return loss
