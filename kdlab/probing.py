"""Probing the networks once at set-up: an example input, tapped shapes, distiller adapters."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from kdlab.errors import ConfigurationError
from kdlab.losses.base import BuildContext, Distiller
from kdlab.outputs import Batch, Outputs
from kdlab.taps import requested_taps, resolve_tap

_LOADERS = {"fit": "train", "validate": "val", "test": "test", "predict": "predict"}


def example_from_data(datamodule: Any, stage: str, device: torch.device) -> Tensor | None:
    """Two inputs of the stage's first batch, for datamodules that declare no ``input_shape``."""
    loader = _LOADERS.get(stage)
    if datamodule is None or loader is None:
        return None
    inputs = Batch(*next(iter(getattr(datamodule, f"{loader}_dataloader")()))).inputs[:2]
    # Only shapes matter here; integer images (normalised later on the device) become floats.
    return (inputs if inputs.is_floating_point() else inputs.float()).to(device)


def num_training_samples(datamodule: Any, stage: str) -> int | None:
    """The size of the training split (for per-sample state such as CRD's memory banks)."""
    if stage != "fit" or datamodule is None:
        return None
    count = getattr(datamodule, "num_train_samples", None)
    if count is None:
        try:
            count = len(datamodule.train_dataloader().dataset)
        except TypeError:  # an iterable dataset has no length
            return None
    return count


def build_distillers(
    distillers: dict[str, Distiller],
    networks: dict[str, nn.Module],
    probed: dict[str, Outputs],
    num_samples: int | None,
) -> None:
    """Resolve every requested tap, check the probe produced it, and build each distiller."""
    shapes = {
        role: {name: f.shape for name, f in outputs.features.items()} for role, outputs in probed.items()
    }
    paths: dict[str, dict[str, str]] = {"student": {}, "teacher": {}}
    for role, wanted in requested_taps(distillers.values()).items():
        for name, users in wanted.items():
            paths[role][name] = resolve_tap(networks[role], name)
            if name not in shapes[role]:
                raise ConfigurationError(
                    f"{role} tap '{name}' ({paths[role][name]}), read by {', '.join(users)}, produced "
                    "nothing when the networks were probed: that layer is not called in forward(). Tap "
                    "a layer that runs (see the model's feature_points)."
                )
    context = BuildContext(
        shapes["student"], shapes["teacher"], networks["student"], networks["teacher"],
        paths["student"], paths["teacher"], num_samples,
    )  # fmt: skip
    device = next(networks["student"].parameters(), torch.empty(0)).device
    for distiller in distillers.values():
        distiller.build(context)
        distiller.to(device)
