"""Teacher outputs on disk: one row per (view rank, sample), memory-mapped and shared by processes.

A cache directory holds ``meta.json`` (the identity it was built for and its layout) and flat
binary arrays that every process maps with ``MAP_SHARED``:

- ``values.bin``: float16 ``(ranks, samples, width)``: the teacher's logits (width = classes),
  or with ``top_k=k`` the k largest logits followed by the mean of the others (width = k + 1);
- ``classes.bin`` (top-k only): int16 ``(ranks, samples, k)``, the classes of those logits;
- ``marks.bin``: int16 ``(ranks, samples)``, 0 for an empty row, else a checksum of the row.

Rows are addressed by the rank of the view in its sample's fixed order
(:mod:`kdlab.data.view_order`), rank-major, so a cache used with K views per sample occupies the
first K planes of a sparse file and nothing else. A row is valid only if its mark equals the
checksum of the values read with it: the values are written first and the mark last, so a reader
never trusts a half-written row (another process mid-write, a crash, a file system that makes
pages visible out of order); such a row is a miss and gets recomputed. Processes that fill the
same row write the same values, so concurrent filling needs no lock.

A directory is created complete under a temporary name and renamed into place; of several
processes (DDP ranks, concurrent jobs) creating it at once, one rename wins and the others open it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from kdlab.data.augment import NUM_VIEWS
from kdlab.errors import ConfigurationError

FORMAT_VERSION = 1
_FP16_MAX = 65504.0
_CHECKSUM_MODULUS = 32749  # a prime below 2**15: marks fit int16 and are never 0


def cache_name(identity: dict[str, Any]) -> str:
    """The directory name of a cache: readable prefix + sha256 of the canonical identity."""
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]
    data, teacher = identity.get("data", {}), identity.get("teacher", {})
    prefix = f"{data.get('dataset', 'data')}-{data.get('split', 'train')}"
    return f"{prefix}-{teacher.get('class', 'teacher').rsplit('.', 1)[-1]}-{digest}"


def _checksum(*parts: Tensor) -> Tensor:
    """A non-zero int16 checksum of each row of the given int16/float16 ``(B, X)`` tensors."""
    bits = torch.cat([part.view(torch.int16) for part in parts], dim=1).to(torch.int64)
    weights = torch.arange(1, bits.shape[1] + 1, dtype=torch.int64) * 2 + 1
    return ((bits * weights).sum(dim=1) % _CHECKSUM_MODULUS + 1).to(torch.int16)


class OutputStore:
    """The arrays of one cache directory; see the module docstring for the format.

    Args:
        directory: An existing cache directory (use :func:`open_store` to create one).
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.meta = json.loads((self.directory / "meta.json").read_text())
        layout = self.meta["identity"]["layout"]
        self.ranks, self.samples = layout["ranks"], layout["samples"]
        self.num_classes, self.top_k = layout["num_classes"], layout["top_k"]
        width = self.num_classes if self.top_k is None else self.top_k + 1
        self.values = self._map("values.bin", torch.float16, width)
        self.classes = None if self.top_k is None else self._map("classes.bin", torch.int16, self.top_k)
        self.marks = self._map("marks.bin", torch.int16, None)

    def _map(self, name: str, dtype: torch.dtype, width: int | None) -> Tensor:
        shape = (self.ranks, self.samples) + (() if width is None else (width,))
        numel = int(torch.Size(shape).numel())
        return torch.from_file(str(self.directory / name), shared=True, size=numel, dtype=dtype).view(shape)

    # ----------------------------------------------------------------------------- rows
    def encode(self, logits: Tensor) -> tuple[Tensor, Tensor | None]:
        """Float logits ``(B, C)`` -> the stored ``(values, classes)`` of those rows."""
        logits = logits.detach().float().cpu().clamp(-_FP16_MAX, _FP16_MAX)
        if self.top_k is None:
            return logits.half(), None
        top = logits.topk(self.top_k, dim=1)
        rest = (logits.sum(dim=1) - top.values.sum(dim=1)) / (self.num_classes - self.top_k)
        return torch.cat([top.values, rest[:, None]], dim=1).half(), top.indices.to(torch.int16)

    def decode(self, values: Tensor, classes: Tensor | None) -> Tensor:
        """Stored rows -> float32 logits ``(B, C)`` (top-k: the other classes get the stored mean)."""
        if classes is None:
            return values.float()
        logits = values[:, -1:].float().expand(len(values), self.num_classes).clone()
        return logits.scatter_(1, classes.long(), values[:, :-1].float())

    def read(self, ranks: Tensor, indices: Tensor) -> tuple[Tensor, Tensor]:
        """Float32 logits ``(B, C)`` of rows ``(ranks[i], indices[i])`` and which rows were valid.

        Args:
            ranks: CPU int64 view ranks ``(B,)``.
            indices: CPU int64 sample positions ``(B,)``.
        """
        marks = self.marks[ranks, indices]
        values = self.values[ranks, indices]
        classes = None if self.classes is None else self.classes[ranks, indices]
        parts = (values,) if classes is None else (values, classes)
        valid = (marks != 0) & (marks == _checksum(*parts))
        return self.decode(values, classes), valid

    def write(self, ranks: Tensor, indices: Tensor, logits: Tensor) -> Tensor:
        """Store the teacher's ``logits`` ``(B, C)`` for rows ``(ranks[i], indices[i])``.

        Returns:
            The logits as a later :meth:`read` returns them (float16 rounding, top-k).
        """
        values, classes = self.encode(logits)
        self.values[ranks, indices] = values
        if classes is not None:
            self.classes[ranks, indices] = classes
        # The mark goes last: it vouches for the values above.
        self.marks[ranks, indices] = _checksum(values) if classes is None else _checksum(values, classes)
        return self.decode(values, classes)

    def filled(self, ranks: Tensor, indices: Tensor) -> Tensor:
        """Which rows have a mark (cheap; :meth:`read` also checks that the mark fits the values)."""
        return self.marks[ranks, indices] != 0

    def count_filled(self) -> int:
        """How many rows hold a mark."""
        return int((self.marks != 0).sum())


