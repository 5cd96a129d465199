"""Distillation losses: pure functions in the style of ``torch.nn.functional`` and module shells."""

from kdlab.losses.base import Distiller
from kdlab.losses.kd import KD, kd_loss

__all__ = ["KD", "Distiller", "kd_loss"]
