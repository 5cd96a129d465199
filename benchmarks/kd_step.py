"""Images per second of a distillation step against its parts: is online KD one teacher inference
plus one student step, and does cached KD cost what student-only training costs?

    python benchmarks/kd_step.py --pair resnet56:resnet20 --pair resnet32x4:resnet8x4 \
        --batch-size 64 --batch-size 128 [--device cuda] [--root PREPARED_CIFAR10] [--threads N]

For every pair (teacher:student) and batch size, on the same batches (in-memory random uint8
images of CIFAR shape, or the real CIFAR-10 with ``--root``), the same augmentation and threads:

  (a) student   student-only training in a plain PyTorch loop (augment, forward, CE, backward, SGD)
  (b) teacher   teacher inference alone (eval, inference_mode) on the same augmented batches
  (c) floor     1 / (1/a + 1/b): online KD with nothing but one teacher inference and one student step
  (d) online    kdlab online KD through Lightning (Trainer.fit, DistillationModule, KD, CIFARDataModule)
  (d') fast     (d) with kdlab.callbacks.FastPaths (teacher copy with BatchNorm folded)
  (e) cached    kdlab KD with kdlab.callbacks.TeacherCache, filled upfront for the measured views
  (f) lightning student-only DistillationModule through Lightning (its overhead against (a))

Printed: images/s (median over ``--repeats`` interleaved rounds; wall time, or with
``--cpu-time`` this process's CPU time, which other processes on a shared machine disturb far
less: use it with ``--threads 1`` there), d/c, d'/c, e/a, Lightning's
overhead a/f - 1, and peak memory per variant (CUDA: max_memory_allocated; CPU: in a fresh
process running only that variant, the peak resident memory during the variant above the
resident memory before it, i.e. without the imported libraries). Targets
of kdlab issue 8: d/c >= 0.9, e/a >= 0.9, overhead <= 5%. Compare numbers from one run only.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

import torch
from kd_variants import CLOCK, VARIANTS, Setting, measure

logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
warnings.filterwarnings("ignore")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pair", action="append", help="teacher:student zoo names (repeatable)")
    parser.add_argument("--batch-size", type=int, action="append", help="repeatable (default 64)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps before them")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds; medians reported")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--precision", default="32-true", help="Lightning precision, e.g. bf16-mixed")
    parser.add_argument("--num-classes", type=int, default=100)
    parser.add_argument("--root", help="prepared CIFAR-10 folder (cifar-10-batches-py); default: random")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset")
    parser.add_argument("--no-memory", action="store_true", help="skip the per-variant memory runs")
    parser.add_argument(
        "--cpu-time", action="store_true", help="time by process CPU time (for shared machines, --threads 1)"
    )
    parser.add_argument("--only", help=argparse.SUPPRESS)  # child process: one variant, print memory
    args = parser.parse_args(argv)
    args.pair = args.pair or ["resnet56:resnet20"]
    args.batch_size = args.batch_size or [64]
    args.variants = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(args.variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    return args


def settings(args: argparse.Namespace, cache_root: str) -> list[Setting]:
    common = (args.steps, args.warmup, args.device, args.precision, args.num_classes, args.root, cache_root)
    return [Setting(*pair.split(":"), batch, *common) for pair in args.pair for batch in args.batch_size]


def run_rounds(setting: Setting, variants: list[str], repeats: int) -> dict[str, float]:
    """Median images/s of each variant over ``repeats`` rounds, the order rotated every round."""
    speeds: dict[str, list[float]] = {v: [] for v in variants}
    for round_ in range(repeats):
        order = variants[round_ % len(variants) :] + variants[: round_ % len(variants)]
        for variant in order:
            speeds[variant].append(measure(setting, variant))
    return {v: statistics.median(s) for v, s in speeds.items()}


def peak_memory(setting: Setting, variants: list[str], argv: list[str]) -> dict[str, float]:
    """MiB per variant: CUDA peak allocation in this process, or a child process's peak RSS on CPU."""
    memory = {}
    for variant in variants:
        if setting.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
            measure(setting, variant)
            memory[variant] = torch.cuda.max_memory_allocated() / 2**20
            continue
        command = [sys.executable, __file__, *argv, "--only", variant, "--repeats", "1"]
        command += ["--pair", f"{setting.teacher}:{setting.student}", "--batch-size", str(setting.batch_size)]
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        memory[variant] = json.loads(out.strip().splitlines()[-1])["peak_rss_mib"]
    return memory


def report(setting: Setting, speed: dict[str, float], memory: dict[str, float]) -> None:
    a, b = speed.get("student"), speed.get("teacher")
    floor = 1 / (1 / a + 1 / b) if a and b else None
    print(f"\n{setting.teacher} -> {setting.student}, batch {setting.batch_size}, {setting.device}")
    for variant, value in speed.items():
        extra = f"   peak {memory[variant]:7.0f} MiB" if variant in memory else ""
        print(f"  {VARIANTS[variant]:<44} {value:9.1f} img/s{extra}")
    if floor:
        print(f"  {'(c) floor 1/(1/a + 1/b)':<44} {floor:9.1f} img/s")
    ratios = {
        "online / floor  (d/c, target >= 0.9)": (speed.get("online"), floor),
        "fast / floor    (d'/c)": (speed.get("fast"), floor),
        "cached / student (e/a, target >= 0.9)": (speed.get("cached"), a),
    }
    for label, (top, bottom) in ratios.items():
        if top and bottom:
            print(f"  {label:<44} {top / bottom:9.3f}")
    if a and speed.get("lightning"):
        overhead = 100 * (a / speed["lightning"] - 1)
        print(f"  {'Lightning overhead a/f - 1 (target <= 5%)':<44} {overhead:8.1f} %")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.cpu_time:
        CLOCK[0] = time.process_time
    with tempfile.TemporaryDirectory() as cache_root:
        if args.only:  # a child process measuring memory
            before = _reset_peak_rss()
            measure(settings(args, cache_root)[0], args.only)
            print(json.dumps({"peak_rss_mib": (_peak_rss() - before) / 2**20}))
            return
        clock = "process CPU time" if args.cpu_time else "wall time"
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, {clock}, "
              f"precision {args.precision}, {args.steps} timed steps after {args.warmup}, "
              f"median of {args.repeats} interleaved rounds")  # fmt: skip
        child_argv = _without_lists(argv)
        for setting in settings(args, cache_root):
            start = time.perf_counter()
            speed = run_rounds(setting, args.variants, args.repeats)
            memory = {} if args.no_memory else peak_memory(setting, args.variants, child_argv)
            report(setting, speed, memory)
            print(f"  ({time.perf_counter() - start:.0f} s)")


def _reset_peak_rss() -> int:
    """Reset the process's resident-memory high-water mark (Linux); returns the current RSS in bytes."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return _status_bytes("VmRSS")
    except OSError:  # not Linux: the peak since start, imports included
        return 0


def _peak_rss() -> int:
    try:
        return _status_bytes("VmHWM")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _status_bytes(key: str) -> int:
    with open("/proc/self/status") as handle:
        line = next(line for line in handle if line.startswith(key + ":"))
    return int(line.split()[1]) * 1024


def _without_lists(argv: list[str]) -> list[str]:
    """``argv`` without the repeatable options, which a child process gets one value of."""
    kept, skip = [], False
    for item in argv:
        if skip:
            skip = False
        elif item in ("--pair", "--batch-size", "--repeats"):
            skip = True
        elif not item.startswith(("--pair=", "--batch-size=", "--repeats=")):
            kept.append(item)
    return kept


if __name__ == "__main__":
    main()
