"""kdlab: knowledge distillation on PyTorch Lightning.

``DistillationModule``, ``Batch`` and ``Outputs`` are imported on first use, so that importing a
part that does not need Lightning (``kdlab.models``, ``kdlab.losses``) does not pay for it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kdlab.module import DistillationModule
    from kdlab.outputs import Batch, Outputs

__version__ = "0.1.0"
__all__ = ["Batch", "DistillationModule", "Outputs", "__version__"]
_LAZY = {"DistillationModule": "kdlab.module", "Batch": "kdlab.outputs", "Outputs": "kdlab.outputs"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'kdlab' has no attribute {name!r}")
