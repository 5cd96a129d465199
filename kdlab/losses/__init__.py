"""Distillation losses: pure functions in the style of ``torch.nn.functional`` and module shells."""

from kdlab.losses.ab import AB, ab_loss
from kdlab.losses.at import AT, at_loss, attention_map
from kdlab.losses.base import BuildContext, Distiller, IncompatibleShapesError
from kdlab.losses.cc import CC, cc_loss
from kdlab.losses.crd import CRD, contrast_scores, crd_loss, nce_loss
from kdlab.losses.dist import DIST, dist_loss
from kdlab.losses.dkd import DKD, dkd_loss
from kdlab.losses.fitnet import FitNet, fitnet_loss
from kdlab.losses.fsp import FSP, fsp_loss, fsp_matrix
from kdlab.losses.ft import FT, factor_map, ft_loss
from kdlab.losses.kd import KD, kd_loss, standardize_logits
from kdlab.losses.kdsvd import KDSVD, kdsvd_loss
from kdlab.losses.mlkd import MLKD, mlkd_loss
from kdlab.losses.nst import NST, nst_loss
from kdlab.losses.ofd import OFD, bn_margin, ofd_loss
from kdlab.losses.pkt import PKT, pkt_loss
from kdlab.losses.reviewkd import ABF, ReviewKD, hcl_loss
from kdlab.losses.rkd import RKD, pairwise_distances, rkd_loss
from kdlab.losses.sp import SP, similarity_matrix, sp_loss
from kdlab.losses.vid import VID, vid_loss

__all__ = [
    "AB",
    "ABF",
    "AT",
    "CC",
    "CRD",
    "DIST",
    "DKD",
    "FSP",
    "FT",
    "KD",
    "KDSVD",
    "MLKD",
    "NST",
    "OFD",
    "PKT",
    "RKD",
    "SP",
    "VID",
    "BuildContext",
    "Distiller",
    "FitNet",
    "IncompatibleShapesError",
    "ReviewKD",
    "ab_loss",
    "at_loss",
    "attention_map",
    "bn_margin",
    "cc_loss",
    "contrast_scores",
    "crd_loss",
    "dist_loss",
    "dkd_loss",
    "factor_map",
    "fitnet_loss",
    "fsp_loss",
    "fsp_matrix",
    "ft_loss",
    "hcl_loss",
    "kd_loss",
    "kdsvd_loss",
    "mlkd_loss",
    "nce_loss",
    "nst_loss",
    "ofd_loss",
    "pairwise_distances",
    "pkt_loss",
    "rkd_loss",
    "similarity_matrix",
    "sp_loss",
    "standardize_logits",
    "vid_loss",
]
