"""The ``kdlab`` command: LightningCLI for fit/validate/test/predict, plus kdlab's own tools."""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Callable
from typing import Any

from jsonargparse import ArgumentParser, Namespace
from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import CSVLogger

from kdlab.cli_parser import KDLabArgumentParser
from kdlab.errors import find_user_error

TOOLS: dict[str, tuple[str, str]] = {
    # name: (module:function, one-line help)
    "demo": ("kdlab.demo:main", "teacher, vanilla student and KD student on the bundled digits, as a table"),
    "export": ("kdlab.export:main", "write a checkpoint's student as safetensors, TorchScript or ONNX"),
    "cache": ("kdlab.cache_fill:main", "fill a config's teacher-output cache upfront (TeacherCache)"),
}


class BestAndLastCheckpoint(ModelCheckpoint):
    """Keeps ``best.ckpt`` (highest ``val/acc1``) and ``last.ckpt`` in ``<default_root_dir>/checkpoints``.

    A fixed directory (rather than one per logger version) is what lets
    ``kdlab fit ... --ckpt_path last`` find the checkpoint of the previous attempt.

    Args:
        root: The run directory (``trainer.default_root_dir``).
    """

    def __init__(self, root: str) -> None:
        super().__init__(
            dirpath=os.path.join(root, "checkpoints"),
            filename="best",
            monitor="val/acc1",
            mode="max",
            save_top_k=1,
            save_last=True,
            auto_insert_metric_name=False,
            enable_version_counter=False,
            # Saved after validation, at the very end of the epoch, so a resumed run starts the
            # next epoch cleanly instead of replaying the end of this one.
            save_on_train_epoch_end=True,
        )

    def on_train_epoch_end(self, trainer: Any, pl_module: LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        # Lightning writes last.ckpt at epoch end only when the epoch also produced a new best;
        # a resumable run needs it after every epoch.
        if not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


class KDLabCLI(LightningCLI):
    """LightningCLI with kdlab defaults: any module/datamodule by ``class_path``, the number of
    classes stated once (``data.num_classes`` feeds student and teacher, see
    :func:`link_num_classes`), best/last checkpoints, a CSV logger under
    ``trainer.default_root_dir``, short errors with suggestions.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("parser_class", KDLabArgumentParser)
        kwargs.setdefault("model_class", LightningModule)
        kwargs.setdefault("datamodule_class", LightningDataModule)
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("subclass_mode_data", True)
        kwargs.setdefault("auto_configure_optimizers", False)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("trainer_defaults", {"default_root_dir": "runs/default"})
        super().__init__(*args, **kwargs)

    def before_instantiate_classes(self) -> None:
        config = self.config.get(str(self.subcommand), self.config)
        link_num_classes(config)

    def instantiate_trainer(self, **kwargs: Any) -> Any:
        config = self._get(self.config_init, "trainer", default={})
        root = config.get("default_root_dir") or "."
        if config.get("logger") in (None, True):
            kwargs["logger"] = CSVLogger(save_dir=root, name="logs")
        if config.get("enable_checkpointing") is not False:
            callbacks = config.get("callbacks") or []
            if not any(isinstance(c, ModelCheckpoint) for c in callbacks):
                kwargs["callbacks"] = [*callbacks, BestAndLastCheckpoint(root)]
        return super().instantiate_trainer(**kwargs)


def link_num_classes(config: Namespace) -> None:
    """Set ``num_classes`` of the student and teacher from ``data.num_classes``.

    The data is the single source of truth for the number of classes, so configs state it
    once. Models whose class takes no ``num_classes`` argument are left alone (the module
    still checks the logits' width against the data at set-up). Done here rather than with
    jsonargparse links because the teacher is optional and not every model takes the argument.
    """
    data, model = config.get("data"), config.get("model")
    if data is None or model is None or not isinstance(model.get("init_args"), Namespace):
        return
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(LightningDataModule, "data")
    num_classes = getattr(parser.instantiate_classes(Namespace(data=data.clone())).data, "num_classes", None)
    if not isinstance(num_classes, int):
        return
    for role in ("student", "teacher"):
        spec = model.init_args.get(role)
        if isinstance(spec, Namespace) and "num_classes" in _init_parameters(spec.get("class_path", "")):
            if not isinstance(spec.get("init_args"), Namespace):
                spec.init_args = Namespace()
            spec.init_args.num_classes = num_classes


def _init_parameters(class_path: str) -> set[str]:
    module_name, _, name = class_path.rpartition(".")
    try:
        return set(inspect.signature(getattr(importlib.import_module(module_name), name)).parameters)
    except (ImportError, AttributeError, ValueError, TypeError):
        return set()


def _tool(name: str) -> Callable[[list[str]], int | None]:
    module_name, function = TOOLS[name][0].split(":")
    module = __import__(module_name, fromlist=[function])
    return getattr(module, function)


def main(argv: list[str] | None = None) -> int | None:
    """Entry point of the ``kdlab`` console script."""
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in TOOLS:
        return _tool(args[0])(args[1:])
    if args and args[0] in ("-h", "--help"):
        print("kdlab tools (besides the Lightning subcommands below):")
        for name, (_, text) in TOOLS.items():
            print(f"  {name:<10}{text}")
        print()
    try:
        KDLabCLI(args=argv)
    except Exception as error:
        known = find_user_error(error)
        if known is None or os.environ.get("KDLAB_TRACEBACK"):
            raise
        sys.stderr.write(f"kdlab: error: {known}\n(set KDLAB_TRACEBACK=1 for the full traceback)\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
