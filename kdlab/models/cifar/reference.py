"""Use the CRD benchmark's published CIFAR weights (RepDistiller / mdistiller checkpoints).

The zoo keeps that benchmark's parameter names except the classifier, always ``fc`` here
(``classifier`` in VGG, ``classifier.0`` in MobileNetV2, ``linear`` in ShuffleV1/V2 and
ResNet50). Convert a downloaded teacher once, then point ``teacher_weights`` at the result:

    python -m kdlab.models.cifar.reference ckpt_epoch_240.pth teachers/resnet32x4.safetensors
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

from torch import Tensor

from kdlab.models._weights import read_weights

# Longest prefix first: MobileNetV2's ``classifier.0.`` before VGG's ``classifier.``.
_CLASSIFIER_NAMES = ("classifier.0.", "classifier.", "linear.")


def from_reference_state_dict(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``state`` with the reference's classifier names renamed to ``fc``."""
    renamed = {}
    for name, tensor in state.items():
        prefix = next((p for p in _CLASSIFIER_NAMES if name.startswith(p)), None)
        renamed[name if prefix is None else "fc." + name[len(prefix) :]] = tensor
    return renamed


def convert_reference_checkpoint(source: str | Path, target: str | Path) -> Path:
    """Read a reference checkpoint safely (``{"model": state_dict, ...}`` or a bare state
    dict) and write its weights, renamed for the zoo, as ``target`` (``.safetensors``).

    Args:
        source: The downloaded checkpoint (``.pth``).
        target: The safetensors file to write.
    """
    from safetensors.torch import save_file

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    state = from_reference_state_dict(read_weights(source))
    save_file({name: tensor.contiguous() for name, tensor in state.items()}, str(target))
    return target


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m kdlab.models.cifar.reference SOURCE.pth TARGET.safetensors")
    print(convert_reference_checkpoint(sys.argv[1], sys.argv[2]))
