"""Distillation losses: pure functions in the style of ``torch.nn.functional`` and module shells."""

from kdlab.losses.base import Distiller
from kdlab.losses.dist import DIST, dist_loss
from kdlab.losses.dkd import DKD, dkd_loss
from kdlab.losses.kd import KD, kd_loss, standardize_logits
from kdlab.losses.mlkd import MLKD, mlkd_loss

__all__ = [
    "DIST",
    "DKD",
    "KD",
    "MLKD",
    "Distiller",
    "dist_loss",
    "dkd_loss",
    "kd_loss",
    "mlkd_loss",
    "standardize_logits",
]