def open_store(
    root: str | Path, identity: dict[str, Any], samples: int, num_classes: int, top_k: int | None = None
) -> OutputStore:
    """Open the cache for ``identity`` under ``root``, creating it atomically if it does not exist.

    Args:
        root: Folder holding cache directories.
        identity: Everything the cached values depend on (JSON-serialisable); its hash names the
            directory and the stored copy is compared with it on every open.
        samples: Number of samples of the split.
        num_classes: Width of the teacher's logits.
        top_k: Keep only the k largest logits per row (lossy), or None for all of them.

    Raises:
        ConfigurationError: the directory exists but was built for something else.
    """
    if top_k is not None and not 1 <= top_k < num_classes:
        raise ConfigurationError(f"top_k must be in [1, {num_classes - 1}] (classes - 1), got {top_k}")
    layout = {"ranks": NUM_VIEWS, "samples": samples, "num_classes": num_classes, "top_k": top_k}
    identity = json.loads(json.dumps(identity))  # canonical: tuples become lists
    identity = {**identity, "layout": layout, "format_version": FORMAT_VERSION}
    root = Path(root).expanduser()
    final = root / cache_name(identity)
    if not (final / "meta.json").is_file():
        _create(root, final, identity)
    stored = json.loads((final / "meta.json").read_text())
    if stored["identity"] != identity:
        raise ConfigurationError(
            f"teacher cache '{final}' was built for a different teacher, data or layout than this run "
            "(a name collision or an edited meta.json): delete that directory and run again."
        )
    return OutputStore(final)


def _create(root: Path, final: Path, identity: dict[str, Any]) -> None:
    layout = identity["layout"]
    staging = root / f".{final.name}.{uuid.uuid4().hex}.tmp"
    staging.mkdir(parents=True)
    try:
        meta = {"identity": identity}
        (staging / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
        rows = layout["ranks"] * layout["samples"]
        width = layout["num_classes"] if layout["top_k"] is None else layout["top_k"] + 1
        sizes = {"values.bin": rows * width * 2, "marks.bin": rows * 2}
        if layout["top_k"] is not None:
            sizes["classes.bin"] = rows * layout["top_k"] * 2
        for name, size in sizes.items():
            with open(staging / name, "wb") as handle:
                handle.truncate(size)  # sparse: disk blocks are allocated as rows are written
        try:
            os.rename(staging, final)
        except OSError:
            if not (final / "meta.json").is_file():
                raise  # not a lost race: a real error (permissions, a stray file named like the cache)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
