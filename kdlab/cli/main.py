"""The ``kdlab`` command: LightningCLI for fit/validate/test/predict, plus kdlab's own tools."""

from __future__ import annotations

import contextlib
import importlib
import inspect
import logging
import os
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

from jsonargparse import ArgumentParser, Namespace
from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.callbacks import ModelSummary
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.plugins.io import CheckpointIO

from kdlab.callbacks.checkpoints import BestAndLastCheckpoint, checkpoint_dir
from kdlab.callbacks.compression import CompressionReport
from kdlab.callbacks.fast_paths import FastPaths
from kdlab.callbacks.random_state import RandomState
from kdlab.callbacks.requeue import RequeueAtStepEnd
from kdlab.callbacks.summary import ModelSummaryWithFlops
from kdlab.checkpointing import AtomicCheckpointIO, unreadable_checkpoint
from kdlab.cli.overrides import as_list_arguments, split_indexed
from kdlab.cli.parser import KDLabArgumentParser, check_config_files
from kdlab.cli.run_dir import fill_run_directory, named_checkpoint, refuse_to_overwrite
from kdlab.errors import ConfigurationError, find_user_error, lost_peer

__all__ = ["BestAndLastCheckpoint", "KDLabCLI", "build", "link_num_classes", "main"]

TOOLS: dict[str, tuple[str, str]] = {
    # name: (module:function, one-line help)
    "demo": (
        "kdlab.tools.demo:main",
        "teacher, vanilla student and KD student on the bundled digits, as a table",
    ),
    "export": ("kdlab.tools.export:main", "write a checkpoint's student as safetensors, TorchScript or ONNX"),
    "suite": ("kdlab.suite:main", "run configs × seeds, write results.csv, a paper-style table and plots"),
    "cache": ("kdlab.tools.cache_fill:main", "fill a config's teacher-output cache upfront (TeacherCache)"),
    "report": (
        "kdlab.tools.report:main",
        "print and plot a finished run: curves, final metrics, compression table",
    ),
}


# Warnings that every run would print and that no configuration of the user's can fix.
_NOT_THE_USERS = (
    # kdlab logs training values once per epoch, not every log_every_n_steps steps.
    r"The number of training batches \(\d+\) is smaller than the logging interval",
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",  # Lightning's own call into torch
)


