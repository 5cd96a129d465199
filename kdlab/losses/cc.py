"""Correlation congruence: match how errors of neighbouring samples correlate."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from kdlab.losses._common import Embed, flat_size, paired_shapes
from kdlab.losses.base import BuildContext, Distiller
from kdlab.outputs import Batch, Outputs


def cc_loss(student_embedding: Tensor, teacher_embedding: Tensor) -> Tensor:
    """Correlation Congruence for Knowledge Distillation (Peng et al., ICCV 2019).

    The form released by the authors and used in the CRD benchmark (RepDistiller's
    ``Correlation``): with ``d_i = |s_i - t_i|``, the mean over consecutive samples of the
    inner product ``<d_i, d_{i+1}>``.

    Args:
        student_embedding: ``(batch, dim)`` embedded student features.
        teacher_embedding: ``(batch, dim)`` embedded teacher features.
    """
    delta = (student_embedding - teacher_embedding).abs()
    return (delta[:-1] * delta[1:]).sum(dim=1).mean()


class CC(Distiller):
    """Correlation congruence on linear embeddings of both networks' pooled features.

    Both embeddings (to ``embedding_dim``) are learned with the student. RepDistiller's
    CIFAR-100 weight is 0.02.

    Args:
        weight: Multiplier of the loss.
        embedding_dim: Size of the shared embedding space.
        student_taps: The student feature (default ``embedding``).
        teacher_taps: The teacher feature (default ``embedding``).
    """

    student_taps = ("embedding",)
    teacher_taps = ("embedding",)
    tap_pair_count = (1, 1)

    def __init__(
        self,
        weight: float = 0.02,
        embedding_dim: int = 128,
        student_taps: Sequence[str] | None = None,
        teacher_taps: Sequence[str] | None = None,
    ) -> None:
        super().__init__(weight, student_taps, teacher_taps)
        self.embedding_dim = embedding_dim
        self.embed_student: Embed | None = None
        self.embed_teacher: Embed | None = None

    def build(self, context: BuildContext) -> None:
        ((_, s_shape, _, t_shape),) = paired_shapes(self, context, dims=(2, 3, 4))
        self.embed_student = Embed(flat_size(s_shape), self.embedding_dim, normalize=False)
        self.embed_teacher = Embed(flat_size(t_shape), self.embedding_dim, normalize=False)

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> Tensor:
        ((s, t),) = self.tap_pairs()
        return cc_loss(self.embed_student(student.features[s]), self.embed_teacher(teacher.features[t]))
