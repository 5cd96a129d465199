"""Shared by the cache, fast-path and logging tests: a tiny CIFAR-10 with a teacher, a recording KD."""

from __future__ import annotations

from pathlib import Path

import torch
from lightning.pytorch import seed_everything
from safetensors.torch import save_file

from kdlab.losses import KD
from kdlab.models.cifar import resnet8

from .datagen import write_cifar10


class RecordingKD(KD):
    """KD that keeps what it was given, to compare runs step by step."""

    def __init__(self) -> None:
        super().__init__(weight=0.9, temperature=4.0)
        self.seen: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def forward(self, student, teacher, batch):
        loss = super().forward(student, teacher, batch)
        self.seen.append((batch.indices, batch.views, teacher.logits.detach().clone(), loss.detach()))
        return loss


def random_teacher_file(path: Path, seed: int) -> Path:
    """A resnet8 (10 classes) with non-trivial BatchNorm statistics, saved as safetensors."""
    seed_everything(seed)
    teacher = resnet8(num_classes=10)
    for module in teacher.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2)
    save_file(teacher.state_dict(), str(path))
    return path


def tiny_cifar(root: Path) -> Path:
    """``root`` with 100 training and 30 test CIFAR-10 images and ``teacher.safetensors``."""
    write_cifar10(root, per_batch=20)
    random_teacher_file(root / "teacher.safetensors", seed=3)
    return root
