"""Compression numbers of the CRD benchmark's CIFAR-100 teacher→student pairs.

    PYTHONPATH=. python benchmarks/zoo_compression.py [--repeats 20] [--device cpu|cuda]

Prints parameters, FLOPs per 32×32 image (2 per multiply-add), safetensors bytes and median
single-image latency of each network, and the student/teacher ratios. Latencies are only
comparable when taken on an otherwise idle machine.
"""

from __future__ import annotations

import argparse

import torch
from rich.console import Console
from rich.table import Table

from kdlab.models.cifar import ZOO
from kdlab.models.profile import count_flops, count_parameters, latency_per_image, serialized_bytes

# The pairs of the CRD benchmark's tables (same-family, then cross-family).
PAIRS = [
    ("wrn_40_2", "wrn_16_2"),
    ("wrn_40_2", "wrn_40_1"),
    ("resnet56", "resnet20"),
    ("resnet110", "resnet20"),
    ("resnet110", "resnet32"),
    ("resnet32x4", "resnet8x4"),
    ("vgg13", "vgg8"),
    ("vgg13", "mobilenetv2"),
    ("resnet50", "mobilenetv2"),
    ("resnet50", "vgg8"),
    ("resnet32x4", "shufflev1"),
    ("resnet32x4", "shufflev2"),
    ("wrn_40_2", "shufflev1"),
]
SHAPE = (3, 32, 32)


def measure(name: str, device: str, repeats: int) -> dict[str, float]:
    model = ZOO[name](num_classes=100)
    return {
        "params": count_parameters(model),
        "flops": count_flops(model, SHAPE),
        "bytes": serialized_bytes(model),
        "ms": 1e3 * latency_per_image(model, SHAPE, device, warmup=max(1, repeats // 5), repeats=repeats),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=20, help="timed forward passes per network")
    parser.add_argument("--device", default="cpu", help="where to time the forward passes")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    numbers = {
        name: measure(name, args.device, args.repeats) for name in sorted({n for pair in PAIRS for n in pair})
    }
    table = Table(title=f"CRD CIFAR-100 pairs: student / teacher ({args.device}, batch 1)")
    for column in ("teacher → student", "params", "MFLOPs", "MB", f"{args.device} ms", "ratio p/f/b/ms"):
        table.add_column(column, justify="right")
    for teacher, student in PAIRS:
        t, s = numbers[teacher], numbers[student]
        table.add_row(
            f"{teacher} → {student}",
            f"{t['params']:,} → {s['params']:,}",
            f"{t['flops'] / 1e6:,.0f} → {s['flops'] / 1e6:,.0f}",
            f"{t['bytes'] / 1e6:.1f} → {s['bytes'] / 1e6:.1f}",
            f"{t['ms']:.2f} → {s['ms']:.2f}",
            " / ".join(f"{s[k] / t[k]:.2f}" for k in ("params", "flops", "bytes", "ms")),
        )
    Console(width=160).print(table)


if __name__ == "__main__":
    main()
