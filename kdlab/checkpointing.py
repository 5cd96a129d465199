"""Checkpoints that survive kills: atomic writes, safe reads, best/last files (also mid-epoch).

Lightning's default ``TorchCheckpointIO`` serialises the checkpoint into memory, writes it to a
temporary file in the system temp folder and moves it into place. When that folder is on another
disk than the checkpoints (local ``/tmp``, checkpoints on a shared file system: the usual cluster
layout) the move is a copy, and a job killed during the copy leaves a truncated ``last.ckpt``;
nothing is fsynced either. :class:`AtomicCheckpointIO` writes next to the target instead, fsyncs
and renames, so a checkpoint path always holds either the previous complete file or the new one.
"""

from __future__ import annotations

import contextlib
import os
import pickle
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO

from kdlab.errors import CheckpointError, unpickling_detail

_TEMP_MARK = ".tmp-"


def _fsync_directory(directory: Path) -> None:
    # Makes the rename itself durable; not every platform/file system allows opening a directory.
    with contextlib.suppress(OSError):
        descriptor = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save(obj, path)`` that never leaves a partial file at ``path``.

    Streams into a hidden temporary file in the same directory, flushes and fsyncs it, then
    renames it over ``path`` (``os.replace`` is atomic within one file system). A failure or a
    kill at any moment leaves the previous file at ``path`` untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}{_TEMP_MARK}*"):  # left by a killed writer
        with contextlib.suppress(OSError):
            stale.unlink()
    temporary = path.parent / f".{path.name}{_TEMP_MARK}{os.getpid()}"
    try:
        with open(temporary, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    _fsync_directory(path.parent)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes checkpoints atomically (temporary file beside the target, fsync, rename) and reads
    them without running pickled code, with a clear error for a corrupt or unsafe file.

    The ``kdlab`` command uses it by default; in Python pass ``Trainer(plugins=[AtomicCheckpointIO()])``.
    Remote paths (``s3://``, ...) go through Lightning's fsspec writer, whose object stores replace
    objects atomically.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any = None) -> None:
        if storage_options is not None or "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(
        self, path: _PATH, map_location: Any = lambda storage, loc: storage, weights_only: bool | None = None
    ) -> dict[str, Any]:
        if not get_filesystem(path).exists(path):
            raise CheckpointError(f"no checkpoint at '{path}': check --ckpt_path")
        try:
            # None means True: kdlab checkpoints hold only tensors and plain containers, and a
            # checkpoint handed over by someone else must not be able to run code on load.
            return super().load_checkpoint(path, map_location, True if weights_only is None else weights_only)
        except Exception as error:
            raise unreadable_checkpoint(path, error) from None


def unreadable_checkpoint(path: _PATH, error: Exception) -> CheckpointError:
    """The error to raise for a checkpoint that ``torch.load(weights_only=True)`` could not read."""
    if isinstance(error, pickle.UnpicklingError):
        return CheckpointError(
            f"refused to load the checkpoint '{path}': it pickles objects other than tensors and plain "
            "containers, which could run code. If you trust it, load it yourself with "
            f"torch.load(..., weights_only=False). Detail: {unpickling_detail(error)}"
        )
    # A truncated zip, a bad header, garbage: torch raises many types.
    return CheckpointError(
        f"the checkpoint '{path}' is corrupt or truncated ({type(error).__name__}: "
        f"{unpickling_detail(error)}); resume from another checkpoint (e.g. best.ckpt, or an "
        "hpc_ckpt_*.ckpt) or start afresh"
    )


def __getattr__(name: str) -> Any:
    if name == "BestAndLastCheckpoint":  # moved with the other callbacks
        import warnings

        from kdlab.callbacks.checkpoints import BestAndLastCheckpoint

        warnings.warn(
            "kdlab.checkpointing.BestAndLastCheckpoint moved to kdlab.callbacks.BestAndLastCheckpoint; "
            "use that class_path",
            DeprecationWarning,
            stacklevel=2,
        )
        return BestAndLastCheckpoint
    raise AttributeError(f"module 'kdlab.checkpointing' has no attribute {name!r}")
