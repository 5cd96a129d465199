"""Run by tests/test_cache_ddp.py: a 2-process DDP fit (gloo on CPU) filling one teacher cache.

    python tests/ddp_cache_worker.py DATA_ROOT OUT_DIR

Lightning's DDP launcher starts rank 1 by running this same command again. Both ranks create
the cache at the same moment and fill disjoint rows; each saves ``OUT_DIR/rank<r>.pt`` with its
cache counters and what it logged.
"""

from __future__ import annotations

import sys

import torch
from lightning.pytorch import Callback, Trainer, seed_everything

from kdlab import DistillationModule
from kdlab.callbacks import TeacherCache
from kdlab.data import CIFARDataModule
from kdlab.losses import KD
from kdlab.models.cifar import resnet8


class EpochRecord(Callback):
    def __init__(self, cache: TeacherCache) -> None:
        self.cache, self.epochs = cache, []

    def on_train_epoch_end(self, trainer, pl_module):
        self.epochs.append([list(self.cache._epoch_counts)])

    # The module logs the loss terms' epoch means in its own on_train_epoch_end, after this.
    def on_train_epoch_start(self, trainer, pl_module):
        if self.epochs:
            self.epochs[-1].append({k: float(v) for k, v in trainer.callback_metrics.items()})

    on_train_end = on_train_epoch_start


def main(root: str, out: str) -> None:
    torch.set_num_threads(1)
    seed_everything(0)
    module = DistillationModule(
        resnet8(num_classes=10),
        teacher=resnet8(num_classes=10),
        teacher_weights=f"{root}/teacher.safetensors",
        distillers=[KD()],
        ce_weight=0.1,
    )
    data = CIFARDataModule("cifar10", root=root, batch_size=8, views_per_sample=2, seed=11)
    cache = TeacherCache(root=f"{out}/cache")
    record = EpochRecord(cache)
    trainer = Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        max_epochs=3,
        limit_val_batches=0,
        callbacks=[cache, record],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        logger=False,
        default_root_dir=out,
    )
    trainer.fit(module, data)
    result = {"hits": cache.hits, "misses": cache.misses, "directory": str(cache.store.directory)}
    torch.save(result | {"epochs": record.epochs}, f"{out}/rank{trainer.global_rank}.pt")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
