"""The variants that benchmarks/kd_step.py and kd_epoch.py time: plain PyTorch loops and kdlab fits.

Every variant consumes the same batches: a ``CIFARDataModule`` whose DataLoader and on-device
augmentation (``augment_batch``) the plain loops call directly and the Lightning fits use as a
DataModule. A variant returns images per second over its timed steps, each step timed from the
end of the previous one (data, transfer, augmentation and the step itself).
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, Trainer

from kdlab import DistillationModule
from kdlab.callbacks import FastPaths, TeacherCache
from kdlab.data import CIFARDataModule
from kdlab.data.cifar import TensorBatches
from kdlab.losses import KD
from kdlab.models.cifar import ZOO
from kdlab.module import sgd
from kdlab.tools.cache_fill import fill

# Wall time by default; kd_step.py --cpu-time switches to this process's CPU time, which other
# processes on a shared machine disturb far less (meaningful with --threads 1).
CLOCK = [time.perf_counter]

VARIANTS = {
    "student": "(a) student-only, plain PyTorch loop",
    "teacher": "(b) teacher inference alone",
    "online": "(d) kdlab online KD (Lightning)",
    "fast": "(d') kdlab online KD + FastPaths",
    "cached": "(e) kdlab KD, TeacherCache filled",
    "lightning": "(f) student-only through Lightning",
}


@dataclass(frozen=True)
class Setting:
    """One benchmark configuration (see kd_step.py for the options)."""

    teacher: str
    student: str
    batch_size: int
    steps: int
    warmup: int
    device: str
    precision: str
    num_classes: int
    root: str | None
    cache_root: str


def datamodule(setting: Setting, samples: int | None = None) -> CIFARDataModule:
    """Exactly ``warmup + steps`` batches (or ``samples`` images) of random or real CIFAR data."""
    samples = samples or (setting.warmup + setting.steps) * setting.batch_size
    if setting.root:
        per_class = math.ceil(samples / 10)
        return CIFARDataModule(
            "cifar10", setting.root, batch_size=setting.batch_size, samples_per_class=per_class
        )
    dataset = "cifar10" if setting.num_classes == 10 else "cifar100"
    data = CIFARDataModule(dataset, root="unused", batch_size=setting.batch_size)
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (samples, 3, 32, 32), dtype=torch.uint8, generator=generator)
    targets = torch.randint(0, data.num_classes, (samples,), generator=generator)
    split = TensorBatches(images, targets)
    data.splits = {"train": split, "val": split, "test": split}  # setup() keeps existing splits
    return data


def network(name: str, num_classes: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return ZOO[name](num_classes=num_classes)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _autocast(setting: Setting) -> contextlib.AbstractContextManager:
    if setting.precision in ("32-true", "32"):
        return contextlib.nullcontext()
    if setting.precision == "bf16-mixed":
        return torch.autocast(torch.device(setting.device).type, dtype=torch.bfloat16)
    raise ValueError(f"the plain loops support precision 32-true and bf16-mixed, not {setting.precision}")


def _rate(times: list[float], setting: Setting) -> float:
    return setting.steps * setting.batch_size / (times[-1] - times[setting.warmup - 1])


def _batches(setting: Setting, data: CIFARDataModule):
    data.setup("fit")
    for batch in data.train_dataloader():
        batch = [t.to(setting.device, non_blocking=True) for t in batch]
        yield data.augment_batch(batch, epoch=0)


def plain_student(setting: Setting) -> float:
    """(a): forward, cross-entropy, backward and an SGD step, in a plain loop."""
    data = datamodule(setting)
    model = network(setting.student, data.num_classes, seed=1).to(setting.device).train()
    optimizer, times = sgd(model.parameters()), []
    for inputs, targets, _, _ in _batches(setting, data):
        with _autocast(setting):
            loss = F.cross_entropy(model(inputs).float(), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        _sync(setting.device)
        times.append(CLOCK[0]())
    return _rate(times, setting)


def plain_teacher(setting: Setting) -> float:
    """(b): the teacher's forward pass in eval and inference mode."""
    data = datamodule(setting)
    model, times = network(setting.teacher, data.num_classes, seed=0).to(setting.device).eval(), []
    for inputs, *_ in _batches(setting, data):
        with torch.inference_mode(), _autocast(setting):
            model(inputs)
        _sync(setting.device)
        times.append(CLOCK[0]())
    return _rate(times, setting)


class StepClock(Callback):
    """Records the time at the end of every training batch."""

    def __init__(self, device: str) -> None:
        self.device, self.times = device, []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        _sync(self.device)
        self.times.append(CLOCK[0]())


def kdlab_module(setting: Setting, data: CIFARDataModule, teacher: bool) -> DistillationModule:
    student = network(setting.student, data.num_classes, seed=1)
    if not teacher:
        return DistillationModule(student)
    teacher_net = network(setting.teacher, data.num_classes, seed=0)
    return DistillationModule(student, teacher=teacher_net, distillers=[KD(0.9, 4.0)], ce_weight=0.1)


def kdlab_fit(
    setting: Setting, variant: str, data: CIFARDataModule | None = None, extra_callbacks: list | None = None
) -> StepClock:
    """(d), (d'), (e), (f): one epoch of ``Trainer.fit``; returns the step clock."""
    data = data or datamodule(setting)
    module = kdlab_module(setting, data, teacher=variant != "lightning")
    clock = StepClock(setting.device)
    callbacks: list[Callback] = [clock, *(extra_callbacks or [])]
    if variant == "fast":
        callbacks.append(FastPaths())
    if variant == "cached":
        callbacks.append(prefilled_cache(setting, module, data))
    trainer = Trainer(
        accelerator="cuda" if setting.device.startswith("cuda") else "cpu",
        devices=1,
        max_epochs=1,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        precision=setting.precision,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
    )
    trainer.fit(module, data)
    return clock


def prefilled_cache(setting: Setting, module: DistillationModule, data: CIFARDataModule) -> TeacherCache:
    """A TeacherCache holding the teacher's logits for every view that epoch 0 uses."""
    cache = TeacherCache(root=setting.cache_root)
    data.setup("fit")
    store = cache.attach(module.to(setting.device), data)
    fill(store, module, data, [partial(data.train_views, epoch=0)], setting.batch_size, setting.device)
    module.teacher_inference.use_cache(None)
    return cache


def measure(setting: Setting, variant: str) -> float:
    """Images per second of one variant."""
    if variant == "student":
        return plain_student(setting)
    if variant == "teacher":
        return plain_teacher(setting)
    return _rate(kdlab_fit(setting, variant).times, setting)
