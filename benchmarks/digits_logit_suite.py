"""The logit-distillation family on the bundled digits, through the kdlab CLI.

Runs ``kdlab fit`` then ``kdlab test`` (on the best-validation checkpoint) for vanilla, KD, DKD,
DIST and KD+CTKD over several seeds, and prints a table of test top-1 (mean ± std over seeds).
The commands are printed as shell commands and executed in this one process through
``kdlab.cli.main`` (the function behind the ``kdlab`` console script), which saves a Python and
Lightning start-up per command. The teacher is trained first when its checkpoint is missing.

    python benchmarks/digits_logit_suite.py [--epochs 30] [--seeds 0 1 2] [--methods vanilla kd ...]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import glob
import io
import logging
import os
import shlex
import shutil
import statistics
import sys
import time
import warnings
from pathlib import Path

TEACHER = Path("runs/digits/teacher/checkpoints/best.ckpt")
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def run(argv: list[str]) -> None:
    from kdlab.cli import main

    print("kdlab " + shlex.join(argv), flush=True)
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        main(argv)


def test_acc1(root: Path) -> float | None:
    """The last test/acc1 logged under ``root`` (the CSV logger of ``kdlab test``)."""
    tested = []
    for path in sorted(glob.glob(f"{root}/logs/version_*/metrics.csv")):
        with open(path) as handle:
            tested += [float(row["test/acc1"]) for row in csv.DictReader(handle) if row.get("test/acc1")]
    return tested[-1] if tested else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=["vanilla", "kd", "dkd", "dist", "ctkd"])
    parser.add_argument("--out", default="runs/digits_logit_suite")
    args = parser.parse_args()
    os.chdir(Path(__file__).resolve().parents[1])
    import torch

    import kdlab.cli  # noqa: F401  (imports Lightning, which sets its loggers' levels)

    torch.set_num_threads(1)  # tiny models: extra threads only contend for the cores
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    if not TEACHER.is_file():
        run(["fit", "-c", "experiments/digits/teacher.yaml", *QUIET])
    start, cpu = time.perf_counter(), time.process_time()
    scores: dict[str, list[float]] = {}
    for method in args.methods:
        for seed in args.seeds:
            root = Path(args.out) / method / f"seed{seed}"
            shutil.rmtree(root, ignore_errors=True)
            common = ["-c", f"experiments/digits/{method}.yaml", "--seed_everything", str(seed)]
            common += ["--trainer.default_root_dir", str(root), *QUIET]
            run(["fit", *common, "--trainer.max_epochs", str(args.epochs)])
            run(["test", *common, "--ckpt_path", str(root / "checkpoints" / "best.ckpt")])
            scores.setdefault(method, []).append(test_acc1(root))
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    print(f"\n{args.epochs} epochs, seeds {args.seeds}: {wall:.0f} s wall, {cpu:.0f} s CPU\n")
    print("| method | test acc1 % (mean ± std) | per seed |\n|---|---|---|")
    for method, values in scores.items():
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        cells = ", ".join(f"{100 * v:.2f}" for v in values)
        print(f"| {method} | {100 * statistics.mean(values):.2f} ± {100 * spread:.2f} | {cells} |")


if __name__ == "__main__":
    sys.exit(main())
