"""Safe teacher loading, freezing and fingerprinting.

Teacher files often come from strangers, so nothing here unpickles arbitrary objects:
``.safetensors`` files are read with safetensors, everything else with
``torch.load(weights_only=True)``, which refuses pickled code.
"""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import Tensor, nn

from kdlab.errors import TeacherLoadError, unpickling_detail

# Prefixes that training wrappers put in front of parameter names: DataParallel/DDP,
# torch.compile, a kdlab/Lightning module's ``student`` and generic ``model`` attributes.
WRAPPER_PREFIXES = ("module.", "_orig_mod.", "student.", "model.")


def file_sha256(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def state_sha256(module: nn.Module) -> str:
    """Hex sha256 over a module's state dict (names, dtypes, shapes and values)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read a state dict from ``.safetensors``, a plain ``.pt``/``.pth`` state dict or a checkpoint.

    Lightning/kdlab checkpoints are recognised by their ``state_dict`` key, RepDistiller,
    mdistiller and torchdistill checkpoints by their ``model`` key. When the checkpoint holds a
    ``student.`` sub-module (a kdlab run), only that sub-module is kept.
    Wrapper prefixes (``module.``, ``_orig_mod.``, ``student.``, ``model.``) are stripped.

    Raises:
        TeacherLoadError: the file is missing, would execute code when unpickled, or is corrupt.
    """
    path = Path(path)
    if not path.is_file():
        raise TeacherLoadError(
            f"teacher weights: no file at '{path}'. Fix the path, or train a teacher first "
            "(kdlab fit with no teacher) and point teacher_weights at its checkpoint."
        )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise TeacherLoadError(
            f"teacher weights: refused to load '{path}': it contains pickled objects other than "
            "tensors and plain containers, which could run code. Only load files you trust; convert "
            "them to .safetensors or a plain state dict (torch.save(model.state_dict(), ...)). "
            f"Detail: {unpickling_detail(error)}"
        ) from None
    except Exception as error:  # truncated zip, bad header, wrong format...
        raise TeacherLoadError(
            f"teacher weights: '{path}' is corrupt, truncated or not a weight file ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}). Re-copy or re-export it."
        ) from None
    return _extract_state_dict(state, path)


def _extract_state_dict(state: object, path: Path) -> dict[str, Tensor]:
    for key in ("state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
            break
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise TeacherLoadError(
            f"teacher weights: '{path}' holds no state dict (a mapping of names to tensors); "
            "save one with torch.save(model.state_dict(), path)."
        )
    state = dict(state)
    if any(key.startswith("student.") for key in state):
        state = {key: value for key, value in state.items() if key.startswith("student.")}
    return {_strip_prefixes(key): value for key, value in state.items()}


def _strip_prefixes(key: str) -> str:
    stripped = True
    while stripped:
        stripped = False
        for prefix in WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key, stripped = key[len(prefix) :], True
    return key


def load_teacher_weights(teacher: nn.Module, path: str | Path) -> str:
    """Load ``path`` into ``teacher`` strictly and return the file's sha256.

    Raises:
        TeacherLoadError: the file cannot be read safely or its keys/shapes do not fit.
    """
    state = read_state_dict(path)
    expected = teacher.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(set(state) & set(expected))
        if state[k].shape != expected[k].shape
    ]
    if missing or unexpected or wrong_shape:
        raise TeacherLoadError(
            f"teacher weights '{path}' do not fit {type(teacher).__name__}: "
            + "; ".join(
                f"{label} ({len(keys)}): {', '.join(keys[:8])}{' ...' if len(keys) > 8 else ''}"
                for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape", wrong_shape))
                if keys
            )
            + ". Check that the teacher's class_path and init_args (e.g. num_classes) match the file."
        )
    teacher.load_state_dict(state, strict=True)
    return file_sha256(path)


def freeze(teacher: nn.Module) -> nn.Module:
    """Stop gradients into ``teacher`` and put it in eval mode (BatchNorm uses running stats)."""
    teacher.requires_grad_(False)
    return teacher.eval()


@contextmanager
def batch_statistics(network: nn.Module) -> Iterator[None]:
    """Inside, ``network``'s BatchNorms normalise with each batch's own statistics and leave their
    running statistics untouched, whatever the network's mode.

    It is what a network in train mode computes, without the running-statistics update that
    would make a frozen teacher drift. Done by hiding the running buffers (BatchNorm then uses
    batch statistics and updates nothing) and putting them back afterwards.
    """
    hidden = []
    for module in network.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.running_mean is not None:
            hidden.append((module, module.running_mean, module.running_var))
            module.running_mean, module.running_var = None, None
    try:
        yield
    finally:
        for module, mean, var in hidden:
            module.running_mean, module.running_var = mean, var
