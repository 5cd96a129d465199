"""Read a local weight file without running code from it (models import nothing from kdlab)."""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn


def read_weights(path: str | Path) -> dict[str, Tensor]:
    """The state dict in ``path``: ``.safetensors`` via safetensors, anything else via
    ``torch.load(weights_only=True)`` (refuses pickled code). A ``{"state_dict": ...}`` or
    ``{"model": ...}`` wrapper is unwrapped.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is unsafe, corrupt, or holds no mapping of names to tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"weights: no file at '{path}' (weights are never downloaded; give a local file)"
        )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: object = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"weights: refused to load '{path}': it pickles objects other than tensors, which could run "
            f"code. Convert it to .safetensors or a plain state dict. Detail: {str(error).splitlines()[0]}"
        ) from None
    except Exception as error:  # truncated zip, bad header, not a weight file
        raise ValueError(
            f"weights: '{path}' is corrupt or not a weight file ({type(error).__name__}: {error})"
        ) from None
    for key in ("state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"weights: '{path}' holds no state dict (a mapping of parameter names to tensors)")
    return dict(state)


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load the state dict in ``path`` into ``model`` strictly, with a readable mismatch report.

    Raises:
        ValueError: the file cannot be read safely, or its names/shapes do not fit ``model``.
    """
    state = read_weights(path)
    expected = model.state_dict()
    problems = {
        "missing": sorted(set(expected) - set(state)),
        "unexpected": sorted(set(state) - set(expected)),
        "shape": [
            f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
            for k in sorted(set(state) & set(expected))
            if state[k].shape != expected[k].shape
        ],
    }
    if any(problems.values()):
        details = "; ".join(
            f"{label} ({len(keys)}): {', '.join(keys[:6])}{' ...' if len(keys) > 6 else ''}"
            for label, keys in problems.items()
            if keys
        )
        raise ValueError(
            f"weights '{path}' do not fit {type(model).__name__}: {details}. Check the architecture, "
            "num_classes and in_channels against the file."
        )
    model.load_state_dict(state, strict=True)
