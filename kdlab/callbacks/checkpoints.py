"""Best and last checkpoints in a fixed run directory, also every N steps (for resuming)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from kdlab.errors import CheckpointError


def checkpoint_dir(root: str | os.PathLike) -> Path:
    """``<root>/checkpoints``: where :class:`BestAndLastCheckpoint` keeps ``best.ckpt`` and ``last.ckpt``."""
    return Path(root) / "checkpoints"


def checkpoint_path(root: str | os.PathLike, name: str) -> Path:
    """``<root>/checkpoints/<name>.ckpt`` (``name``: ``best`` or ``last``)."""
    return checkpoint_dir(root) / f"{name}.ckpt"


class BestAndLastCheckpoint(ModelCheckpoint):
    """Keeps ``best.ckpt`` (highest ``val/acc1``) and ``last.ckpt`` in ``<root>/checkpoints``.

    A fixed directory (rather than one per logger version) is what lets
    ``kdlab fit ... --ckpt_path last`` find the checkpoint of the previous attempt. ``last.ckpt``
    is written after every epoch and, with ``every_n_train_steps``, also every that many
    optimizer steps, so a killed run loses at most that many steps; a run resumed from such a
    mid-epoch checkpoint continues the epoch at the next batch in the same order (kdlab's data
    loaders save their position) and ends bit-identical to an uninterrupted run on CPU.

    Args:
        root: The run directory; None for ``trainer.default_root_dir`` (the ``kdlab`` command fills
            it in; in Python give it, or ``ckpt_path="last"`` cannot find the file before set-up).
        every_n_train_steps: Also write ``last.ckpt`` every this many optimizer steps (None: only
            at the end of each epoch).
    """

    def __init__(self, root: str | None = None, every_n_train_steps: int | None = None) -> None:
        if every_n_train_steps is not None and every_n_train_steps < 1:
            raise CheckpointError(f"every_n_train_steps must be at least 1, got {every_n_train_steps}")
        super().__init__(
            dirpath=None if root is None else str(checkpoint_dir(root)),
            filename="best",
            monitor="val/acc1",
            mode="max",
            save_top_k=1,
            save_last=True,
            auto_insert_metric_name=False,
            enable_version_counter=False,
            # Saved after validation, at the very end of the epoch, so a resumed run starts the
            # next epoch cleanly instead of replaying the end of this one.
            save_on_train_epoch_end=True,
        )
        self.step_interval = every_n_train_steps
        self.best_epoch: int | None = None  # the epoch of best.ckpt, for the closing summary

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.dirpath is None:
            self.dirpath = str(checkpoint_dir(trainer.default_root_dir))
        super().setup(trainer, pl_module, stage)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        super().on_train_batch_end(trainer, pl_module, *args)
        if not self.step_interval or trainer.global_step % self.step_interval or trainer.sanity_checking:
            return
        if trainer.fast_dev_run or self._last_global_step_saved == trainer.global_step:
            return
        saved_at = self._last_global_step_saved
        self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        # The end-of-epoch save at this same step must still happen (it records a finished epoch).
        self._last_global_step_saved = saved_at

    def _update_best_and_save(self, current: Any, trainer: Trainer, monitor_candidates: dict) -> None:
        # A new best: recorded before the files are written, so best.ckpt and last.ckpt carry it.
        self.best_epoch = trainer.current_epoch
        super()._update_best_and_save(current, trainer, monitor_candidates)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        # Lightning writes last.ckpt at epoch end only when the epoch also produced a new best;
        # a resumable run needs it after every epoch.
        if not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def state_dict(self) -> dict[str, Any]:
        return super().state_dict() | {"best_epoch": self.best_epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.best_epoch = state_dict.get("best_epoch", self.best_epoch)

    def summary(self) -> str:
        """One line: the best monitored value, its epoch and where best and last are."""
        if self.best_model_score is None:
            last = self.last_model_path or "none"
            return f"no best checkpoint (no {self.monitor} was logged); last: {last}"
        score = float(self.best_model_score)
        shown = f"{100 * score:.2f}%" if self.monitor.endswith("acc1") else f"{score:.4g}"
        epoch = "" if self.best_epoch is None else f" at epoch {self.best_epoch}"
        return f"best {self.monitor} {shown}{epoch}: {self.best_model_path}; last: {self.last_model_path}"
