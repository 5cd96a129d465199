"""The one safe reader of weight files in kdlab (teachers, zoo and torchvision weights, exports).

Nothing here runs code from a file: ``.safetensors`` files are read with safetensors, anything
else with ``torch.load(weights_only=True)``, which refuses pickled objects other than tensors
and plain containers. A state dict is found inside the usual wrappers (Lightning/kdlab
``state_dict``, RepDistiller/mdistiller/torchdistill ``model``, nested), a kdlab run's
``student.`` weights are taken from its checkpoint, and training wrappers' name prefixes
(``module.``, ``_orig_mod.``, ``student.``, ``model.``) are stripped only as far as needed to fit
the network being loaded (so a network whose own attribute is ``model`` keeps its names).
Models import nothing from the rest of kdlab; the rest of kdlab reads weights through here.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

WRAPPER_PREFIXES = ("module.", "_orig_mod.", "student.", "model.")


class UnsafeFileError(ValueError):
    """The file pickles objects other than tensors and plain containers (it could run code)."""


class CorruptFileError(ValueError):
    """The file is truncated, corrupt or not a weight file."""


def read_object(path: str | Path) -> object:
    """What ``path`` holds, read safely (a dict of tensors for ``.safetensors``).

    Raises:
        FileNotFoundError: no file at ``path``.
        UnsafeFileError: reading it would unpickle arbitrary objects.
        CorruptFileError: it is truncated, corrupt or no weight file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no file at '{path}' (weights are never downloaded; give a local file)")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        lines = [line.strip() for line in str(error).splitlines()] or [""]
        detail = next((line for line in lines if "GLOBAL" in line), lines[0]).rstrip(".")
        raise UnsafeFileError(
            f"refused to load '{path}': it pickles objects other than tensors and plain containers, which "
            "could run code. Only load files you trust; convert them to .safetensors or a plain state "
            f"dict (torch.save(model.state_dict(), ...)). Detail: {detail}"
        ) from None
    except Exception as error:  # truncated zip, bad header, wrong format...
        first = str(error).splitlines()[0] if str(error) else ""
        raise CorruptFileError(
            f"'{path}' is corrupt, truncated or not a weight file ({type(error).__name__}: {first}); "
            "re-copy or re-export it"
        ) from None


def state_dict_in(content: object, path: str | Path) -> dict[str, Tensor]:
    """The state dict inside ``content`` (as read from ``path``), unwrapped as described above.

    Raises:
        ValueError: ``content`` holds no mapping of names to tensors.
    """
    while isinstance(content, Mapping) and not _is_state_dict(content):
        inner = next(
            (content[k] for k in ("state_dict", "model") if isinstance(content.get(k), Mapping)), None
        )
        if inner is None:
            break
        content = inner
    if not isinstance(content, Mapping) or not _is_state_dict(content):
        raise ValueError(
            f"'{path}' holds no state dict (a mapping of names to tensors); save one with "
            "torch.save(model.state_dict(), path)"
        )
    state = dict(content)
    if any(key.startswith("student.") for key in state):  # a kdlab run: its student's weights
        state = {key: value for key, value in state.items() if key.startswith("student.")}
    return state


def read_weights(path: str | Path) -> dict[str, Tensor]:
    """The state dict in ``path`` (see :func:`read_object` and :func:`state_dict_in`)."""
    return state_dict_in(read_object(path), path)


def fit_names(state: Mapping[str, Tensor], expected: set[str]) -> dict[str, Tensor]:
    """``state`` with wrapper prefixes stripped while that makes its names fit ``expected`` better."""
    state = dict(state)
    while set(state) != expected:
        prefix = next((p for p in WRAPPER_PREFIXES if state and all(k.startswith(p) for k in state)), None)
        if prefix is None:
            break
        stripped = {key[len(prefix) :]: value for key, value in state.items()}
        if len(set(stripped) & expected) < len(set(state) & expected):
            break
        state = stripped
    return state


def mismatch(state: Mapping[str, Tensor], model: nn.Module) -> str | None:
    """What keeps ``state`` from loading strictly into ``model`` (None: it fits)."""
    expected = model.state_dict()
    problems = {
        "missing": sorted(set(expected) - set(state)),
        "unexpected": sorted(set(state) - set(expected)),
        "shape": [
            f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
            for k in sorted(set(state) & set(expected))
            if state[k].shape != expected[k].shape
        ],
    }
    if not any(problems.values()):
        return None
    return "; ".join(
        f"{label} ({len(keys)}): {', '.join(keys[:8])}{' ...' if len(keys) > 8 else ''}"
        for label, keys in problems.items()
        if keys
    )


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load the weights in ``path`` into ``model`` strictly, with a readable mismatch report.

    Raises:
        FileNotFoundError, ValueError: the file cannot be read safely, or does not fit ``model``.
    """
    state = fit_names(read_weights(path), set(model.state_dict()))
    problem = mismatch(state, model)
    if problem:
        raise ValueError(
            f"weights '{path}' do not fit {type(model).__name__}: {problem}. Check the architecture, "
            "num_classes and in_channels against the file."
        )
    model.load_state_dict(state, strict=True)


def _is_state_dict(content: Mapping) -> bool:
    return bool(content) and all(isinstance(v, Tensor) for v in content.values())
