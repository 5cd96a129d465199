"""The plan of a suite: which ``kdlab fit`` runs a SUITE.yaml asks for, in which order.

A suite file names teachers to train first and runs (configs × seeds) that may load them::

    name: digits
    output: runs/suites/digits
    seeds: [0, 1, 2]
    args: [--trainer.max_epochs=30]          # appended to every run's command line ({seed}: its seed)
    teachers:
      ConvNet:                               # trained once (seed: the first seed) ...
        configs: [experiments/digits/teacher.yaml]
      # Published: {weights: teachers/cifar100/resnet56.safetensors}  # ... or given as a file
    runs:
      - configs: [experiments/digits/vanilla.yaml]
      - configs: [experiments/digits/kd.yaml]
        teacher: ConvNet                     # teacher_weights := that teacher's best checkpoint
      - name: "{pair}/{method}"              # one run per combination of the matrix values
        configs: [experiments/cifar100/base.yaml, "experiments/cifar100/{pair}.yaml",
                  "experiments/method/{method}.yaml", "experiments/cifar100/{pair}/{method}.yaml?"]
        teacher: "{teacher}"
        matrix:
          method: [kd, dkd]
          pair: [{pair: resnet56-resnet20, teacher: resnet56}]   # a mapping sets several values
          exclude: [{method: dkd, pair: resnet56-resnet20}]      # combinations left out

Config paths are relative to the current directory, as for ``kdlab fit``; a path ending in ``?``
is used where the file exists and left out elsewhere (a pair's own recipe for a method).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kdlab.callbacks.checkpoints import checkpoint_path
from kdlab.errors import ConfigurationError

_RUN_KEYS = {"name", "configs", "args", "teacher", "method", "matrix"}
_TEACHER_KEYS = {"configs", "args", "seed", "weights", "checkpoint"}
_SUITE_KEYS = {"name", "output", "seeds", "args", "teachers", "runs", "slurm"}
_NAME = re.compile(r"^[\w.+-]+(/[\w.+-]+)*$")


@dataclass(frozen=True)
class Task:
    """One ``kdlab fit`` of a suite: a teacher or a run, with one seed.

    Attributes:
        index: Position in the plan (the SLURM array task id).
        role: ``"teacher"`` or ``"run"``.
        name: The run's name (teacher key for teachers); its directory is ``<output>/<name>/seed<S>``
            (``<output>/teachers/<key>/seed<S>`` for teachers).
        configs: The YAML files, in order (``-c`` each).
        args: Extra command-line arguments (suite-wide first, then the entry's).
        seed: ``--seed_everything``.
        run_dir: ``--trainer.default_root_dir``.
        teacher: Key of the suite teacher whose weights the run loads, if any.
        method: Row label of the table (None: ``vanilla`` without a teacher, else the config's name).
    """

    index: int
    role: str
    name: str
    configs: tuple[str, ...]
    args: tuple[str, ...]
    seed: int
    run_dir: Path
    teacher: str | None = None
    method: str | None = None


@dataclass
class Suite:
    """A parsed suite file: its tasks in order, teachers first, and the teachers' weight files."""

    path: Path
    name: str
    output: Path
    seeds: list[int]
    tasks: list[Task]
    teacher_weights: dict[str, Path] = field(default_factory=dict)
    slurm: dict[str, Any] = field(default_factory=dict)

    def task(self, index: int) -> Task:
        if not 0 <= index < len(self.tasks):
            raise ConfigurationError(
                f"{self.path}: no task {index}; the suite has tasks 0..{len(self.tasks) - 1}"
            )
        return self.tasks[index]


def load_suite(path: str | Path, output: str | Path | None = None, seeds: list[int] | None = None) -> Suite:
    """Read and check a suite file; ``output`` and ``seeds`` override the file's.

    Raises:
        ConfigurationError: unknown keys, missing config files, unknown teachers, clashing names.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigurationError(f"no suite file at '{path}'")
    spec = yaml.safe_load(path.read_text()) or {}
    _check_keys(spec, _SUITE_KEYS, f"{path}")
    name = str(spec.get("name", path.stem))
    out = Path(output or spec.get("output") or Path("runs") / "suites" / name)
    seeds = [int(s) for s in (seeds if seeds is not None else spec.get("seeds", [0]))]
    if not seeds:
        raise ConfigurationError(f"{path}: seeds is empty; list at least one seed")
    common = [str(a) for a in spec.get("args", [])]
    tasks: list[Task] = []
    weights: dict[str, Path] = {}
    for key, teacher in (spec.get("teachers") or {}).items():
        task, weight_file = _teacher(path, str(key), teacher or {}, seeds[0], common, out, len(tasks))
        weights[str(key)] = weight_file
        if task is not None:
            tasks.append(task)
    entries = _default_names([combo for entry in spec.get("runs") or [] for combo in _expand(path, entry)])
    for seed in seeds:
        for entry in entries:
            tasks.append(_run(path, entry, seed, common, out, weights, len(tasks)))
    if not tasks:
        raise ConfigurationError(f"{path}: the suite has nothing to run; list runs (and teachers to train)")
    _check_unique(path, tasks)
    return Suite(path, name, out, seeds, tasks, weights, dict(spec.get("slurm") or {}))


def _teacher(
    path: Path, key: str, spec: dict, default_seed: int, common: list[str], out: Path, index: int
) -> tuple[Task | None, Path]:
    where = f"{path}: teacher '{key}'"
    _check_keys(spec, _TEACHER_KEYS, where)
    _check_name(key, where)
    if "weights" in spec:
        if "configs" in spec:
            raise ConfigurationError(f"{where}: give either weights (a trained teacher) or configs, not both")
        return None, Path(spec["weights"])
    configs = _configs(spec, where)
    seed = int(spec.get("seed", default_seed))
    run_dir = out / "teachers" / key / f"seed{seed}"
    checkpoint = spec.get("checkpoint", "best")
    if checkpoint not in ("best", "last"):
        raise ConfigurationError(f"{where}: checkpoint must be 'best' or 'last', got {checkpoint!r}")
    args = _with_seed(common + [str(a) for a in spec.get("args", [])], seed)
    task = Task(index, "teacher", key, configs, args, seed, run_dir, method="teacher")
    return task, checkpoint_path(run_dir, checkpoint)


def _run(
    path: Path, entry: dict, seed: int, common: list[str], out: Path, weights: dict[str, Path], index: int
) -> Task:
    configs = _configs(entry, f"{path}: run {entry['name']}")
    name = str(entry["name"])
    where = f"{path}: run '{name}'"
    _check_name(name, where)
    if name.split("/")[0] == "teachers":
        raise ConfigurationError(f"{where}: 'teachers/' is where the suite's teachers go; rename the run")
    teacher = entry.get("teacher")
    if teacher is not None and str(teacher) not in weights:
        known = ", ".join(weights) or "none"
        raise ConfigurationError(f"{where}: unknown teacher '{teacher}'; the suite's teachers are: {known}")
    args = _with_seed(common + [str(a) for a in entry.get("args", [])], seed)
    run_dir = out / name / f"seed{seed}"
    method = entry.get("method")
    return Task(index, "run", name, configs, args, seed, run_dir, teacher and str(teacher), method)


def _with_seed(args: list[str], seed: int) -> tuple[str, ...]:
    """``{seed}`` in an argument is the task's seed (e.g. ``--data.init_args.seed={seed}``)."""
    return tuple(arg.replace("{seed}", str(seed)) for arg in args)


def _expand(path: Path, entry: Any) -> list[dict]:
    if not isinstance(entry, dict):
        raise ConfigurationError(f"{path}: each run must be a mapping with configs, got {entry!r}")
    _check_keys(entry, _RUN_KEYS, f"{path}: run {entry.get('name', '')}".rstrip())
    matrix = dict(entry.get("matrix") or {})
    if not matrix:
        return [entry]
    exclude = [{k: str(v) for k, v in rule.items()} for rule in matrix.pop("exclude", [])]
    axes = [[v if isinstance(v, dict) else {key: v} for v in values] for key, values in matrix.items()]
    expanded = []
    for combination in itertools.product(*axes):
        variables = {k: str(v) for part in combination for k, v in part.items()}
        if any(rule.items() <= variables.items() for rule in exclude):
            continue
        expanded.append({k: _fill(v, variables, path) for k, v in entry.items() if k != "matrix"})
    return expanded


def _default_names(entries: list[dict]) -> list[dict]:
    """Name unnamed runs after their last config's file name, with its folder (``pair/kd``) when
    two runs share a file name."""

    def last(entry: dict) -> Path:
        configs = entry.get("configs") or ["unnamed"]
        return Path(configs if isinstance(configs, str) else configs[-1])

    stems = [last(e).stem for e in entries if not e.get("name")]
    named = []
    for entry in entries:
        if not entry.get("name"):
            path = last(entry)
            entry = {
                **entry,
                "name": path.stem if stems.count(path.stem) == 1 else f"{path.parent.name}/{path.stem}",
            }
        named.append(entry)
    return named


def _fill(value: Any, variables: dict[str, str], path: Path) -> Any:
    if isinstance(value, list):
        return [_fill(v, variables, path) for v in value]
    if not isinstance(value, str):
        return value
    try:
        return value.format_map({"seed": "{seed}", **variables})  # {seed} is filled per seed
    except KeyError as error:
        raise ConfigurationError(
            f"{path}: '{value}' uses {{{error.args[0]}}}, which the matrix does not set "
            f"(it sets: {', '.join(sorted(variables))})"
        ) from None


def _configs(spec: dict, where: str) -> tuple[str, ...]:
    configs = spec.get("configs")
    if isinstance(configs, str):
        configs = [configs]
    if not configs:
        raise ConfigurationError(f"{where}: configs is missing; list the YAML files of `kdlab fit -c ...`")
    configs = [str(c) for c in configs]
    optional = {c for c in configs if c.endswith("?")}
    configs = [c[:-1] if c in optional else c for c in configs if c not in optional or Path(c[:-1]).is_file()]
    missing = [c for c in configs if not Path(c).is_file()]
    if missing:
        raise ConfigurationError(
            f"{where}: no config file at {', '.join(missing)} (paths are relative to the current "
            f"directory, {Path.cwd()}; end a path with '?' if the file may be absent)"
        )
    return tuple(configs)


def _check_keys(spec: Any, allowed: set[str], where: str) -> None:
    if not isinstance(spec, dict):
        raise ConfigurationError(f"{where}: expected a mapping, got {spec!r}")
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise ConfigurationError(f"{where}: unknown key(s) {unknown}; valid keys are {sorted(allowed)}")


def _check_name(name: str, where: str) -> None:
    if not _NAME.match(name) or ".." in name.split("/"):
        raise ConfigurationError(
            f"{where}: '{name}' is not a usable directory name (letters, digits, ._+- and /)"
        )


def _check_unique(path: Path, tasks: list[Task]) -> None:
    seen: dict[Path, Task] = {}
    for task in tasks:
        if task.run_dir in seen:
            raise ConfigurationError(
                f"{path}: runs '{seen[task.run_dir].name}' and '{task.name}' would share {task.run_dir}; "
                "give them different names"
            )
        seen[task.run_dir] = task
