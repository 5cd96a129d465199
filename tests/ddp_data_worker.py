"""Run by tests/test_data_ddp.py: a 2-process DDP fit (gloo on CPU) that records every batch.

    python tests/ddp_data_worker.py DATA_ROOT OUT_DIR

Lightning's DDP launcher starts rank 1 by running this same command again. Each rank saves
``OUT_DIR/rank<r>.pt`` with the sampler it was given and every batch it saw.
"""

from __future__ import annotations

import sys

import torch
from lightning.pytorch import LightningModule, Trainer

from kdlab.data import CIFARDataModule


class Recorder(LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(3 * 32 * 32, 10)
        self.train_batches: list[tuple] = []
        self.val_batches: list[tuple] = []

    def training_step(self, batch, batch_idx):
        images, targets, indices, views = batch
        self.train_batches.append((self.current_epoch, targets, indices, views, images.sum((1, 2, 3))))
        return torch.nn.functional.cross_entropy(self.fc(images.flatten(1)), targets)

    def validation_step(self, batch, batch_idx):
        self.val_batches.append((self.current_epoch, batch[1], batch[2]))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def main(root: str, out: str) -> None:
    torch.set_num_threads(1)
    dm = CIFARDataModule("cifar10", root=root, batch_size=8, val_fraction=0.2, seed=11)
    model = Recorder()
    trainer = Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        max_epochs=2,
        num_sanity_val_steps=0,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        logger=False,
        default_root_dir=out,
    )
    trainer.fit(model, dm)
    sampler = trainer.train_dataloader.sampler
    record = {
        "sampler": type(sampler).__name__,
        "num_replicas": sampler.num_replicas,
        "rank": sampler.rank,
        "train": model.train_batches,
        "val": model.val_batches,
        "train_targets": dm.splits["train"].targets,
        "val_targets": dm.splits["val"].targets,
    }
    torch.save(record, f"{out}/rank{trainer.global_rank}.pt")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
