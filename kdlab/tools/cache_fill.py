"""``kdlab cache``: fill a run's teacher-output cache upfront, so that training never runs the teacher.

    kdlab cache -c CONFIG.yaml [fit overrides ...] [--epochs N | --all-views] [--device cuda]

The config is the one ``kdlab fit`` takes; it must list ``kdlab.callbacks.TeacherCache`` under
``trainer.callbacks`` (its ``root`` says where the cache lives). What is filled:

- with ``data.views_per_sample=K``: the first K views of every sample, i.e. every view any run
  with this teacher and data can ask for, whatever its seed (K × N teacher forwards);
- otherwise the views that epochs ``0..N-1`` of this config's seed use, N being ``--epochs``
  or ``trainer.max_epochs``; ``--all-views`` fills all 162 views of every sample.

Rows already in the cache are skipped, so an interrupted fill resumes where it stopped, and
several fills (or a fill and training runs) can share a cache at the same time.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from functools import partial

import torch
from lightning.pytorch import LightningDataModule
from torch import Tensor

from kdlab.callbacks.cache_store import OutputStore
from kdlab.callbacks.fast_paths import FastPaths
from kdlab.callbacks.teacher_cache import TeacherCache
from kdlab.data.augment import NUM_VIEWS
from kdlab.data.view_order import view_ranks, views_at_ranks
from kdlab.errors import ConfigurationError, find_user_error
from kdlab.module import DistillationModule
from kdlab.tools import Build

ViewSelector = Callable[[Tensor], Tensor]  # sample indices -> the view of each to fill


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kdlab cache",
        description="Fill the teacher-output cache of a kdlab fit config upfront.",
        epilog="Every other argument is passed on as in `kdlab fit`: -c CONFIG.yaml, --data.root DIR, ...",
    )
    parser.add_argument("--epochs", type=int, help="fill the views that epochs 0..N-1 use")
    parser.add_argument("--all-views", action="store_true", help=f"fill all {NUM_VIEWS} views of each sample")
    parser.add_argument("--device", default="cpu", help="where the teacher runs (cpu, cuda, cuda:1, ...)")
    parser.add_argument("--batch-size", type=int, default=256, help="teacher batch size")
    return parser


def main(argv: list[str] | None, build: Build) -> int:
    """Entry point of ``kdlab cache`` (``build``: see :mod:`kdlab.tools`)."""
    args, rest = _parser().parse_known_args(sys.argv[1:] if argv is None else argv)
    try:
        return run(args, rest, build)
    except Exception as error:
        known = find_user_error(error)
        if known is None or os.environ.get("KDLAB_TRACEBACK"):
            raise
        sys.stderr.write(f"kdlab cache: error: {known}\n")
        return 2


def run(args: argparse.Namespace, fit_args: list[str], build: Build) -> int:
    cli = build(fit_args, False)  # the config is read exactly as `kdlab fit` reads it
    callbacks = cli.trainer.callbacks
    cache = next((c for c in callbacks if isinstance(c, TeacherCache)), None)
    if cache is None:
        raise ConfigurationError(
            "this config has no teacher cache: add {class_path: kdlab.callbacks.TeacherCache} "
            "to trainer.callbacks (its root says where the cache is stored)."
        )
    module, data = cli.model.to(args.device), cli.datamodule
    data.setup("fit")
    store = cache.attach(module, data)
    fast = next((c for c in callbacks if isinstance(c, FastPaths)), None)
    if fast is not None:  # the same fast teacher as training would use
        example = data.render_train(torch.arange(2), torch.zeros(2, dtype=torch.int64), args.device)
        module.teacher_inference.use_runner(fast.build_teacher(module.teacher, example).__call__)
    label, selectors = plan(data, args.epochs, args.all_views, default_epochs=cli.trainer.max_epochs)
    print(f"kdlab cache: {store.directory}\n  filling {label}: {len(selectors)} × {store.samples} rows")
    start = time.perf_counter()
    computed, present = fill(store, module, data, selectors, args.batch_size, args.device)
    seconds = time.perf_counter() - start
    on_disk = sum(p.stat().st_blocks * 512 for p in store.directory.iterdir())
    print(
        f"  {computed} rows computed ({computed / max(seconds, 1e-9):.0f}/s), {present} already there; "
        f"{store.count_filled()} rows in the cache, {on_disk / 2**20:.1f} MiB on disk"
    )
    return 0


def plan(
    data: LightningDataModule, epochs: int | None, all_views: bool, default_epochs: int | None = None
) -> tuple[str, list[ViewSelector]]:
    """What to fill: a description and one view selector per pass over the training set."""
    per_sample = getattr(data, "views_per_sample", None)
    if all_views or (per_sample is not None and epochs is None):
        count = NUM_VIEWS if all_views else per_sample
        return f"the first {count} views of each sample", [partial(_at_rank, rank=r) for r in range(count)]
    epochs = default_epochs if epochs is None else epochs
    if epochs is None or epochs < 1:
        raise ConfigurationError("say how many epochs to fill: --epochs N, or --all-views")
    return f"the views of epochs 0..{epochs - 1}", [partial(data.train_views, epoch=e) for e in range(epochs)]


def _at_rank(indices: Tensor, rank: int) -> Tensor:
    return views_at_ranks(indices, torch.full_like(indices, rank))


@torch.no_grad()
def fill(
    store: OutputStore,
    module: DistillationModule,
    data: LightningDataModule,
    selectors: list[ViewSelector],
    batch_size: int,
    device: str,
) -> tuple[int, int]:
    """Compute and store every selected row not in ``store`` yet; returns (computed, already there)."""
    computed = present = 0
    for selector in selectors:
        for indices in torch.arange(store.samples).split(batch_size):
            views = selector(indices)
            ranks = view_ranks(indices, views)
            missing = (~store.read(ranks, indices)[1]).nonzero().flatten()
            if len(missing):
                inputs = data.render_train(indices[missing], views[missing], device)
                store.write(ranks[missing], indices[missing], module.teacher_logits(inputs))
            computed, present = computed + len(missing), present + len(indices) - len(missing)
    return computed, present
