"""docs/add_a_method.md, followed literally in a copy of the repository: its three files are the only
new files a method needs, and the commands it gives then pass."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
GUIDE = REPO / "docs" / "add_a_method.md"
BLOCK = re.compile(r"```(\w+)\n(.*?)```", re.DOTALL)
FILE_MARK = re.compile(r"^# file: (\S+)\n")


def _blocks() -> tuple[dict[str, str], list[str]]:
    """The files the guide writes (by path) and the commands of its bash blocks."""
    files, commands = {}, []
    for language, text in BLOCK.findall(GUIDE.read_text()):
        mark = FILE_MARK.match(text)
        if mark:
            files[mark.group(1)] = text
        elif language == "bash":
            commands += [line for line in text.splitlines() if line.strip()]
    return files, commands


def test_the_guide_adds_exactly_three_new_files():
    files, commands = _blocks()
    assert len(files) == 3 and len(commands) >= 2
    assert [p.split("/")[0] for p in files] == ["kdlab", "experiments", "tests"]
    assert not any((REPO / path).exists() for path in files), "the guide's example must be a new method"


@pytest.mark.slow
def test_following_the_guide_gives_a_working_method(tmp_path):
    copy = tmp_path / "repo"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for part in ("kdlab", "experiments", "tests", "docs"):
        shutil.copytree(REPO / part, copy / part, ignore=ignore)
    shutil.copy(REPO / "pyproject.toml", copy / "pyproject.toml")
    files, commands = _blocks()
    for path, text in files.items():
        (copy / path).write_text(text)
    env = {**os.environ, "PYTHONPATH": str(copy), "WANDB_MODE": "offline"}
    for command in commands:
        argv = shlex.split(command)
        if argv[0] == "python":
            argv[0] = sys.executable
        elif argv[0] == "kdlab":
            argv[:1] = [sys.executable, "-m", "kdlab.cli"]
        done = subprocess.run(argv, cwd=copy, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        if "pytest" in argv:
            assert re.search(r"\d+ passed", done.stdout) and "skipped" not in done.stdout, done.stdout
        if "--print_config" in argv:  # the run directory is named after the new method file
            assert "default_root_dir: runs/cifar100/resnet56-resnet20/logit_mse" in done.stdout
            assert "class_path: kdlab.losses.logit_mse.LogitMSE" in done.stdout
