"""A whole CIFAR-10 distillation run through ``kdlab fit`` against the plain PyTorch loop a researcher
would otherwise write: wall time and final test accuracy of each phase.

    python /work/shared/data/prepare_cifar10.py /tmp/cifar10          # once, ~30 s, 450 MB
    python benchmarks/end_to_end.py --root /tmp/cifar10               # 10 epochs, 2 seeds: hours on 2 CPUs
    python benchmarks/end_to_end.py --root /tmp/cifar10 --epochs 1 --train-fraction 0.1 --seeds 0   # minutes

The recipe is ``experiments/cifar10/base.yaml``: 10 epochs, batch 128, SGD with Nesterov momentum
0.9 and weight decay 5e-4, a one-cycle learning rate peaking at 0.1 stepped per optimizer step,
random crop (padding 4) + flip, validation on the test split after every epoch. Phases, per seed:

  teacher   resnet20 trained alone             (experiments/cifar10/teacher.yaml)
  vanilla   resnet8 trained alone              (experiments/cifar10/vanilla.yaml)
  kd        resnet8 from that seed's resnet20: 0.1 CE + 0.9 KD at T 4
            (experiments/cifar10/resnet20-resnet8.yaml + experiments/method/kd.yaml)

Each phase runs twice, interleaved (the order alternates between seeds): once as the plain loop in
this file (:func:`plain_run`, in-memory uint8 tensors, its own batched crop + flip, the networks
of ``kdlab.models.cifar``), once as ``kdlab fit`` with the YAML files above, as a user runs them
(progress bar, checkpoints, CSV logs). Each framework's KD student learns from the teacher that
framework trained. Both are timed as whole processes (start-up, data loading, validation and
checkpoints included); images/s is epochs × training images / wall seconds. Printed per phase:
wall time, images/s, final test accuracy (last epoch), and kdlab/plain ratios; then means over
seeds and the KD gain over the vanilla student. ``--out`` keeps every run, ``results.json`` and
``report.txt``; a rerun with the same ``--out`` reuses the runs that finished (``seconds.txt``).

kdlab's defaults include ``kdlab.callbacks.FastPaths`` (channels-last on the CPU, BatchNorm folded
into the teacher's inference copy), which the minimal plain loop does not have;
``--plain-channels-last`` gives the plain loop channels-last networks too, so that the ratio
shows what the framework itself costs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PHASES = ("teacher", "vanilla", "kd")
CONFIGS = {
    "teacher": ["experiments/cifar10/teacher.yaml"],
    "vanilla": ["experiments/cifar10/vanilla.yaml"],
    "kd": ["experiments/cifar10/resnet20-resnet8.yaml", "experiments/method/kd.yaml"],
}
NETWORK = {"teacher": "resnet20", "vanilla": "resnet8", "kd": "resnet8"}
MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


# ----------------------------------------------------------------------------- the plain loop
def plain_run(args: argparse.Namespace) -> None:
    """The recipe as a plain PyTorch loop; writes ``result.json`` (test accuracy per epoch)."""
    import torch
    import torch.nn.functional as F
    from safetensors.torch import load_file, save_file

    from kdlab.data.cifar_files import read_split
    from kdlab.models import cifar

    torch.manual_seed(args.seed)
    root, out, device = Path(args.root), Path(args.run_dir), torch.device(args.device)
    train_x, train_y = read_split(root, "cifar10", "train", False)
    test_x, test_y = read_split(root, "cifar10", "test", False)
    keep = per_class_subset(train_y, args.train_fraction, args.seed)
    train_x, train_y = train_x[keep].to(device), train_y[keep].to(device)
    test_x, test_y = test_x.to(device), test_y.to(device)
    padded = F.pad(train_x, (4, 4, 4, 4))  # (N, 3, 40, 40): crops are windows of it
    mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1) * 255
    std = torch.tensor(STD, device=device).view(1, 3, 1, 1) * 255
    generator = torch.Generator().manual_seed(args.seed)

    model = getattr(cifar, NETWORK[args.phase])(num_classes=10)
    teacher = None
    if args.phase == "kd":
        teacher = cifar.resnet20(num_classes=10)
        teacher.load_state_dict(load_file(args.teacher))
        teacher.eval()
    model.to(device)
    if teacher is not None:
        teacher.to(device)
    if args.plain_channels_last:
        model.to(memory_format=torch.channels_last)
        if teacher is not None:
            teacher.to(memory_format=torch.channels_last)
    steps_per_epoch = -(-len(train_y) // args.batch_size)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=0.1, total_steps=args.epochs * steps_per_epoch, cycle_momentum=False
    )
    accuracies = []
    for _ in range(args.epochs):
        model.train()
        order = torch.randperm(len(train_y), generator=generator).to(device)
        for batch in order.split(args.batch_size):
            inputs = (crop_flip(padded, batch, generator).float() - mean) / std
            targets = train_y[batch]
            logits = model(inputs)
            loss = F.cross_entropy(logits, targets)
            if teacher is not None:
                with torch.inference_mode():
                    teacher_logits = teacher(inputs)
                loss = 0.1 * loss + 0.9 * kd_loss(logits, teacher_logits.clone(), 4.0)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        accuracies.append(evaluate(model, test_x, test_y, mean, std, args.batch_size))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "model.safetensors"))
    (out / "result.json").write_text(json.dumps({"test_acc1": accuracies, "train_images": len(train_y)}))


def per_class_subset(labels, fraction: float, seed: int):
    """Positions of a seeded ``fraction`` of each class."""
    import torch

    if fraction >= 1:
        return torch.arange(len(labels))
    generator = torch.Generator().manual_seed(seed)
    keep = []
    for label in labels.unique():
        rows = (labels == label).nonzero().flatten()
        keep.append(
            rows[torch.randperm(len(rows), generator=generator)[: max(1, round(fraction * len(rows)))]]
        )
    return torch.cat(keep).sort().values


def crop_flip(padded, batch, generator):
    """Random 32×32 crops of the padded images ``batch``, each flipped horizontally with p=0.5."""
    import torch

    n, device = len(batch), padded.device
    top, left = torch.randint(0, 9, (2, n), generator=generator).to(device)
    flip = (torch.rand(n, generator=generator) < 0.5).to(device)
    steps = torch.arange(32, device=device)
    columns = torch.where(flip[:, None], 31 - steps, steps) + left[:, None]
    pixels = ((top[:, None] + steps)[:, :, None] * 40 + columns[:, None, :]).view(n, 1, 1024)
    images = padded.index_select(0, batch).view(n, 3, 1600)
    return images.gather(2, pixels.expand(n, 3, 1024)).view(n, 3, 32, 32)


def kd_loss(student_logits, teacher_logits, temperature: float):
    """Hinton et al. (2015): T² · KL(teacher ‖ student) of the softened distributions, batch mean."""
    import torch.nn.functional as F

    log_p = F.log_softmax(student_logits / temperature, dim=1)
    log_q = F.log_softmax(teacher_logits / temperature, dim=1)
    return F.kl_div(log_p, log_q, reduction="batchmean", log_target=True) * temperature**2


def evaluate(model, images, labels, mean, std, batch_size: int) -> float:
    import torch

    model.eval()
    correct = 0
    with torch.inference_mode():
        for start in range(0, len(labels), batch_size):
            inputs = (images[start : start + batch_size].float() - mean) / std
            correct += int((model(inputs).argmax(1) == labels[start : start + batch_size]).sum())
    return correct / len(labels)


# ----------------------------------------------------------------------------- the two runs
def run_plain(args: argparse.Namespace, phase: str, seed: int, run_dir: Path) -> tuple[float, float]:
    """Wall seconds and final test accuracy of the plain loop (its own process)."""
    command = [sys.executable, __file__, "--plain", "--phase", phase, "--seed", str(seed)]
    command += [
        "--root",
        args.root,
        "--epochs",
        str(args.epochs),
        "--train-fraction",
        str(args.train_fraction),
    ]
    command += ["--batch-size", "128", "--run-dir", str(run_dir)]
    command += ["--plain-channels-last"] if args.plain_channels_last else []
    command += ["--device", args.device]
    if phase == "kd":
        command += ["--teacher", str(run_dir.parent / "teacher" / "model.safetensors")]
    seconds = timed(command, run_dir)
    result = json.loads((run_dir / "result.json").read_text())
    args.train_images = result["train_images"]  # the same per-class subset size as kdlab's
    return seconds, result["test_acc1"][-1]


def run_kdlab(args: argparse.Namespace, phase: str, seed: int, run_dir: Path) -> tuple[float, float]:
    """Wall seconds and final test accuracy of ``kdlab fit`` with the recipe's YAML files."""
    kdlab = Path(sys.executable).with_name("kdlab")
    command = [str(kdlab), "fit", "-c", "experiments/cifar10/base.yaml"]
    command += [argument for config in CONFIGS[phase] for argument in ("-c", config)]
    command += [
        f"--seed_everything={seed}",
        f"--data.init_args.seed={seed}",
        f"--data.init_args.root={args.root}",
        f"--data.init_args.train_fraction={args.train_fraction}",
        f"--trainer.max_epochs={args.epochs}",
        f"--trainer.default_root_dir={run_dir}",
        f"--trainer.accelerator={'cpu' if args.device == 'cpu' else 'gpu'}",
        "--trainer.devices=1",
    ]
    if phase == "kd":
        teacher = run_dir.parent / "teacher" / "checkpoints" / "last.ckpt"
        command.append(f"--model.init_args.teacher_weights={teacher}")
    seconds = timed(command, run_dir)
    return seconds, last_logged(run_dir, "val/acc1")