class _NoAdvertisement(logging.Filter):
    """Drops Lightning's "💡 Tip" lines (an advertisement for a cloud logger) from every run."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip")


class KDLabCLI(LightningCLI):
    """LightningCLI with kdlab defaults: any module/datamodule by ``class_path``, the number of
    classes stated once (``data.num_classes`` feeds student and teacher, see
    :func:`link_num_classes`), best/last checkpoints written atomically, random-generator
    state in checkpoints, SLURM requeue at the end of a step, the fast teacher and memory layout of
    :class:`~kdlab.callbacks.FastPaths` (configure one to change its options), the
    :class:`~kdlab.callbacks.CompressionReport` at fit start, the model summary with the student's
    FLOPs (:class:`~kdlab.callbacks.ModelSummaryWithFlops`), a CSV logger under
    ``trainer.default_root_dir``, short errors with suggestions.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        for message in _NOT_THE_USERS:
            warnings.filterwarnings("ignore", message=message)
        tips = logging.getLogger("lightning.pytorch.utilities.rank_zero")
        if not any(isinstance(f, _NoAdvertisement) for f in tips.filters):
            tips.addFilter(_NoAdvertisement())
        kwargs.setdefault("parser_class", KDLabArgumentParser)
        kwargs.setdefault("model_class", LightningModule)
        kwargs.setdefault("datamodule_class", LightningDataModule)
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("subclass_mode_data", True)
        kwargs.setdefault("auto_configure_optimizers", False)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("trainer_defaults", {"default_root_dir": "runs/default"})
        super().__init__(*args, **kwargs)

    def parse_arguments(self, parser: Any, args: Any) -> None:
        if isinstance(args, (dict, Namespace)):
            return super().parse_arguments(parser, args)
        args, overrides = split_indexed(list(sys.argv[1:] if args is None else args))
        check_config_files(args)
        if overrides:  # --a.b.N.c value: one element of a list (see kdlab.cli.overrides)
            first = parser.parse_args(
                [a for a in args if not a.startswith(("--print_config", "-h", "--help"))]
            )
            args += as_list_arguments(first.get(str(first.get("subcommand")), first), overrides)
        if any(a.startswith("--print_config") for a in args):  # show the run directory that is used
            first = parser.parse_args([a for a in args if not a.startswith("--print_config")])
            config = first.get(str(first.get("subcommand")), first)
            fill_run_directory(config)
            if config.get("trainer") is not None and config.trainer.get("default_root_dir"):
                args.append(f"--trainer.default_root_dir={config.trainer.default_root_dir}")
            with contextlib.suppress(Exception):  # data that cannot be built yet prints unlinked
                for role, classes in link_num_classes(config).items():
                    args.append(f"--model.init_args.{role}.init_args.num_classes={classes}")
        self.config = parser.parse_args(args)
        subcommand = self.config.get("subcommand")
        config = self.config.get(str(subcommand), self.config)
        fill_run_directory(config)
        if subcommand and config.get("trainer") is not None:
            root = config.trainer.get("default_root_dir") or "."
            config.ckpt_path = named_checkpoint(config.get("ckpt_path"), root, subcommand)

    def _parse_ckpt_path(self) -> None:
        # LightningCLI reads --ckpt_path (safely) for its hyper-parameters before anything else;
        # an unsafe or damaged file deserves the same one-line error as when the Trainer reads it.
        try:
            super()._parse_ckpt_path()
        except Exception as error:
            path = self.config[self.config.subcommand].get("ckpt_path")
            raise unreadable_checkpoint(path, error) from None

    def before_instantiate_classes(self) -> None:
        link_num_classes(self.config.get(str(self.subcommand), self.config))

    def before_fit(self) -> None:
        if self.config.fit.get("ckpt_path") is None:
            refuse_to_overwrite(self.trainer.default_root_dir)
        self._fit_started = time.perf_counter()

    def after_fit(self) -> None:
        checkpoints = [c for c in self.trainer.callbacks if isinstance(c, BestAndLastCheckpoint)]
        if checkpoints and self.trainer.is_global_zero and not self.trainer.interrupted:
            minutes, seconds = divmod(time.perf_counter() - self._fit_started, 60)
            took = f"{int(minutes)} min {seconds:.0f} s" if minutes else f"{seconds:.1f} s"
            print(f"kdlab: {checkpoints[0].summary()} (fit took {took})", flush=True)

    def instantiate_trainer(self, **kwargs: Any) -> Any:
        config = self._get(self.config_init, "trainer", default={})
        root = config.get("default_root_dir") or "."
        if config.get("logger") in (None, True):
            kwargs["logger"] = CSVLogger(save_dir=root, name="logs")
        callbacks = list(config.get("callbacks") or [])
        if config.get("enable_checkpointing") is not False:
            # Always best.ckpt and last.ckpt (resuming, --ckpt_path best|last, the suite); a configured
            # ModelCheckpoint (e.g. top-k files named by metric) writes its files besides them.
            if not any(isinstance(c, BestAndLastCheckpoint) for c in callbacks):
                callbacks.append(BestAndLastCheckpoint(root))
            for callback in callbacks:  # configured without a root: the run's, known now
                if isinstance(callback, BestAndLastCheckpoint) and callback.dirpath is None:
                    callback.dirpath = str(checkpoint_dir(root))
        kwargs["plugins"] = _with_atomic_checkpoints(config.get("plugins"))  # hpc checkpoints too
        for default in (RandomState, RequeueAtStepEnd, FastPaths, CompressionReport):
            if not any(isinstance(c, default) for c in callbacks):
                callbacks.append(default())
        if config.get("enable_model_summary") is not False and not any(
            isinstance(c, ModelSummary) for c in callbacks
        ):
            callbacks.append(ModelSummaryWithFlops())
        kwargs["callbacks"] = callbacks
        return super().instantiate_trainer(**kwargs)


