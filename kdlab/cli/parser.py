"""The argument parser of ``kdlab``: LightningCLI's, with short errors that suggest fixes."""

from __future__ import annotations

import difflib
import importlib
import inspect
import re
import sys
from pathlib import Path
from typing import Any, NoReturn

from lightning.pytorch.cli import LightningArgumentParser

# Lines of jsonargparse's union-type reports that repeat the whole config or the None branch.
_NOISE = re.compile(
    r"^\s*(- Expected a <class 'NoneType'>|Given value( type)?:|Subtypes: \[|"
    r"Does not validate against any of the Union subtypes|Errors:)"
)
_UNKNOWN_OPTION = re.compile(r"Problem with given class_path '([\w.]+)':\s*Option '(\w+)' is not accepted")
_UNRECOGNIZED = re.compile(r"unrecognized arguments: (.*)")
_NOT_ACCEPTED = re.compile(r"does not accept option '([\w.]+)'")  # a misspelt key in a config file
_NO_ATTRIBUTE = re.compile(r"module '([\w.]+)' has no attribute '(\w+)'")


def _init_parameters(class_path: str) -> list[str]:
    module_name, _, name = class_path.rpartition(".")
    try:
        target = getattr(importlib.import_module(module_name), name)
        return [p for p in inspect.signature(target).parameters if p not in ("self", "args", "kwargs")]
    except (ImportError, AttributeError, ValueError, TypeError):
        return []


def _suggest(name: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.6)
    return (
        f"'{name}': did you mean {' or '.join(repr(c) for c in close)}?" if close else f"'{name}' is unknown."
    )


def _suggest_key(key: str, keys: list[str]) -> str:
    """A hint for a dotted config key, trying the whole key first, then its first part."""
    close = difflib.get_close_matches(key, keys, n=3, cutoff=0.6)
    head, _, rest = key.partition(".")
    if not close and rest:
        groups = sorted({k.split(".")[0] for k in keys})
        close = [f"{group}.{rest}" for group in difflib.get_close_matches(head, groups, n=1, cutoff=0.6)]
    return (
        f"'{key}': did you mean {' or '.join(repr(c) for c in close)}?" if close else f"'{key}' is unknown."
    )


def explain(message: str, option_strings: list[str]) -> str:
    """Shorten a jsonargparse error and add 'did you mean' hints for misspelt keys."""
    lines = [line for line in message.splitlines() if not _NOISE.match(line)]
    hints = [
        _suggest(option, _init_parameters(class_path)) + f" (an init argument of {class_path})"
        for class_path, option in _UNKNOWN_OPTION.findall(message)
    ]
    for module_name, name in _NO_ATTRIBUTE.findall(message):
        try:
            public = [n for n in dir(importlib.import_module(module_name)) if not n.startswith("_")]
        except ImportError:
            public = []
        hints.append(_suggest(name, public) + f" (in {module_name})")
    keys = [s.lstrip("-") for s in option_strings if s.startswith("--")]
    hints += [_suggest_key(key, keys) for key in _NOT_ACCEPTED.findall(message)]
    for match in _UNRECOGNIZED.finditer(message):
        for token in match.group(1).split():
            if token.startswith("--"):
                hints.append(_suggest(token.lstrip("-").split("=")[0], keys))
    if "Problems parsing config" in message:
        hints.append("the YAML is malformed at the line and column shown; check indentation and brackets.")
    return "\n".join(lines + [f"hint: {hint}" for hint in hints])


def check_config_files(args: list[str]) -> None:
    """Stop with a short error naming the file when a ``-c``/``--config`` file is not valid YAML
    (jsonargparse reports the line and column, but not which of the files it was)."""
    import yaml

    for position, argument in enumerate(args):
        path = argument.partition("=")[2] if argument.startswith("--config=") else None
        if argument in ("-c", "--config") and position + 1 < len(args):
            path = args[position + 1]
        if path is None or not Path(path).is_file():
            continue
        try:
            yaml.safe_load(Path(path).read_text())
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(error, "problem", None) or str(error).splitlines()[0]
            sys.stderr.write(
                f"kdlab: error: {path} is not valid YAML: {problem}{where}; check indentation and brackets\n"
            )
            sys.exit(2)


def model_arguments_help(class_path: str = "kdlab.DistillationModule") -> str:
    """A compact help section for the init arguments of kdlab's model, from its signature and docstring."""
    from docstring_parser import parse

    module_name, _, name = class_path.rpartition(".")
    target = getattr(importlib.import_module(module_name), name)
    docs = {p.arg_name: " ".join((p.description or "").split()) for p in parse(target.__doc__ or "").params}
    lines = [f"{name} arguments (with --model {class_path}; in YAML under model.init_args):"]
    for parameter in list(inspect.signature(target).parameters.values()):
        kind = str(parameter.annotation).replace("'", "")
        value = parameter.default
        if value is inspect.Parameter.empty:
            default = "required"
        elif callable(value) and hasattr(value, "__qualname__"):
            default = f"default: {value.__module__}.{value.__qualname__}"
        else:
            default = f"default: {value!r}"
        lines.append(f"  --model.init_args.{parameter.name}  ({kind}; {default})")
        lines.append(f"      {docs.get(parameter.name, '')}")
    lines.append(f"Nested class arguments: kdlab fit --model.help {class_path}")
    return "\n".join(lines) + "\n"


class KDLabArgumentParser(LightningArgumentParser):
    """Reports parse errors in a few lines (no 90-line usage dump) with suggestions for typos, and
    lists DistillationModule's arguments in the subcommands' ``--help``."""

    def format_help(self) -> str:
        text = super().format_help()
        if any("--model" in action.option_strings for action in self._actions):
            text += "\n" + model_arguments_help()
        return text

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error:
            super().error(message, ex)
        parser: Any = getattr(ex, "subcommand_parser", None) or self
        options = [s for action in parser._actions for s in action.option_strings]
        prog = parser.prog.replace(" [options]", "")
        sys.stderr.write(f"{prog}: error: {explain(message, options)}\n")
        sys.stderr.write(f"(all options: {prog} --help)\n")
        sys.exit(2)
