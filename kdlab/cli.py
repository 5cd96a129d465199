"""The ``kdlab`` command: LightningCLI for fit/validate/test/predict, plus kdlab's own tools."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, _InstantiatorFn
from lightning.pytorch.loggers import CSVLogger

TOOLS: dict[str, tuple[str, str]] = {
    # name: (module:function, one-line help)
    "demo": ("kdlab.demo:main", "teacher, vanilla student and KD student on the bundled digits, as a table"),
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
        )


class KDLabCLI(LightningCLI):
    """LightningCLI with kdlab defaults: any module/datamodule by ``class_path``, the number of
    classes stated once (``data.num_classes`` feeds student and teacher), best/last checkpoints,
    a CSV logger under ``trainer.default_root_dir``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("model_class", LightningModule)
        kwargs.setdefault("datamodule_class", LightningDataModule)
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("subclass_mode_data", True)
        kwargs.setdefault("auto_configure_optimizers", False)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("trainer_defaults", {"default_root_dir": "runs/default"})
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        for role in ("student", "teacher"):
            parser.link_arguments(
                "data.num_classes",
                f"model.init_args.{role}.init_args.num_classes",
                apply_on="instantiate",
            )

    def _add_instantiators(self) -> None:
        # Lightning records the linked data.num_classes in the model's hyper-parameters even
        # when the link's target is absent (model.teacher is None for teachers and vanilla
        # baselines), and then fails on it; drop links whose target is not in the config.
        for key, kind, subclasses in (
            ("model", self._model_class, self.subclass_mode_model),
            ("data", self._datamodule_class, self.subclass_mode_data),
        ):
            self.parser.add_instantiator(_PresentLinksOnly(cli=self, key=key), kind, subclasses=subclasses)

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


class _PresentLinksOnly(_InstantiatorFn):
    def __call__(self, class_type: type, *args: Any, applied_instantiation_links: dict, **kwargs: Any) -> Any:
        self.cli._dump_config()
        links = {k: v for k, v in applied_instantiation_links.items() if _has_parent(self.cli.config_dump, k)}
        return super().__call__(class_type, *args, applied_instantiation_links=links, **kwargs)


def _has_parent(config: Any, key: str) -> bool:
    for part in key.split(".")[:-1]:
        if not isinstance(config, dict) or config.get(part) is None:
            return False
        config = config[part]
    return True


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
    KDLabCLI(args=argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
