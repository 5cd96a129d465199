"""Contrastive representation distillation with two momentum memory banks and NCE."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from kdlab.losses._common import Embed, flat_size, paired_shapes
from kdlab.losses.base import BuildContext, Distiller
from kdlab.outputs import Batch, Outputs


def contrast_scores(anchor: Tensor, memory_rows: Tensor, temperature: float = 0.07) -> Tensor:
    """``exp(<m_j, anchor> / T)`` for the ``(batch, K+1, dim)`` memory rows of each anchor (positive 1st)."""
    return torch.exp(torch.bmm(memory_rows, anchor[:, :, None]).squeeze(2) / temperature)


def memory_scores(anchor: Tensor, memory: Tensor, rows: Tensor, temperature: float = 0.07) -> Tensor:
    """:func:`contrast_scores` of ``anchor`` against ``memory[rows]`` without gathering the
    ``(batch, K+1, dim)`` rows: where the memory is smaller than K+1 rows per dimension (CIFAR,
    ImageNet), one ``(batch, N)`` product of every memory row costs less than copying them.

    Args:
        anchor: ``(batch, dim)`` embeddings.
        memory: ``(N, dim)`` memory bank.
        rows: ``(batch, K+1)`` indices into the memory (positive first).
        temperature: NCE temperature T.
    """
    if len(memory) > rows.shape[1] * memory.shape[1]:
        return contrast_scores(anchor, memory[rows], temperature)
    return torch.exp((anchor @ memory.T).gather(1, rows) / temperature)


def nce_loss(scores: Tensor, num_samples: int, eps: float = 1e-7) -> Tensor:
    """The NCE objective of CRD (its Eq. 18) on normalised scores ``(batch, K+1)``, positive in column 0.

    With noise probability ``Pn = 1/N`` and ``K`` negatives: ``-[log(P₀ / (P₀ + K·Pn)) +
    Σ log(K·Pn / (Pⱼ + K·Pn))]``, summed over the batch and divided by the batch size.
    """
    noise = (scores.shape[1] - 1) / num_samples
    positive = torch.log(scores[:, 0] / (scores[:, 0] + noise + eps))
    negative = torch.log(noise / (scores[:, 1:] + noise + eps))
    return -(positive.sum() + negative.sum()) / scores.shape[0]


def crd_loss(
    student_embedding: Tensor,
    teacher_embedding: Tensor,
    student_memory_rows: Tensor,
    teacher_memory_rows: Tensor,
    normalizers: tuple[float | Tensor, float | Tensor],
    num_samples: int,
    temperature: float = 0.07,
) -> Tensor:
    """Contrastive Representation Distillation (Tian et al., ICLR 2020).

    The two symmetric NCE terms: the student embedding contrasted against rows of the
    teacher memory, and the teacher embedding against rows of the student memory, each row
    set holding the positive (the same sample) first and then K negatives. Scores are
    ``exp(<m, v> / T) / Z`` with the normalising constants ``Z`` fixed at the first batch.

    Args:
        student_embedding: ``(batch, dim)`` L2-normalised student embedding.
        teacher_embedding: ``(batch, dim)`` L2-normalised teacher embedding.
        student_memory_rows: ``(batch, K+1, dim)`` rows of the student memory.
        teacher_memory_rows: ``(batch, K+1, dim)`` rows of the teacher memory.
        normalizers: ``(Z_student, Z_teacher)``: Z_student normalises the student-anchored scores.
        num_samples: Size N of the memory (training samples).
        temperature: NCE temperature T.
    """
    student_scores = contrast_scores(student_embedding, teacher_memory_rows, temperature)
    teacher_scores = contrast_scores(teacher_embedding, student_memory_rows, temperature)
    return symmetric_nce(student_scores, teacher_scores, normalizers, num_samples)


def symmetric_nce(
    student_scores: Tensor,
    teacher_scores: Tensor,
    normalizers: tuple[float | Tensor, float | Tensor],
    num_samples: int,
) -> Tensor:
    """CRD's two NCE terms on the unnormalised scores of :func:`contrast_scores` (student-anchored,
    teacher-anchored), each divided by its normalising constant."""
    return nce_loss(student_scores / normalizers[0], num_samples) + nce_loss(
        teacher_scores / normalizers[1], num_samples
    )


class CRD(Distiller):
    """CRD with learned linear embeddings, two memory banks and K negatives per sample.

    The banks (``num_samples × embedding_dim``, one per network) are buffers indexed by
    ``batch.indices``, updated with momentum after every step and saved in checkpoints. As
    in RepDistiller's default (``mode='exact'``) the positive is the sample itself and the
    K negatives are drawn uniformly among samples of other classes: labels are remembered
    per index as samples are seen (during the first epoch unseen samples may be drawn too),
    and same-class draws are redrawn five times (with C balanced classes about C⁻⁶ remain).
    Under DDP, embeddings are all-gathered before the banks are updated so that every process
    keeps identical banks.

    Args:
        weight: Multiplier of the loss (0.8 in the CRD table).
        embedding_dim: Size of the embedding space (128).
        num_negatives: Negatives K per positive (16,384).
        temperature: NCE temperature (0.07).
        momentum: Momentum of the memory updates (0.5).
        student_taps: The student feature (default ``embedding``).
        teacher_taps: The teacher feature (default ``embedding``).
    """

    student_taps = ("embedding",)
    teacher_taps = ("embedding",)
    tap_pair_count = (1, 1)

    def __init__(
        self,
        weight: float = 0.8,
        embedding_dim: int = 128,
        num_negatives: int = 16384,
        temperature: float = 0.07,
        momentum: float = 0.5,
        student_taps: Sequence[str] | None = None,
        teacher_taps: Sequence[str] | None = None,
    ) -> None:
        super().__init__(weight, student_taps, teacher_taps)
        if num_negatives < 1 or temperature <= 0 or not 0 <= momentum < 1:
            raise ValueError("CRD: needs num_negatives >= 1, temperature > 0 and 0 <= momentum < 1")
        self.embedding_dim, self.num_negatives = embedding_dim, num_negatives
        self.temperature, self.momentum = temperature, momentum
        self.embed_student: Embed | None = None
        self.embed_teacher: Embed | None = None
        self._allocate(0)
        self.register_buffer("normalizers", torch.full((2,), -1.0))
        self._indices_checked = False

    def _allocate(self, num_samples: int, device: torch.device | None = None) -> None:
        bound = 1.0 / math.sqrt(self.embedding_dim / 3)  # RepDistiller's uniform initialisation
        for name in ("student_memory", "teacher_memory"):
            bank = torch.rand(num_samples, self.embedding_dim, device=device).mul_(2 * bound).sub_(bound)
            self.register_buffer(name, bank)
        self.register_buffer("memory_labels", torch.full((num_samples,), -1, dtype=torch.long, device=device))

    def build(self, context: BuildContext) -> None:
        ((_, s_shape, _, t_shape),) = paired_shapes(self, context, dims=(2, 3, 4))
        self.embed_student = Embed(flat_size(s_shape), self.embedding_dim)
        self.embed_teacher = Embed(flat_size(t_shape), self.embedding_dim)
        num_samples = context.num_samples
        if num_samples is not None:
            if num_samples < 2:
                raise ValueError(
                    f"CRD: needs at least 2 training samples for its memory banks, got {num_samples}"
                )
            self._allocate(num_samples, self.normalizers.device)

    def _load_from_state_dict(self, state_dict: Mapping[str, Any], prefix: str, *args: Any) -> None:
        # Outside fit the banks are not sized yet (the training-set size is unknown there):
        # take the checkpoint's size, so that validate/test from a checkpoint work.
        saved = state_dict.get(prefix + "student_memory")
        if saved is not None and len(self.student_memory) == 0:
            self._allocate(len(saved), self.normalizers.device)
        super()._load_from_state_dict(state_dict, prefix, *args)

    def forward(self, student: Outputs, teacher: Outputs, batch: Batch) -> Tensor:
        ((s, t),) = self.tap_pairs()
        v_student = self.embed_student(student.features[s])
        v_teacher = self.embed_teacher(teacher.features[t])
        indices, targets = batch.indices.long(), batch.targets.long()
        self._check_indices(indices)
        rows = torch.cat([indices[:, None], self._negatives(indices, targets)], dim=1)
        # crd_loss on memory[rows], computed without gathering the rows (memory_scores).
        student_scores = memory_scores(v_student, self.teacher_memory.detach(), rows, self.temperature)
        teacher_scores = memory_scores(v_teacher, self.student_memory.detach(), rows, self.temperature)
        if self.training:
            self._set_normalizers(student_scores, teacher_scores)
        loss = symmetric_nce(student_scores, teacher_scores, self.normalizers, len(self.student_memory))
        if self.training:
            self._update(v_student.detach(), v_teacher.detach(), indices, targets)
        return loss

    def _check_indices(self, indices: Tensor) -> None:
        if len(self.student_memory) == 0:
            raise RuntimeError("CRD: the memory banks are empty; CRD trains only inside Trainer.fit")
        if not self._indices_checked:  # one host sync, on the first batch only
            if int(indices.min()) < 0 or int(indices.max()) >= len(self.student_memory):
                raise ValueError(
                    f"CRD: batch.indices must lie in [0, {len(self.student_memory)}), the training-set size; "
                    f"got values in [{int(indices.min())}, {int(indices.max())}]"
                )
            self._indices_checked = True

    def _negatives(self, indices: Tensor, targets: Tensor, rounds: int = 5) -> Tensor:
        """K indices per sample, never the sample itself, redrawn (a few rounds) if of the same class."""
        count = len(self.student_memory)

        def draw() -> Tensor:
            drawn = torch.randint(0, count - 1, (len(indices), self.num_negatives), device=indices.device)
            return drawn + (drawn >= indices[:, None]).long()  # skip the positive itself

        negatives = draw()
        for _ in range(rounds):
            same_class = self.memory_labels[negatives] == targets[:, None]
            negatives = torch.where(same_class, draw(), negatives)
        return negatives

    @torch.no_grad()
    def _set_normalizers(self, student_scores: Tensor, teacher_scores: Tensor) -> None:
        # Z = mean score × N, fixed from the first training batch (sync-free: torch.where).
        first = torch.stack([student_scores.mean(), teacher_scores.mean()]) * len(self.student_memory)
        self.normalizers.copy_(torch.where(self.normalizers < 0, first, self.normalizers))

    @torch.no_grad()
    def _update(self, v_student: Tensor, v_teacher: Tensor, indices: Tensor, targets: Tensor) -> None:
        v_student, v_teacher, indices, targets = _gather(v_student, v_teacher, indices, targets)
        for name, value in (("student_memory", v_student), ("teacher_memory", v_teacher)):
            bank = getattr(self, name)
            mixed = bank[indices] * self.momentum + value * (1 - self.momentum)
            # Out of place: this step's scores read the bank before the update in their backward.
            setattr(self, name, bank.index_copy(0, indices, torch.nn.functional.normalize(mixed, dim=1)))
        self.memory_labels.index_copy_(0, indices, targets)


def _gather(*tensors: Tensor) -> list[Tensor]:
    """All-gather along the batch under DDP (equal batch sizes per process); identity otherwise."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return list(tensors)
    gathered = []
    for tensor in tensors:
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        gathered.append(torch.cat(parts))
    return gathered
