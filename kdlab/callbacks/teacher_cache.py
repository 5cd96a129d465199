"""TeacherCache: the teacher's logits per (training sample, augmentation view), computed once.

Caching teacher outputs is usually only valid without augmentation, because the teacher's
output depends on the augmented image. kdlab's CIFAR augmentation draws each sample's image from
a finite set of 162 views and every batch carries the view ids, so the logits of
``(sample, view)`` can be stored and reused: across epochs, and across students, seeds and sweeps
that share the teacher, the data and the transform. With ``views_per_sample=K`` on the
DataModule each sample only ever gets K views (Fast Knowledge Distillation, Shen & Xing, ECCV
2022), so the cache is complete after K epochs, or after ``kdlab cache`` has filled it upfront
with K × N teacher forwards.

How a training batch gets its teacher logits:

- at the start of each epoch the callback asks the DataModule which view every sample gets this
  epoch; if the cache holds all of them, that epoch's ``(N, C)`` table is put on the device and
  each step is one gather there (no teacher, no host work, no synchronisation);
- otherwise each step looks its rows up on the host, runs the teacher on the rows that are
  missing only (their already augmented inputs, in float32 whatever the Trainer's precision)
  and writes them back; the returned values are the stored (float16-rounded) ones either way, so
  a row gives the same loss whether it was a hit or a miss.

Identity: a cache directory is named by a hash of the teacher's class and weights sha256
(``DistillationModule.teacher_source``), the data's :meth:`view_set_identity` (dataset, split,
sha256 of the training pixels, which fixes the subset, the view set, mean/std and input shape)
and the storage layout; a different teacher, subset or normalisation gets a different directory,
never a stale one. Storage and concurrency: :mod:`kdlab.callbacks.cache_store`.

Limits:

- logits only: distillers that tap teacher features (FitNet, CRD, ...) need the teacher itself,
  and a run that combines them with this callback stops at set-up;
- the DataModule must describe its views (``train_views``, ``render_train``,
  ``view_set_identity``): ``CIFARDataModule`` does; ImageNet's random resized crops are not finite;
- the validation teacher runs online (it sees every validation image once per validation);
- on a GPU, epochs the cache cannot fully serve copy each batch's indices to the host (one small
  synchronisation per step) until the cache is complete;
- one machine, or a file system with coherent shared memory maps; on others, give each node
  its own ``root`` (rows are validated by checksum, so a stale page is a miss, never a wrong value);
- fp16 storage: logits are rounded to float16 (about 3 significant digits); ``top_k`` keeps only
  the k largest logits of each row and the mean of the others, which is lossy.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from lightning.pytorch import Callback, LightningDataModule, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from kdlab.callbacks.cache_store import OutputStore, open_store
from kdlab.callbacks.fast_paths import requested_teacher_taps
from kdlab.data.view_order import view_ranks
from kdlab.errors import ConfigurationError
from kdlab.outputs import Batch

DEFAULT_ROOT = "~/.cache/kdlab/teacher-outputs"
_VIEW_METHODS = ("train_views", "render_train", "view_set_identity")


def default_root() -> str:
    """``$KDLAB_CACHE`` if set, else ``~/.cache/kdlab/teacher-outputs``."""
    return os.environ.get("KDLAB_CACHE", DEFAULT_ROOT)


class TeacherCache(Callback):
    """Serve the teacher's logits from a disk cache keyed by (training sample, augmentation view).

    Args:
        root: Folder of cache directories, shared by every run that should share caches
            (default: ``$KDLAB_CACHE`` or ``~/.cache/kdlab/teacher-outputs``).
        top_k: Store only the k largest logits of each row and the mean of the others (lossy,
            smaller: for many classes). None stores all logits in float16.
    """

    def __init__(self, root: str | None = None, top_k: int | None = None) -> None:
        self.root = root
        self.top_k = top_k
        self.store: OutputStore | None = None
        self.hits = self.misses = 0  # this process, every epoch (restored on resume)
        self._epoch_counts = [0, 0]
        self._datamodule: Any = None
        self._epoch_table: Tensor | None = None
        self._epoch_views: Tensor | None = None
        self._check_views = False

    # ----------------------------------------------------------------------------- set-up
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit":
            self.attach(pl_module, trainer.datamodule)

    def attach(self, pl_module: LightningModule, datamodule: LightningDataModule) -> OutputStore:
        """Open (or create) the cache of this teacher and data, and serve ``pl_module`` from it."""
        _check_servable(pl_module, datamodule)
        teacher = pl_module.teacher
        identity = {
            "teacher": {
                "class": f"{type(teacher).__module__}.{type(teacher).__qualname__}",
                "sha256": pl_module.teacher_source["sha256"],
            },
            "data": datamodule.view_set_identity(),
        }
        probe = datamodule.render_train(torch.zeros(1, dtype=torch.int64), torch.zeros(1, dtype=torch.int64))
        num_classes = pl_module.teacher_logits(probe.to(pl_module.device)).shape[-1]
        root = self.root or default_root()
        self.store = open_store(root, identity, identity["data"]["samples"], num_classes, self.top_k)
        self._datamodule = datamodule
        pl_module.teacher_inference.use_cache(self)
        return self.store

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if pl_module.teacher_inference.cache is self:
            pl_module.teacher_inference.use_cache(None)
        self._epoch_table = self._epoch_views = None

    # ----------------------------------------------------------------------------- each epoch
    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._epoch_counts = [0, 0]
        self._epoch_table = self.epoch_logits(trainer.current_epoch, pl_module.device)
        self._check_views = self._epoch_table is not None

    def epoch_logits(self, epoch: int, device: torch.device | str = "cpu") -> Tensor | None:
        """Every training sample's cached logits for its view in ``epoch`` ``(N, C)``, or None
        if the cache misses any of them."""
        indices = torch.arange(self.store.samples)
        chunks = indices.split(4096)  # (chunk, 162) hash tables stay small
        views = torch.cat([self._datamodule.train_views(chunk, epoch) for chunk in chunks])
        ranks = torch.cat([view_ranks(i, v) for i, v in zip(chunks, views.split(4096))])
        if not bool(self.store.filled(ranks, indices).all()):
            return None
        logits, valid = self.store.read(ranks, indices)
        if not bool(valid.all()):
            return None
        self._epoch_views = views.to(device)
        return logits.to(device)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        hits, misses = self._epoch_counts
        self.hits, self.misses = self.hits + hits, self.misses + misses
        counts = trainer.strategy.reduce(
            torch.tensor([hits, misses], dtype=torch.float32, device=pl_module.device), reduce_op="sum"
        )
        logged = {"cache/hit_rate": counts[0] / counts.sum().clamp_min(1), "cache/computed": counts[1]}
        pl_module.log_dict(logged | {"cache/rows": float(self.store.count_filled())})

    # ----------------------------------------------------------------------------- each step
    def teacher_logits(self, batch: Batch, compute: Any) -> Tensor:
        """Float32 teacher logits ``(B, C)`` of a training batch, on its device.

        Args:
            batch: A training batch with ``indices`` and ``views``.
            compute: Runs the frozen teacher on a batch of inputs (for the rows not cached yet).
        """
        if self._epoch_table is None:
            return self._lookup(batch, compute)
        if self._check_views:  # once per epoch: these batches carry the views the table is for
            self._check_views = False
            if not torch.equal(batch.views, self._epoch_views[batch.indices]):
                raise RuntimeError(
                    "TeacherCache: the batch's view ids differ from the DataModule's train_views() "
                    "for this epoch; the cache cannot tell which image each sample was given."
                )
        self._epoch_counts[0] += len(batch.indices)
        return self._epoch_table[batch.indices]

    def _lookup(self, batch: Batch, compute: Any) -> Tensor:
        device = batch.inputs.device
        indices, views = batch.indices.cpu(), batch.views.cpu()
        ranks = view_ranks(indices, views)
        logits, valid = self.store.read(ranks, indices)
        missing = (~valid).nonzero().flatten()
        if len(missing):
            with torch.autocast(device.type, enabled=False):  # cached values do not depend on precision
                fresh = compute(batch.inputs[missing.to(device)].float())
            logits[missing] = self.store.write(ranks[missing], indices[missing], fresh)
        self._epoch_counts[0] += len(indices) - len(missing)
        self._epoch_counts[1] += len(missing)
        return logits.to(device, non_blocking=True)

    # ----------------------------------------------------------------------------- resume
    def state_dict(self) -> dict[str, Any]:
        directory = None if self.store is None else str(self.store.directory)
        return {"hits": self.hits, "misses": self.misses, "directory": directory}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.hits, self.misses = state_dict["hits"], state_dict["misses"]
        current = None if self.store is None else str(self.store.directory)
        if current is not None and state_dict.get("directory") not in (None, current):
            rank_zero_warn(
                f"TeacherCache: the checkpoint used the cache {state_dict['directory']}, this run uses "
                f"{current} (teacher, data or layout changed); rows are recomputed as needed."
            )


def _check_servable(pl_module: LightningModule, datamodule: Any) -> None:
    if getattr(pl_module, "teacher", None) is None:
        raise ConfigurationError("TeacherCache needs a teacher: set model.teacher, or remove the callback.")
    taps = requested_teacher_taps(pl_module)
    if taps:
        raise ConfigurationError(
            f"TeacherCache stores teacher logits only, but distillers tap the teacher's layers {taps}: "
            "remove kdlab.callbacks.TeacherCache from trainer.callbacks for this method."
        )
    missing = [name for name in _VIEW_METHODS if not hasattr(datamodule, name)]
    if missing:
        raise ConfigurationError(
            f"TeacherCache needs a DataModule whose training augmentation is a finite set of views "
            f"({', '.join(_VIEW_METHODS)}), e.g. kdlab.data.CIFARDataModule; "
            f"{type(datamodule).__name__} lacks {', '.join(missing)}."
        )
