"""The experiment recipes as they are on disk, for tests that check every pair and method.

A CIFAR-100 recipe is ``base.yaml`` + a pair file (``experiments/cifar100/<pair>.yaml``) + a
method file (``experiments/method/<method>.yaml``) + the pair's own file for that method where a
paper tuned one (``experiments/cifar100/<pair>/<method>.yaml``, last). Lists of pairs and methods
come from the directories, so a method added later is covered without editing a test.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = REPO / "experiments"
CIFAR100 = EXPERIMENTS / "cifar100"
METHOD_DIR = EXPERIMENTS / "method"
DIGITS = EXPERIMENTS / "digits"

PAIRS = sorted(p.stem for p in CIFAR100.glob("*-*.yaml"))
METHODS = sorted(p.stem for p in METHOD_DIR.glob("*.yaml"))


def recipe_files(pair: str, method: str) -> list[Path]:
    """The config files of ``pair`` with ``method``, in the order ``kdlab fit -c`` takes them."""
    files = [CIFAR100 / "base.yaml", CIFAR100 / f"{pair}.yaml", METHOD_DIR / f"{method}.yaml"]
    own = CIFAR100 / pair / f"{method}.yaml"
    return [*files, own] if own.is_file() else files


def distiller_class(spec: dict) -> type:
    module, _, name = spec["class_path"].rpartition(".")
    return getattr(importlib.import_module(module), name)


def method_spec(method: str) -> dict:
    """The raw YAML of a method file."""
    return yaml.safe_load((METHOD_DIR / f"{method}.yaml").read_text())


def is_feature_method(config: dict) -> bool:
    """Whether the config's (first) distiller reads intermediate features."""
    init_args = config["model"]["init_args"]
    specs = init_args.get("distillers") or init_args.get("distillers+") or []
    return bool(specs) and bool(distiller_class(specs[0]).student_taps)


FEATURE_METHODS = [m for m in METHODS if is_feature_method(method_spec(m))]
LOGIT_METHODS = [m for m in METHODS if m not in FEATURE_METHODS]


@functools.cache
def _parser() -> Any:
    from kdlab.cli import KDLabCLI

    class Parsed(Exception):
        pass

    class ParserOnly(KDLabCLI):
        def before_instantiate_classes(self) -> None:
            raise Parsed(self.parser)

    try:
        ParserOnly(args=[f"--config={f}" for f in recipe_files(PAIRS[0], "kd")], run=False)
    except Parsed as parsed:
        return parsed.args[0]
    raise AssertionError("the kdlab parser was not reached")


def resolve(files: list[Path]) -> dict:
    """What ``kdlab fit -c F1 -c F2 ... --print_config`` shows, as a dict (run directory filled in)."""
    from kdlab.cli.main import link_num_classes
    from kdlab.cli.run_dir import fill_run_directory

    parser = _parser()
    config = parser.parse_args([f"--config={f}" for f in files])
    fill_run_directory(config)
    link_num_classes(config)
    resolved = json.loads(parser.dump(config, format="json", skip_check=True))
    resolved.pop("config", None)
    return resolved


@functools.cache
def _resolved(pair: str, method: str) -> str:
    return json.dumps(resolve(recipe_files(pair, method)))


def recipe(pair: str, method: str) -> dict:
    """The resolved configuration of ``pair`` with ``method`` (a fresh copy each call)."""
    return json.loads(_resolved(pair, method))


def suite_combinations(suite: str = "suite.yaml") -> set[tuple[str, str]]:
    """The (pair, method) runs of a CIFAR-100 suite file."""
    from kdlab.suite.plan import load_suite

    here = Path.cwd()
    os.chdir(REPO)  # suite paths are relative to the repository
    try:
        tasks = load_suite(CIFAR100 / suite).tasks
    finally:
        os.chdir(here)
    return {tuple(t.name.split("/")) for t in tasks if t.role == "run" and not t.name.startswith("vanilla/")}
