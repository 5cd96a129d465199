"""``kdlab suite SUITE.yaml``: configs × seeds, one after another, into a paper-style table.

    kdlab suite experiments/digits/suite.yaml                     # run, then write the table
    kdlab suite experiments/digits/suite.yaml --seeds 0,1 -- --trainer.max_epochs=2
    kdlab suite experiments/cifar100/suite.yaml --slurm           # SLURM array jobs instead
    kdlab suite experiments/digits/suite.yaml --report-only       # table and plots of what finished

Each task (a teacher or a run, with one seed) is ``kdlab fit -c <configs...> <args>
--seed_everything S --trainer.default_root_dir <output>/<name>/seed<S>`` followed by a test
of its best and its last checkpoint, recorded in ``result.json``. Teachers run first and the
runs that name them load their checkpoint. A rerun skips finished tasks and resumes unfinished
ones from their newest checkpoint (``last.ckpt`` or a SLURM ``hpc_ckpt``). By default each
task runs in its own process, so a crash or a memory leak stays there; ``--launcher inprocess``
saves the start-up time. The suite directory gets ``results.csv`` (one row per finished task),
``table.md`` and ``accuracy_vs_params.png`` / ``training_curves.png``. The suite file format
is described in :mod:`kdlab.suite.plan`.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback

from kdlab.errors import KDLabError, find_user_error
from kdlab.suite.plan import Suite, Task, load_suite
from kdlab.suite.run import StderrTee, is_finished, record_failure, run_in_process, run_subprocess
from kdlab.tools import Build


def main(argv: list[str] | None, build: Build) -> int:
    """Entry point of ``kdlab suite``; returns the exit status (1 if some task did not finish).
    ``build`` runs ``kdlab fit`` in this process (see :mod:`kdlab.tools`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    args = _parser().parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    try:
        suite = load_suite(args.suite, args.output, args.seeds)
        if args.task is not None:
            return run_task(suite, suite.task(args.task), extra, build)
    except KDLabError as error:
        print(f"kdlab suite: error: {error}", file=sys.stderr)
        return 2
    if args.slurm:
        from kdlab.suite.slurm import write_slurm

        print(f"kdlab suite: wrote SLURM array jobs; submit them with: bash {write_slurm(suite, extra)}")
        return 0
    if args.dry_run:
        _print_plan(suite, extra)
        return 0
    failed = [] if args.report_only else run_all(suite, extra, build, args.launcher)
    return _report(suite, failed)


def run_all(suite: Suite, extra: list[str], build: Build, launcher: str = "subprocess") -> list[Task]:
    """Run every unfinished task in order; return those that failed."""
    failed = []
    for task in suite.tasks:
        label = f"[{task.index + 1}/{len(suite.tasks)}] {task.name} seed {task.seed}"
        if is_finished(task):
            print(f"{label}: finished earlier, skipped", flush=True)
            continue
        print(f"{label}: running in {task.run_dir}", flush=True)
        if launcher == "subprocess":
            ok = run_subprocess(task, suite, extra)
        else:
            ok = run_task(suite, task, extra, build) == 0
        if not ok:
            failed.append(task)
            print(f"{label}: FAILED, see {task.run_dir}/error.txt and suite.log", flush=True)
    return failed


def run_task(suite: Suite, task: Task, extra: list[str], build: Build) -> int:
    """Run one task here (the body of a subprocess or SLURM array task); 0 when it finished."""
    if is_finished(task):
        print(f"kdlab suite: {task.name} seed {task.seed} finished earlier; nothing to do")
        return 0
    try:
        with StderrTee() as printed:
            result = run_in_process(task, suite, extra, build)
    except (Exception, SystemExit) as error:  # the parser exits on a bad command line
        record_failure(task, error, printed.text)
        known = find_user_error(error) if isinstance(error, Exception) else None
        if known is None or os.environ.get("KDLAB_TRACEBACK"):
            traceback.print_exc()
        reason = known or ("rejected command line, see above" if isinstance(error, SystemExit) else error)
        print(f"kdlab suite: {task.name} seed {task.seed} failed: {reason}", file=sys.stderr)
        return 1
    best, last = result["best_acc1"], result["last_acc1"]
    print(f"kdlab suite: {task.name} seed {task.seed}: test acc1 best {best:.4f}, last {last:.4f}")
    return 0


def _report(suite: Suite, failed: list[Task]) -> int:
    from kdlab.suite.report import write_report

    paths = write_report(suite)
    print(paths["table"].read_text())
    print("kdlab suite: wrote " + ", ".join(str(p) for p in paths.values()))
    unfinished = [t for t in suite.tasks if not is_finished(t)]
    if failed or unfinished:
        print(f"kdlab suite: {len(unfinished)} task(s) not finished; rerun the same command to resume them")
        return 1
    return 0


def _print_plan(suite: Suite, extra: list[str]) -> None:
    from kdlab.suite.run import fit_arguments

    for task in suite.tasks:
        state = "finished" if is_finished(task) else "to run"
        print(f"# {task.index}: {task.role} {task.name} seed {task.seed} ({state})")
        print("kdlab fit " + " ".join(fit_arguments(task, suite, extra)))


def _seeds(text: str) -> list[int]:
    try:
        return [int(s) for s in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds must be integers like 0,1,2; got '{text}'") from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kdlab suite",
        description="Run a suite's configs × seeds and write results.csv, table.md and plots. "
        "Arguments after `--` are appended to every run's `kdlab fit` command line.",
    )
    parser.add_argument(
        "suite", help="the suite file (YAML: name, output, seeds, args, teachers, runs, slurm)"
    )
    parser.add_argument(
        "--output", help="suite directory (default: the file's `output`, else runs/suites/<name>)"
    )
    parser.add_argument("--seeds", type=_seeds, help="seeds to run, e.g. 0,1,2 (default: the file's)")
    parser.add_argument(
        "--launcher",
        choices=("subprocess", "inprocess"),
        default="subprocess",
        help="run each task in a fresh process (isolates failures and memory) or in this one",
    )
    parser.add_argument("--slurm", action="store_true", help="write SLURM array jobs instead of running")
    parser.add_argument("--report-only", action="store_true", help="only write the table and plots")
    parser.add_argument("--dry-run", action="store_true", help="print each task's kdlab fit command")
    parser.add_argument(
        "--task", type=int, help="run only task N of the plan (used by SLURM and subprocesses)"
    )
    return parser
