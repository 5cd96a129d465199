"""``kdlab suite --slurm``: SLURM array jobs instead of running the suite here.

One array task per (config, seed), i.e. per task of the plan: the teachers' array first, the
students' array once it succeeded (``--dependency=afterok``), then a job that writes the table.
Each task runs ``kdlab suite SUITE --task N``, which resumes an interrupted run, so the tasks
can be requeued: ``--signal=SIGUSR1@90`` makes Lightning save an HPC checkpoint and requeue
the task 90 s before its time limit (``--requeue``, ``--open-mode=append`` keeps one log).
"""

from __future__ import annotations

import shlex
from pathlib import Path

from kdlab.suite.plan import Suite

# Options every array gets; the suite file's `slurm.options` add to or override them.
DEFAULTS = {
    "nodes": 1,
    "ntasks-per-node": 1,  # one process per device: keep equal to trainer.devices
    "cpus-per-task": 8,
    "open-mode": "append",
    "signal": "SIGUSR1@90",
}


def write_slurm(suite: Suite, extra: list[str], command: str = "kdlab") -> Path:
    """Write ``<output>/slurm/{teachers,runs}.sbatch`` and ``submit.sh``; return ``submit.sh``.

    Args:
        suite: The loaded suite.
        extra: Arguments appended to every run (after ``--``).
        command: How the cluster calls kdlab (``slurm.command`` in the suite file).
    """
    folder = suite.output / "slurm"
    (folder / "logs").mkdir(parents=True, exist_ok=True)
    command = str(suite.slurm.get("command", command))
    teachers = [t.index for t in suite.tasks if t.role == "teacher"]
    runs = [t.index for t in suite.tasks if t.role == "run"]
    scripts = {}
    for stage, indices in (("teachers", teachers), ("runs", runs)):
        if indices:
            scripts[stage] = folder / f"{stage}.sbatch"
            scripts[stage].write_text(_array_script(suite, stage, indices, extra, command))
    submit = folder / "submit.sh"
    submit.write_text(_submit_script(suite, scripts, command))
    submit.chmod(0o755)
    return submit


def _array_script(suite: Suite, stage: str, indices: list[int], extra: list[str], command: str) -> str:
    options = {**DEFAULTS, **{str(k): v for k, v in (suite.slurm.get("options") or {}).items()}}
    options["job-name"] = f"{suite.name}-{stage}"
    options["array"] = f"{indices[0]}-{indices[-1]}"
    options["output"] = str(suite.output.resolve() / "slurm" / "logs" / "%x_%A_%a.out")
    lines = ["#!/bin/bash", f"# {stage} of suite {suite.path}: one array task per (config, seed)."]
    lines += [f"#SBATCH --{key}={value}" for key, value in options.items()]
    lines.append("#SBATCH --requeue")
    lines += ["set -euo pipefail", f"cd {shlex.quote(str(Path.cwd()))}"]
    lines += [str(line) for line in suite.slurm.get("setup", [])]
    run = [*shlex.split(command), "suite", str(suite.path), f"--output={suite.output}"]
    run += [f"--seeds={','.join(map(str, suite.seeds))}", "--task=${SLURM_ARRAY_TASK_ID}", "--", *extra]
    # srun makes Lightning see the SLURM environment (ranks, requeue on SIGUSR1).
    lines.append("srun " + " ".join(a if a.startswith("--task=") else shlex.quote(a) for a in run))
    return "\n".join(lines) + "\n"


def _submit_script(suite: Suite, scripts: dict[str, Path], command: str) -> str:
    report = [*shlex.split(command), "suite", str(suite.path), f"--output={suite.output}"]
    report += [f"--seeds={','.join(map(str, suite.seeds))}", "--report-only"]
    lines = [
        "#!/bin/bash",
        f"# Submit suite {suite.path}: teachers, then students, then the table.",
        "set -euo pipefail",
    ]
    lines.append(f"cd {shlex.quote(str(Path.cwd()))}")
    dependency = ""
    if "teachers" in scripts:
        lines.append(f"teachers=$(sbatch --parsable {shlex.quote(str(scripts['teachers']))})")
        dependency = " --dependency=afterok:${teachers}"
    last = "${teachers}"
    if "runs" in scripts:
        lines.append(f"runs=$(sbatch --parsable{dependency} {shlex.quote(str(scripts['runs']))})")
        last = "${runs}"
    logs = shlex.quote(str(suite.output.resolve() / "slurm" / "logs" / "report_%j.out"))
    setup = [str(line) for line in suite.slurm.get("setup", [])]
    wrapped = shlex.quote("; ".join([*setup, " ".join(shlex.quote(a) for a in report)]))
    lines.append(
        f"sbatch --dependency=afterany:{last} --job-name={suite.name}-report --output={logs} --wrap={wrapped}"
    )
    lines.append(
        'echo "submitted suite '
        + suite.name
        + "; the table will be in "
        + str(suite.output / "table.md")
        + '"'
    )
    return "\n".join(lines) + "\n"