def _with_atomic_checkpoints(plugins: Any) -> list[Any]:
    """The configured plugins plus :class:`AtomicCheckpointIO`, unless one is a CheckpointIO."""
    plugins = [] if plugins is None else list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]
    if not any(isinstance(p, CheckpointIO) for p in plugins):
        plugins.append(AtomicCheckpointIO())
    return plugins


def link_num_classes(config: Namespace) -> dict[str, int]:
    """Set ``num_classes`` of the student and teacher from ``data.num_classes``; return what was set,
    by role.

    The data is the single source of truth for the number of classes, so configs state it
    once. Models whose class takes no ``num_classes`` argument are left alone (the module
    still checks the logits' width against the data at set-up). Done here rather than with
    jsonargparse links because the teacher is optional and not every model takes the argument.

    Raises:
        ConfigurationError: a model's ``num_classes`` was set (to other than its default) and
            differs from the data's.
    """
    data, model = config.get("data"), config.get("model")
    if data is None or model is None or not isinstance(model.get("init_args"), Namespace):
        return {}
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(LightningDataModule, "data")
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes  # renamed in 4.49
    num_classes = getattr(instantiate(Namespace(data=data.clone())).data, "num_classes", None)
    if not isinstance(num_classes, int):
        return {}
    linked = {}
    for role in ("student", "teacher"):
        spec = model.init_args.get(role)
        parameters = _init_parameters(spec.get("class_path", "")) if isinstance(spec, Namespace) else {}
        if "num_classes" not in parameters:
            continue
        if not isinstance(spec.get("init_args"), Namespace):
            spec.init_args = Namespace()
        given, default = spec.init_args.get("num_classes"), parameters["num_classes"].default
        if given not in (None, default, num_classes):
            raise ConfigurationError(
                f"model.init_args.{role}.init_args.num_classes is {given}, but the data "
                f"({data.get('class_path')}) has {num_classes} classes; remove num_classes (it is taken "
                "from the data) or use data with that many classes"
            )
        spec.init_args.num_classes = linked[role] = num_classes
    return linked


def _init_parameters(class_path: str) -> dict[str, inspect.Parameter]:
    module_name, _, name = class_path.rpartition(".")
    try:
        return dict(inspect.signature(getattr(importlib.import_module(module_name), name)).parameters)
    except (ImportError, AttributeError, ValueError, TypeError):
        return {}


def _tool(name: str) -> Callable[..., int | None]:
    module_name, function = TOOLS[name][0].split(":")
    module = __import__(module_name, fromlist=[function])
    return getattr(module, function)


def build(args: list[str], run: bool = True) -> KDLabCLI:
    """What ``kdlab <args>`` builds, and runs with ``run=True``: the ``Build`` that the tools
    which read ``kdlab fit`` configurations (``kdlab cache``, ``kdlab suite``) are given."""
    return KDLabCLI(args=args, run=run)


def main(argv: list[str] | None = None) -> int | None:
    """Entry point of the ``kdlab`` console script."""
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in TOOLS:
        tool = _tool(args[0])
        return tool(args[1:], build) if args[0] in ("cache", "suite") else tool(args[1:])
    if args and args[0] in ("-h", "--help"):
        print("kdlab tools (besides the Lightning subcommands below):")
        for name, (_, text) in TOOLS.items():
            print(f"  {name:<10}{text}")
        print()
    try:
        KDLabCLI(args=argv)
    except Exception as error:
        known, peer = find_user_error(error), lost_peer(error)
        if (known is None and peer is None) or os.environ.get("KDLAB_TRACEBACK"):
            raise
        sys.stderr.write(f"kdlab: error: {known or peer}\n(set KDLAB_TRACEBACK=1 for the full traceback)\n")
        return 2 if known is not None else 1
    return 0
