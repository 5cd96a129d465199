"""One training epoch of online KD against one with the teacher-output cache, on the real CIFAR-10.

    python /work/shared/data/prepare_cifar10.py /tmp/cifar10      # once, ~20 s, 450 MB
    python benchmarks/kd_epoch.py --root /tmp/cifar10 [--train-fraction 0.1] [--device cuda]

Times the training epoch (``on_train_epoch_start`` to ``on_train_epoch_end``, no validation) of
``Trainer.fit`` for resnet56 -> resnet20 (``--pair``) KD with ``CIFARDataModule(views_per_sample=K)``:
online (the teacher runs every step), cached (``TeacherCache`` filled upfront), and student-only
(no teacher) for reference; interleaved, ``--repeats`` times, medians. The one-off cost of
filling the cache (K × N teacher forwards, what ``kdlab cache`` does) is reported separately: it
is paid once per teacher and data, for every later run. kdlab issue 8's target: the cached epoch
at least 1.5× faster than the online one. A CPU epoch of all 50,000 images takes long: use
``--train-fraction`` (stated in the output) there. The teacher has random weights (speed only).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
import warnings

import torch
from kd_variants import CLOCK, Setting, kdlab_fit, kdlab_module
from lightning.pytorch import Callback
from lightning.pytorch.utilities import disable_possible_user_warnings

from kdlab.callbacks import TeacherCache
from kdlab.data import CIFARDataModule
from kdlab.tools.cache_fill import fill, plan

logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
warnings.filterwarnings("ignore")
disable_possible_user_warnings()


class EpochClock(Callback):
    """Wall time of the training epoch."""

    def __init__(self, device: str) -> None:
        self.device, self.seconds = device, 0.0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._sync()
        self.start = CLOCK[0]()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._sync()
        self.seconds = CLOCK[0]() - self.start

    def _sync(self) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", required=True, help="prepared CIFAR-10 (holds cifar-10-batches-py)")
    parser.add_argument("--pair", default="resnet56:resnet20", help="teacher:student zoo names")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--train-fraction", type=float, default=1.0, help="fraction of each class")
    parser.add_argument("--views-per-sample", type=int, default=10, help="K views per sample")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved rounds; medians reported")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="32-true")
    parser.add_argument("--cpu-time", action="store_true", help="time epochs by process CPU time")
    return parser.parse_args()


def main() -> None:
    args = parse()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.cpu_time:  # for shared machines, with --threads 1
        CLOCK[0] = time.process_time
    data = CIFARDataModule(
        "cifar10", args.root, batch_size=args.batch_size, train_fraction=args.train_fraction,
        views_per_sample=args.views_per_sample,
    )  # fmt: skip
    data.setup("fit")
    samples = len(data.splits["train"])
    clock = "process CPU time" if args.cpu_time else "wall time"
    print(f"{args.pair}, batch {args.batch_size}, {args.device}, {torch.get_num_threads()} threads, {clock}, "
          f"CIFAR-10 train: {samples} images (train_fraction {args.train_fraction}), "
          f"views_per_sample {args.views_per_sample}")  # fmt: skip
    with tempfile.TemporaryDirectory() as cache_root:
        teacher, student = args.pair.split(":")
        common = (args.batch_size, 1, 1, args.device, args.precision, 10, None, cache_root)
        setting = Setting(teacher, student, *common)
        seconds = fill_cache(setting, data)
        forwards = args.views_per_sample * samples
        print(f"  cache fill (one-off, {forwards} teacher forwards, as kdlab cache does): {seconds:.1f} s")
        median = {v: statistics.median(t) for v, t in run_epochs(setting, data, args.repeats).items()}
    for variant, label in (("online", "online KD"), ("cached", "cached KD"), ("lightning", "student-only")):
        print(f"  {label + ' epoch':<20}{median[variant]:7.1f} s  ({samples / median[variant]:.0f} img/s)")
    print(f"  online / cached epoch time: {median['online'] / median['cached']:.2f}x (target >= 1.5x)")
    print(f"  cached / student-only epoch time: {median['cached'] / median['lightning']:.2f}")


def run_epochs(setting: Setting, data: CIFARDataModule, repeats: int) -> dict[str, list[float]]:
    """Seconds of each variant's training epoch, ``repeats`` interleaved rounds."""
    epochs: dict[str, list[float]] = {"online": [], "cached": [], "lightning": []}
    for _ in range(repeats):
        for variant, times in epochs.items():
            times.append(epoch_seconds(setting, variant, data))
            print(f"    {variant:<9} epoch {times[-1]:7.1f} s", flush=True)
    return epochs


def fill_cache(setting: Setting, data: CIFARDataModule) -> float:
    """Fill the views any run of this data can use (as ``kdlab cache`` does); returns seconds."""
    module = kdlab_module(setting, data, teacher=True).to(setting.device)
    store = TeacherCache(root=setting.cache_root).attach(module, data)
    _, selectors = plan(data, epochs=None, all_views=False)
    start = CLOCK[0]()
    fill(store, module, data, selectors, 256, setting.device)
    return CLOCK[0]() - start


def epoch_seconds(setting: Setting, variant: str, data: CIFARDataModule) -> float:
    clock = EpochClock(setting.device)
    kdlab_fit(setting, variant, data, extra_callbacks=[clock])
    return clock.seconds


if __name__ == "__main__":
    main()
