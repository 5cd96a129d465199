"""Command-line overrides of one element of a list in the config, by index.

jsonargparse replaces or appends whole lists, but a researcher wants to change one
distiller's temperature without restating the list:

    kdlab fit -c kd.yaml --model.init_args.distillers.0.init_args.temperature 2

Such arguments are taken out, and put back as the whole list with that element changed.
"""

from __future__ import annotations

import json
import re
from typing import Any

import yaml
from jsonargparse import Namespace

_INDEXED = re.compile(r"^--([A-Za-z_][\w]*(?:\.[A-Za-z_]\w*)*)\.(\d+)\.([A-Za-z_][\w.]*)$")


def split_indexed(args: list[str]) -> tuple[list[str], list[tuple[str, int, str, Any]]]:
    """Separate ``--a.b.N.c value`` / ``--a.b.N.c=value`` arguments from the others."""
    rest: list[str] = []
    overrides: list[tuple[str, int, str, Any]] = []
    position = 0
    while position < len(args):
        argument = args[position]
        name, has_value, value = argument.partition("=")
        match = _INDEXED.match(name)
        if match is None:
            rest.append(argument)
            position += 1
            continue
        if not has_value:
            if position + 1 >= len(args):
                raise ValueError(f"{name} needs a value")
            value = args[position + 1]
            position += 1
        position += 1
        overrides.append((match.group(1), int(match.group(2)), match.group(3), yaml.safe_load(value)))
    return rest, overrides


def as_list_arguments(config: Namespace, overrides: list[tuple[str, int, str, Any]]) -> list[str]:
    """Rewrite the overrides as whole-list arguments (``--model.init_args.distillers=[...]``).

    ``config`` is a first parse of the other arguments; ``model.distillers`` also finds
    ``model.init_args.distillers``. Rewriting (rather than editing the parsed config) keeps
    every later step of the CLI, ``--print_config`` included, seeing the overridden value.
    """
    lists: dict[str, list] = {}
    for list_key, index, field, value in overrides:
        key = list_key if list_key in config else _with_init_args(list_key)
        items = lists.get(key) or (_plain(config[key]) if key in config else None)
        if not isinstance(items, list):
            raise ValueError(f"--{list_key}.{index}.{field}: {list_key} is not a list in the configuration")
        if index >= len(items) or not isinstance(items[index], dict):
            raise ValueError(f"--{list_key}.{index}.{field}: {list_key} has no element {index} with fields")
        target = items[index]
        if field.split(".")[0] not in target and "init_args" in target:
            target = target["init_args"]
        *parents, leaf = field.split(".")
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = value
        lists[key] = items
    return [f"--{key}={json.dumps(items)}" for key, items in lists.items()]


def _with_init_args(key: str) -> str:
    head, _, tail = key.partition(".")
    return f"{head}.init_args.{tail}"


def _plain(value: Any) -> Any:
    if isinstance(value, Namespace):
        return _plain(value.as_dict())
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
