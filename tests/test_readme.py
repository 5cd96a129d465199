"""The README's commands, as written: every kdlab command names files that exist and parses, and the
digits tour runs from start to end in a fresh directory, in the README's order."""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from kdlab.cli import main
from kdlab.suite.plan import load_suite

REPO = Path(__file__).resolve().parents[1]
BASH = re.compile(r"```bash\n(.*?)```", re.DOTALL)


def readme_commands() -> list[list[str]]:
    """Every command line of the README's bash blocks (continuations joined, comments dropped)."""
    commands = []
    for block in BASH.findall((REPO / "README.md").read_text()):
        for line in block.replace("\\\n", " ").splitlines():
            tokens = shlex.split(line, comments=True)
            if tokens:
                commands.append(tokens)
    return commands


def _kdlab(tokens: list[str]) -> list[str] | None:
    """The arguments of a ``kdlab`` command (after any VAR=value prefix), else None."""
    while tokens and re.match(r"^\w+=", tokens[0]):
        tokens = tokens[1:]
    return tokens[1:] if tokens and tokens[0] == "kdlab" else None


KDLAB = [args for tokens in readme_commands() if (args := _kdlab(tokens)) is not None and "..." not in args]


def _configs(args: list[str]) -> list[str]:
    return [args[i + 1] for i, a in enumerate(args) if a in ("-c", "--config")]


def test_the_readme_shows_the_main_commands():
    subcommands = {args[0] for args in KDLAB}
    assert {"fit", "test", "suite", "cache", "export"} <= subcommands
    assert ["make", "demo"] in readme_commands() and ["make", "test"] in readme_commands()
    assert ["source", ".venv/bin/activate"] in readme_commands()


@pytest.mark.parametrize("args", KDLAB, ids=lambda args: " ".join(args)[:90])
def test_each_readme_command_names_existing_files_and_parses(args, monkeypatch):
    monkeypatch.chdir(REPO)
    missing = [c for c in _configs(args) if not Path(c).is_file()]
    assert not missing, f"kdlab {' '.join(args)}: no such config file {missing}"
    if args[0] == "suite":
        assert load_suite(args[1]).tasks
    elif args[0] in ("fit", "validate", "test", "predict"):
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed), pytest.raises(SystemExit) as exited:
            main([*args, "--print_config"])
        assert exited.value.code in (0, None), f"kdlab {' '.join(args)} does not parse"
        assert "class_path" in printed.getvalue()


@pytest.mark.slow
def test_the_digits_tour_runs_as_written(tmp_path):
    (tmp_path / "experiments").symlink_to(REPO / "experiments")
    tour = [
        t for t in readme_commands() if "experiments/digits" in " ".join(t) or "runs/digits" in " ".join(t)
    ]
    assert len(tour) >= 6
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_DIR": str(tmp_path)}
    for tokens in tour:
        assignments = {}
        while re.match(r"^\w+=", tokens[0]):
            name, _, value = tokens.pop(0).partition("=")
            assignments[name] = value
        assert tokens[0] == "kdlab", tokens
        command = [sys.executable, "-m", "kdlab.cli", *tokens[1:]]
        done = subprocess.run(
            command, cwd=tmp_path, env=env | assignments, capture_output=True, text=True, timeout=900
        )
        assert done.returncode == 0, f"{shlex.join(tokens)}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    assert (tmp_path / "runs/digits/kd/student.safetensors").is_file()
    assert (tmp_path / "runs/digits/kd_t2/checkpoints/best.ckpt").is_file()
