"""Safe teacher loading, freezing and fingerprinting.

Teacher files often come from strangers, so they are read by kdlab's one safe reader
(:mod:`kdlab.models._weights`), which never unpickles arbitrary objects.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import Tensor, nn

from kdlab.errors import TeacherLoadError
from kdlab.models._weights import fit_names, mismatch, read_object, state_dict_in

# Where a kdlab checkpoint records the class names of the data it was trained on, in label order.
CLASS_NAMES_KEY = "class_names"


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
    """Read a teacher's state dict safely (:mod:`kdlab.models._weights`: ``.safetensors``, a plain
    state dict, or a Lightning/kdlab/RepDistiller/mdistiller checkpoint, of which a kdlab run's
    ``student.`` weights).

    Raises:
        TeacherLoadError: the file is missing, would execute code when unpickled, or is corrupt.
    """
    return read_teacher_file(path)[0]


def read_teacher_file(path: str | Path) -> tuple[dict[str, Tensor], list[str] | None]:
    """A teacher file's state dict and, for a kdlab checkpoint, the class names it was trained on.

    Raises:
        TeacherLoadError: as :func:`read_state_dict`.
    """
    try:
        content = read_object(path)
        names = content.get(CLASS_NAMES_KEY) if isinstance(content, dict) else None
        return state_dict_in(content, path), list(names) if isinstance(names, list) else None
    except FileNotFoundError:
        raise TeacherLoadError(
            f"teacher weights: no file at '{path}'. Fix the path, or train a teacher first "
            "(kdlab fit with no teacher) and point teacher_weights at its checkpoint."
        ) from None
    except ValueError as error:  # unsafe, corrupt, or no state dict inside
        raise TeacherLoadError(f"teacher weights: {error}") from None


def load_teacher_weights(teacher: nn.Module, path: str | Path) -> str:
    """Load ``path`` into ``teacher`` strictly (wrapper prefixes stripped as far as they must be)
    and return the file's sha256. The class names a kdlab checkpoint recorded become the
    teacher's ``class_names``, which the module checks against the data's at set-up.

    Raises:
        TeacherLoadError: the file cannot be read safely or its keys/shapes do not fit.
    """
    state, class_names = read_teacher_file(path)
    state = fit_names(state, set(teacher.state_dict()))
    problem = mismatch(state, teacher)
    if problem:
        raise TeacherLoadError(
            f"teacher weights '{path}' do not fit {type(teacher).__name__}: {problem}. Check that the "
            "teacher's class_path and init_args (e.g. num_classes) match the file."
        )
    teacher.load_state_dict(state, strict=True)
    if class_names is not None:
        teacher.class_names = class_names
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
