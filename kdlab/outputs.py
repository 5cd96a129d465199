"""The two small records that flow through a distillation step."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from torch import Tensor


class Batch(NamedTuple):
    """What every kdlab DataModule yields: inputs, class targets and sample indices.

    ``indices`` identify each sample in its split, so that memory banks (CRD) and the
    teacher-output cache can address per-sample state. ``views`` is set by DataModules whose
    training augmentation draws from a finite set of views: the id of the view each sample
    was given (the teacher-output cache keys on it); None otherwise. ``strong_inputs`` is a
    second, strongly augmented view of the same samples, for methods that train on both (MLKD;
    ``CIFARDataModule(strong_view=True)``); None otherwise.
    """

    inputs: Tensor
    targets: Tensor
    indices: Tensor
    views: Tensor | None = None
    strong_inputs: Tensor | None = None


@dataclass
class Outputs:
    """One network's outputs for a batch.

    Args:
        logits: Class scores, shape ``(batch, classes)``.
        features: Tapped intermediate tensors by module path (``"layer3"``,
            ``"layer3.2.relu:input"``); empty unless a distiller asked for them.
        strong_logits: Class scores for the batch's strong view, when it has one.
    """

    logits: Tensor
    features: dict[str, Tensor] = field(default_factory=dict)
    strong_logits: Tensor | None = None

    def float(self) -> Outputs:
        """The same outputs in float32 (tensors that already are float32 are not copied)."""
        features = {path: value.float() for path, value in self.features.items()}
        strong = None if self.strong_logits is None else self.strong_logits.float()
        return Outputs(self.logits.float(), features, strong)
