"""kdlab: knowledge distillation on PyTorch Lightning."""

from kdlab.module import DistillationModule
from kdlab.outputs import Batch, Outputs

__version__ = "0.1.0"
__all__ = ["Batch", "DistillationModule", "Outputs", "__version__"]