def timed(command: list[str], run_dir: Path) -> float:
    """Wall seconds of ``command``; a run finished earlier (``seconds.txt``) is not repeated."""
    done_file = run_dir / "seconds.txt"
    if done_file.is_file():
        return float(done_file.read_text())
    shutil.rmtree(run_dir, ignore_errors=True)  # an interrupted attempt starts over
    run_dir.mkdir(parents=True)
    start = time.perf_counter()
    with open(run_dir / "output.log", "w") as log:
        done = subprocess.run(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=os.environ)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(command)}\nsee {run_dir / 'output.log'}")
    done_file.write_text(f"{seconds}\n")
    return seconds


def last_logged(run_dir: Path, key: str) -> float:
    import csv

    with open(run_dir / "logs" / "version_0" / "metrics.csv") as file:
        rows = list(csv.DictReader(file))
    return float([row[key] for row in rows if row.get(key)][-1])


# ----------------------------------------------------------------------------- report
def report(results: list[dict], args: argparse.Namespace, samples: int) -> str:
    lines = [
        f"CIFAR-10 on {args.device}, {args.epochs} epoch(s), train fraction {args.train_fraction} "
        f"({samples} images), seeds {args.seeds}, torch threads {args.threads or 'default'}, plain loop "
        f"{'channels-last' if args.plain_channels_last else 'contiguous (minimal)'}",
        f"{'phase':<8} {'seed':>4} | {'plain s':>8} {'kdlab s':>8} | {'plain im/s':>10} {'kdlab im/s':>10} "
        f"{'ratio':>6} | {'plain acc':>9} {'kdlab acc':>9} {'diff':>6}",
    ]
    for r in results:
        lines.append(
            f"{r['phase']:<8} {r['seed']:>4} | {r['plain_s']:8.1f} {r['kdlab_s']:8.1f} | "
            f"{r['plain_ips']:10.1f} {r['kdlab_ips']:10.1f} {r['kdlab_ips'] / r['plain_ips']:6.3f} | "
            f"{100 * r['plain_acc']:9.2f} {100 * r['kdlab_acc']:9.2f} "
            f"{100 * (r['kdlab_acc'] - r['plain_acc']):+6.2f}"
        )
    lines.append("means over seeds:")
    means = {}
    for phase in PHASES:
        rows = [r for r in results if r["phase"] == phase]
        if not rows:
            continue
        m = {k: statistics.mean(r[k] for r in rows) for k in ("plain_s", "kdlab_s", "plain_acc", "kdlab_acc")}
        means[phase] = m
        lines.append(
            f"{phase:<8}      | {m['plain_s']:8.1f} {m['kdlab_s']:8.1f} | throughput kdlab/plain "
            f"{m['plain_s'] / m['kdlab_s']:.3f} | {100 * m['plain_acc']:9.2f} {100 * m['kdlab_acc']:9.2f} "
            f"{100 * (m['kdlab_acc'] - m['plain_acc']):+6.2f}"
        )
    if "kd" in means and "vanilla" in means:
        gains = {
            w: 100 * (means["kd"][f"{w}_acc"] - means["vanilla"][f"{w}_acc"]) for w in ("plain", "kdlab")
        }
        lines.append(f"KD gain over vanilla: plain {gains['plain']:+.2f}, kdlab {gains['kdlab']:+.2f} points")
    return "\n".join(lines)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", required=True, help="prepared CIFAR-10 (holds cifar-10-batches-py)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--train-fraction", type=float, default=1.0, help="of each class (seeded)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--phases", default=",".join(PHASES), help="comma-separated subset, in order")
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS for both (default: torch's choice)")
    parser.add_argument("--out", default="runs/end_to_end", help="run folders and results.json")
    parser.add_argument("--plain-channels-last", action="store_true", help="channels-last plain loop too")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (both run on it)")
    # the plain loop's own process
    parser.add_argument("--plain", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--phase", choices=PHASES, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", type=int, default=128, help=argparse.SUPPRESS)
    parser.add_argument("--run-dir", help=argparse.SUPPRESS)
    parser.add_argument("--teacher", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.plain:
        return plain_run(args)
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    args.root = str(Path(args.root).resolve())
    phases = [p for p in args.phases.split(",") if p]
    out, results = Path(args.out).resolve(), []
    for seed in args.seeds:
        for phase in phases:
            runners = {"plain": run_plain, "kdlab": run_kdlab}
            order = ["plain", "kdlab"] if seed % 2 == 0 else ["kdlab", "plain"]
            row = {"phase": phase, "seed": seed}
            for name in order:
                seconds, accuracy = runners[name](args, phase, seed, out / name / f"seed{seed}" / phase)
                row |= {f"{name}_s": seconds, f"{name}_acc": accuracy}
                print(
                    f"  {phase} seed {seed} {name}: {seconds:.1f} s, test acc1 {100 * accuracy:.2f}",
                    flush=True,
                )
            results.append(row)
    samples = args.train_images
    for row in results:
        row["plain_ips"] = args.epochs * samples / row["plain_s"]
        row["kdlab_ips"] = args.epochs * samples / row["kdlab_s"]
    text = report(results, args, samples)
    print(text)
    (out / "results.json").write_text(json.dumps({"args": vars(args), "results": results}, indent=1))
    (out / "report.txt").write_text(text + "\n")


if __name__ == "__main__":
    main()
