"""Overhaul of feature distillation: partial L2 on pre-ReLU features with margins from teacher BN."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kdlab.losses._common import paired_shapes
from kdlab.losses.base import BuildContext, Distiller
from kdlab.outputs import Batch, Outputs


def bn_margin(bn_weight: Tensor, bn_bias: Tensor) -> Tensor:
    """Per channel, the expected value of a pre-activation given that it is negative.

    A BatchNorm that feeds a ReLU makes its output roughly ``N(bias, |weight|²)``; the
    margin is ``E[x | x < 0] = m - s·φ(m/s)/Φ(-m/s)``, or ``-3s`` where ``Φ(-m/s) <= 0.001``
    (the OFD authors' rule).
    """
    std = bn_weight.abs().clamp(min=1e-12)
    mean = bn_bias
    negative = torch.special.ndtr(-mean / std)
    density = torch.exp(-((mean / std) ** 2) / 2) / math.sqrt(2 * math.pi)
    expected = mean - std * density / negative.clamp(min=1e-12)
    return torch.where(negative > 1e-3, expected, -3 * std)


def ofd_loss(student_feature: Tensor, teacher_feature: Tensor, margin: Tensor) -> Tensor:
    """A Comprehensive Overhaul of Feature Distillation (Heo et al., ICCV 2019).

    Partial L2 between pre-ReLU features: the teacher target is ``max(t, margin)``, and
    positions where both the student is at or below that target and the target is not
    positive (the teacher's neuron is off and the student's is too) cost nothing. Summed
    over channels and positions, averaged over the batch.

    Args:
        student_feature: ``(batch, C, H, W)`` student features after the connector.
        teacher_feature: Teacher pre-ReLU features of the same shape.
        margin: ``(1, C, 1, 1)`` (or broadcastable) per-channel margins, negative.
    """
    target = torch.maximum(teacher_feature, margin.to(teacher_feature))
    counted = (student_feature > target) | (target > 0)
    return ((student_feature - target).pow(2) * counted).sum() / student_feature.shape[0]


def _connector(student_channels: int, teacher_channels: int) -> nn.Sequential:
    conv = nn.Conv2d(student_channels, teacher_channels, kernel_size=1, bias=False)
    nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / teacher_channels))
    return nn.Sequential(conv, nn.BatchNorm2d(teacher_channels))


def bn_feeding(teacher: nn.Module, tap: str) -> nn.BatchNorm2d:
    """The BatchNorm whose output a resolved teacher tap sees.

    A BatchNorm tapped directly is itself. For ``"<path>:input"`` it is the last BatchNorm
    registered in the same parent before that module (``bn2`` before a residual block's final
    ``relu``, ``bn1`` before a pre-activation block's ``relu1``); failing that, the last one
    inside the siblings registered before it (the end of a VGG block before its ``relu``).

    Raises:
        ValueError: there is no such BatchNorm; name one with ``teacher_bns``.
    """
    path, on_input = (tap[: -len(":input")], True) if tap.endswith(":input") else (tap, False)
    modules = dict(teacher.named_modules())
    if isinstance(modules[path], nn.BatchNorm2d) and not on_input:
        return modules[path]
    parent_path, _, name = path.rpartition(".")
    earlier: list[nn.Module] = []
    for child_name, child in modules[parent_path].named_children():
        if child_name == name:
            break
        earlier.append(child)
    direct = [m for m in earlier if isinstance(m, nn.BatchNorm2d)]
    nested = [m for child in earlier for m in child.modules() if isinstance(m, nn.BatchNorm2d)]
    candidates = (direct or nested) if on_input else []
    if not candidates:
        raise ValueError(
            f"OFD: no BatchNorm feeds the teacher tap '{tap}': tap a pre-activation (a ReLU's input, e.g. a "
            "'stageK_preact' alias) or a BatchNorm layer, or name the BatchNorms with teacher_bns"
        )
    return candidates[-1]


class OFD(Distiller):
    """OFD over the stages' pre-ReLU features (weight 1e-3, the authors' ÷1000).

    Each student feature goes through a 1×1 conv-BN connector to the teacher's channels; the
    teacher feature is average-pooled to the student's size; layer ``i`` of ``n`` is weighted
    ``1/2^(n-i-1)``. Margins come from the teacher's BatchNorm before each tapped ReLU
    (:func:`bn_feeding`) and are saved as buffers.

    Args:
        weight: Multiplier of the loss.
        student_taps: Student pre-activations (default the three stages').
        teacher_taps: Teacher pre-activations paired with them.
        teacher_bns: Module paths of the teacher BatchNorms giving each margin (default: found
            from the taps).
        teacher_batch_statistics: Run the teacher on training batches with its BatchNorms
            normalising by each batch's statistics, as the authors' code and mdistiller do (they
            keep the teacher in train mode). False: kdlab's frozen teacher in eval mode (running
            statistics). Either way the teacher's running statistics are never updated (the
            reference updates them but never uses them while distilling) and validation runs the
            teacher in eval mode.
    """

    student_taps = ("stage1_preact", "stage2_preact", "stage3_preact")
    teacher_taps = ("stage1_preact", "stage2_preact", "stage3_preact")
    tap_pair_count = (1, None)

    def __init__(
        self,
        weight: float = 1e-3,
        student_taps: Sequence[str] | None = None,
        teacher_taps: Sequence[str] | None = None,
        teacher_bns: Sequence[str] | None = None,
        teacher_batch_statistics: bool = False,
    ) -> None:
        super().__init__(weight, student_taps, teacher_taps)
        self.teacher_batch_statistics = teacher_batch_statistics
        if teacher_bns is not None and len(teacher_bns) != len(self.teacher_taps):
            raise ValueError("OFD: give one teacher_bns path per teacher tap")
        self.teacher_bns = None if teacher_bns is None else list(teacher_bns)
        self.connectors = nn.ModuleList()

    def build(self, context: BuildContext) -> None:
        pairs = paired_shapes(self, context)
        modules = dict(context.teacher.named_modules())
        self.connectors = nn.ModuleList(_connector(p[1][1], p[3][1]) for p in pairs)
        for i, (_, _, t, t_shape) in enumerate(pairs):
            if self.teacher_bns:
                path, bn = self.teacher_bns[i], modules.get(self.teacher_bns[i])
            else:
                path, bn = "the BatchNorm feeding it", bn_feeding(context.teacher, context.teacher_paths[t])
            if not isinstance(bn, nn.BatchNorm2d) or bn.num_features != t_shape[1]:
                raise ValueError(
                    f"OFD: the margin of teacher tap '{t}' {tuple(t_shape)} comes from {path}, which is "
                    f"{type(bn).__name__ if bn is not None else 'no module'}: it must be a BatchNorm2d "
                    f"of {t_shape[1]} channels"
                )
            margin = bn_margin(bn.weight.detach(), bn.bias.detach()).view(1, -1, 1, 1)
            self.register_buffer(f"margin{i}", margin.clone())

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> Tensor:
        pairs = self.tap_pairs()
        total = 0.0
        for i, (connector, (s, t)) in enumerate(zip(self.connectors, pairs, strict=True)):
            f_s = connector(student.features[s])
            f_t = F.adaptive_avg_pool2d(teacher.features[t], f_s.shape[-2:])
            total = total + ofd_loss(f_s, f_t, getattr(self, f"margin{i}")) / 2 ** (len(pairs) - i - 1)
        return total
