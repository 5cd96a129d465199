"""The command an experiment file documents in its header comment, and what it takes to build it."""

from __future__ import annotations

import shlex
from pathlib import Path

REPO = Path(__file__).parents[1]
TOOLS = (("kdlab", "fit"), ("kdlab", "validate"), ("kdlab", "test"), ("kdlab", "suite"), ("wandb", "sweep"))


def header_command(path: Path) -> list[str] | None:
    """The first command line of ``path``'s leading comment block that uses ``path`` itself
    (``kdlab fit -c ... -c <path>``, ``kdlab suite <path>``, ``wandb sweep <path>``); lines ending
    in a backslash continue on the next comment line."""
    comments = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        comments.append(line[1:].strip())
    text = "\n".join(comments).replace("\\\n", " ")
    relative = path.relative_to(REPO).as_posix()
    for line in text.splitlines():
        try:
            tokens = shlex.split(line)
        except ValueError:  # prose with an apostrophe
            continue
        if tuple(tokens[:2]) in TOOLS and relative in {_config_value(t) or t for t in tokens}:
            return tokens
    return None


def _config_value(token: str) -> str | None:
    for prefix in ("--config=", "-c="):
        if token.startswith(prefix):
            return token[len(prefix) :]
    return None


def config_files(arguments: list[str]) -> tuple[list[Path], list[str]]:
    """Split ``kdlab fit`` arguments into the config files (absolute, from the repository root)
    and the other arguments."""
    configs, others, tokens = [], [], iter(arguments)
    for token in tokens:
        if token in ("-c", "--config"):
            configs.append(REPO / next(tokens))
        elif _config_value(token) is not None:
            configs.append(REPO / _config_value(token))
        else:
            others.append(token)
    return configs, others
