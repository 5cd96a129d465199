"""Factor transfer: a teacher paraphraser's factors, matched by a student translator."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdlab.losses._common import paired_shapes, pool_to_smaller
from kdlab.losses.base import BuildContext, Distiller
from kdlab.outputs import Batch, Outputs


def factor_map(factor: Tensor, p: float = 2.0) -> Tensor:
    """The L2-normalised ``mean_c |F_c|^p`` map of a ``(batch, C, H, W)`` factor, flattened."""
    return F.normalize(factor.abs().pow(p).mean(dim=1).flatten(1), dim=1)


def ft_loss(student_factor: Tensor, teacher_factor: Tensor, p1: float = 2.0, p2: float = 1.0) -> Tensor:
    """Paraphrasing Complex Network: Network Compression via Factor Transfer (Kim et al., NeurIPS 2018).

    The ``p2``-norm (element mean) between the normalised factor maps of the student's
    translator and the teacher's paraphraser, as in RepDistiller's ``FactorTransfer`` (maps
    ``mean_c |F|^p1``; larger maps average-pooled to the smaller size).

    Args:
        student_factor: ``(batch, C, H, W)`` translator output.
        teacher_factor: ``(batch, C, H', W')`` paraphraser factor.
        p1: Exponent of the factor maps.
        p2: Norm of the difference (1 in the paper).
    """
    student_factor, teacher_factor = pool_to_smaller(student_factor, teacher_factor)
    difference = (factor_map(student_factor, p1) - factor_map(teacher_factor, p1)).abs()
    return difference.mean() if p2 == 1 else difference.pow(p2).mean()


def _conv_stack(channels: Sequence[int], transposed: bool, batch_norm: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(channels):
        conv = nn.ConvTranspose2d if transposed else nn.Conv2d
        layers += [conv(a, b, 3, 1, 1), nn.BatchNorm2d(b) if batch_norm else nn.Identity(), nn.LeakyReLU(0.1)]
    return nn.Sequential(*layers)


class Paraphraser(nn.Module):
    """An autoencoder of teacher maps whose code is the transferred factor.

    Args:
        channels: Teacher channels C.
        rate: Factor channels as a fraction of C (0.5).
    """

    def __init__(self, channels: int, rate: float = 0.5) -> None:
        super().__init__()
        factor = max(1, int(channels * rate))
        self.encoder = _conv_stack([channels, channels, factor, factor], transposed=False, batch_norm=False)
        self.decoder = _conv_stack([factor, factor, channels, channels], transposed=True, batch_norm=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder(self.encoder(x))


class FT(Distiller):
    """Factor transfer with the paraphraser trained first (weight 200 in RepDistiller).

    Init phase (``init_epochs``, 30 in RepDistiller): the paraphraser learns to reconstruct
    the teacher's map (MSE); nothing else trains. Main phase: the paraphraser is frozen and
    a translator (conv-BN-LeakyReLU ×3) maps the student's map to factors matched by
    :func:`ft_loss`.

    Args:
        weight: Multiplier of the factor loss.
        init_epochs: Epochs of paraphraser training.
        init_lr: Learning rate of that phase (None: the run's). RepDistiller uses 0.01 for
            ResNet and WRN students, the run's learning rate for the others.
        rate: Factor channels as a fraction of the teacher's.
        p1: Exponent of the factor maps.
        p2: Norm of the difference.
        student_taps: The student map (default ``stage3``, RepDistiller's ``feat[-2]``).
        teacher_taps: The teacher map (default ``stage3``).
    """

    student_taps = ("stage3",)
    teacher_taps = ("stage3",)
    tap_pair_count = (1, 1)

    def __init__(
        self,
        weight: float = 200.0,
        init_epochs: int = 30,
        init_lr: float | None = None,
        rate: float = 0.5,
        p1: float = 2.0,
        p2: float = 1.0,
        student_taps: Sequence[str] | None = None,
        teacher_taps: Sequence[str] | None = None,
    ) -> None:
        super().__init__(weight, student_taps, teacher_taps)
        self.init_phase(init_epochs, init_lr)  # the paraphraser must be trained first
        self.rate, self.p1, self.p2 = rate, p1, p2
        self.paraphraser: Paraphraser | None = None
        self.translator: nn.Sequential | None = None

    def build(self, context: BuildContext) -> None:
        ((_, s_shape, _, t_shape),) = paired_shapes(self, context)
        self.paraphraser = Paraphraser(t_shape[1], self.rate)
        factor = max(1, int(t_shape[1] * self.rate))
        self.translator = _conv_stack(
            [s_shape[1], s_shape[1], factor, factor], transposed=False, batch_norm=True
        )

    def init_loss(self, student: Outputs, teacher: Outputs, batch: Batch) -> Tensor:
        target = teacher.features[self.teacher_taps[0]]
        return F.mse_loss(self.paraphraser(target), target)

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> Tensor:
        ((s, t),) = self.tap_pairs()
        with torch.no_grad():  # the paraphraser is frozen after its init phase
            teacher_factor = self.paraphraser.encoder(teacher.features[t])
        return ft_loss(self.translator(student.features[s]), teacher_factor, self.p1, self.p2)
