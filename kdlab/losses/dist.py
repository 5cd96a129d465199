"""Knowledge Distillation from A Stronger Teacher (DIST, Huang et al., NeurIPS 2022)."""

from __future__ import annotations

from torch import Tensor

from kdlab.losses.base import Distiller, check_non_negative, check_temperature
from kdlab.outputs import Batch, Outputs


def dist_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    beta: float = 1.0,
    gamma: float = 1.0,
    temperature: float | Tensor = 1.0,
    *,
    eps: float = 1e-8,
) -> Tensor:
    """Knowledge Distillation from A Stronger Teacher (Huang et al., NeurIPS 2022).

    Matches relations rather than values: with ``Y = softmax(logits / τ)`` of shape
    ``(batch, classes)``, the inter-class loss is the batch mean of ``1 − ρ(Y_s[i], Y_t[i])``
    over rows and the intra-class loss the class mean of ``1 − ρ(Y_s[:, j], Y_t[:, j])``
    over columns, ρ being the Pearson correlation. Returns ``τ² (beta·inter + gamma·intra)``.

    As in the authors' code, ``eps`` is added to the product of the norms in ρ's denominator
    (a row or column that is constant has no correlation and would otherwise divide 0 by 0);
    ``eps=0`` is the paper's formula. The intra-class term needs a batch of more than one
    sample to carry a gradient.

    Args:
        student_logits: ``(batch, classes)`` student scores.
        teacher_logits: ``(batch, classes)`` teacher scores.
        beta: Weight of the inter-class relation loss.
        gamma: Weight of the intra-class relation loss.
        temperature: Softening temperature τ > 0 (4 in the authors' CIFAR-100 recipe).
        eps: Stabiliser of the Pearson correlation's denominator.
    """
    y_student = (student_logits / temperature).softmax(dim=1)
    y_teacher = (teacher_logits / temperature).softmax(dim=1)
    inter = 1 - _pearson(y_student, y_teacher, dim=1, eps=eps).mean()
    intra = 1 - _pearson(y_student, y_teacher, dim=0, eps=eps).mean()
    return temperature**2 * (beta * inter + gamma * intra)


def _pearson(a: Tensor, b: Tensor, dim: int, eps: float) -> Tensor:
    """Pearson correlation of ``a`` and ``b`` along ``dim`` (one value per other index)."""
    a = a - a.mean(dim=dim, keepdim=True)
    b = b - b.mean(dim=dim, keepdim=True)
    return (a * b).sum(dim=dim) / (a.norm(dim=dim) * b.norm(dim=dim) + eps)


class DIST(Distiller):
    """DIST as a weighted term of the total loss.

    The authors' recipes: CE weight 1, DIST weight 2, beta = gamma = 1, and τ = 1 on ImageNet
    (the defaults) or τ = 4 on CIFAR-100.

    Args:
        weight: Multiplier of the DIST term.
        beta: Weight of the inter-class relation loss.
        gamma: Weight of the intra-class relation loss.
        temperature: Softening temperature τ.
    """

    def __init__(
        self, weight: float = 2.0, beta: float = 1.0, gamma: float = 1.0, temperature: float = 1.0
    ) -> None:
        super().__init__(weight)
        check_non_negative("DIST", beta=beta, gamma=gamma)
        self.beta = float(beta)
        self.gamma = float(gamma)
        self.temperature = check_temperature("DIST", temperature)

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> Tensor:
        return dist_loss(student.logits, teacher.logits, self.beta, self.gamma, self.temperature)
