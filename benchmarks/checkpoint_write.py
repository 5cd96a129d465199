"""Time and peak memory of writing one checkpoint: kdlab's AtomicCheckpointIO against Lightning's
default TorchCheckpointIO.

    PYTHONPATH=. python benchmarks/checkpoint_write.py [--megabytes 400] [--folder DIR] [--repeats 3]

Each writer runs in its own process (so peak resident memory is its own) and saves a checkpoint of
``--megabytes`` of float32 tensors into ``--folder`` (default: a temporary folder; give one on
the disk your checkpoints live on). Lightning's writer serialises the whole checkpoint into
memory first and goes through a temporary file in the system temp folder; kdlab's streams into
a temporary file beside the target and fsyncs it. The fsync is part of kdlab's time (it is what
makes the file durable); Lightning's number has none. Numbers depend on the disk and on what
else runs on the machine; compare the two taken in one run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

_WRITER = """
import json, resource, sys, time, torch
from kdlab.checkpointing import AtomicCheckpointIO
from lightning.pytorch.plugins.io import TorchCheckpointIO
kind, folder, megabytes, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
io = AtomicCheckpointIO() if kind == "kdlab" else TorchCheckpointIO()
count = megabytes * 2**20 // 4 // 64
state = {"state_dict": {f"layer{i}.weight": torch.randn(count) for i in range(64)}, "epoch": 1}
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
times = []
for _ in range(repeats):
    start = time.perf_counter()
    io.save_checkpoint(state, f"{folder}/{kind}.ckpt")
    times.append(time.perf_counter() - start)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": min(times), "extra_peak_mb": (peak - before) / 1024}))
"""


def measure(kind: str, folder: Path, megabytes: int, repeats: int) -> dict[str, float]:
    result = subprocess.run(
        [sys.executable, "-c", _WRITER, kind, str(folder), str(megabytes), str(repeats)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=400)
    parser.add_argument("--folder", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        folder = args.folder or Path(temporary)
        folder.mkdir(parents=True, exist_ok=True)
        rows = {kind: measure(kind, folder, args.megabytes, args.repeats) for kind in ("lightning", "kdlab")}
    print(f"checkpoint of {args.megabytes} MB into {folder} (best of {args.repeats})")
    print(f"{'writer':<12}{'seconds':>10}{'extra peak MB':>16}")
    for kind, row in rows.items():
        print(f"{kind:<12}{row['seconds']:>10.2f}{row['extra_peak_mb']:>16.0f}")
    light, kd = rows["lightning"], rows["kdlab"]
    print(f"kdlab/lightning: time {kd['seconds'] / light['seconds']:.2f}x, ", end="")
    print(f"extra memory {kd['extra_peak_mb'] / max(light['extra_peak_mb'], 1):.2f}x")


if __name__ == "__main__":
    main()
