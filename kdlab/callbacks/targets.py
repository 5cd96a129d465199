"""Callbacks that set distiller attributes: which distillers, which callback owns an attribute,
and the base class of the schedules."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from torch import nn

INTERVALS = ("epoch", "step")


def check_names(owner: str, names: Sequence[str] | None) -> list[str] | None:
    """Validate a ``distillers`` argument at construction: None, or a non-empty list of names."""
    if names is None:
        return None
    if isinstance(names, str) or not names or not all(isinstance(n, str) and n for n in names):
        raise ValueError(
            f"{owner}: distillers must be None (all of them) or a non-empty list of distiller names "
            f"such as ['kd'], got {names!r}"
        )
    return list(names)


def resolve_distillers(
    owner: str, pl_module: LightningModule, names: Sequence[str] | None, attribute: str
) -> dict[str, nn.Module]:
    """The distillers named ``names`` (or all that have ``attribute``), by their module name.

    Raises:
        ValueError: the module has no distillers, a name is unknown (the valid ones are listed)
            or a named distiller has no ``attribute``.
    """
    distillers = getattr(pl_module, "distillers", None)
    if not isinstance(distillers, (Mapping, nn.ModuleDict)):
        raise ValueError(
            f"{owner} acts on the distillers of a kdlab.DistillationModule, but "
            f"{type(pl_module).__name__} has no `distillers` dict."
        )
    capable = {name: d for name, d in distillers.items() if hasattr(d, attribute)}
    if names is None:
        if not capable:
            raise ValueError(
                f"{owner}: no distiller has a `{attribute}` (distillers: {list(distillers) or 'none'}). "
                f"Add one that has (e.g. kdlab.losses.KD), or remove the callback."
            )
        return capable
    unknown = [n for n in names if n not in distillers]
    if unknown:
        raise ValueError(
            f"{owner}: unknown distiller name(s) {unknown}; the module's distillers are "
            f"{list(distillers) or 'none'} (names are the class name in lower case, e.g. 'kd', 'dkd')."
        )
    lacking = [n for n in names if n not in capable]
    if lacking:
        raise ValueError(
            f"{owner}: distiller(s) {lacking} have no `{attribute}`; "
            f"those that do: {list(capable) or 'none'}."
        )
    return {n: capable[n] for n in names}


def check_exclusive(owner: Callback, trainer: Trainer, pl_module: LightningModule) -> None:
    """Refuse two callbacks that set the same attribute of the same distiller.

    Callbacks declare the attribute they set as ``controls`` and their distillers through
    ``target_names(pl_module)``.
    """
    mine = set(owner.target_names(pl_module))
    for other in trainer.callbacks:
        if other is owner or getattr(other, "controls", None) != owner.controls:
            continue
        clash = sorted(mine & set(other.target_names(pl_module)))
        if clash:
            raise ValueError(
                f"{type(owner).__name__} and {type(other).__name__} would both set the `{owner.controls}` "
                f"of distiller(s) {clash}. Keep one of them, or give each callback different `distillers`."
            )


class DistillerSchedule(Callback):
    """Sets ``controls`` (an attribute) on the target distillers at each epoch or step start.

    Subclasses define :meth:`value`. The values set are a function of the epoch or step
    index, restored by Lightning on resume, so a resumed run continues the same schedule;
    the state dict keeps the distillers' configured (base) values (and subclasses' extras).
    """

    controls = ""
    log_name = ""

    def __init__(self, distillers: list[str] | None, interval: str) -> None:
        if interval not in INTERVALS:
            raise ValueError(f"{type(self).__name__}: interval must be one of {INTERVALS}, got {interval!r}")
        self.distillers = check_names(type(self).__name__, distillers)
        self.interval = interval
        self._targets: dict[str, Any] = {}
        self._base: dict[str, float] = {}
        self._values: dict[str, float] = {}

    @property
    def state_key(self) -> str:
        return self._generate_state_key(distillers=self.distillers)

    def target_names(self, pl_module: LightningModule) -> list[str]:
        return list(resolve_distillers(type(self).__name__, pl_module, self.distillers, self.controls))

    def value(self, name: str, t: int) -> float:
        raise NotImplementedError

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._targets = resolve_distillers(type(self).__name__, pl_module, self.distillers, self.controls)
        check_exclusive(self, trainer, pl_module)
        for name, distiller in self._targets.items():
            self._base.setdefault(name, float(getattr(distiller, self.controls)))

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # A run resumed in the middle of an epoch does not start that epoch again, so
        # on_train_epoch_start never fires for it: set the epoch's values here too.
        if self.interval == "epoch":
            self._apply(trainer.current_epoch)

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.interval == "epoch":
            self._apply(trainer.current_epoch)
            self._log(pl_module, on_step=False)

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self.interval == "step":
            self._apply(trainer.global_step)
            # Logging a float copies it to the device: do it only as often as the logger writes.
            if trainer.global_step % max(trainer.log_every_n_steps, 1) == 0:
                self._log(pl_module, on_step=True)

    def _apply(self, t: int) -> None:
        for name, distiller in self._targets.items():
            self._values[name] = self.value(name, t)
            setattr(distiller, self.controls, self._values[name])

    def _log(self, pl_module: LightningModule, on_step: bool) -> None:
        for key, value in self.logged(self._values).items():
            pl_module.log(key, value, on_step=on_step, on_epoch=not on_step, batch_size=1)

    def logged(self, values: dict[str, float]) -> dict[str, float]:
        """The logged keys: ``schedule/<distiller>/<attribute>`` for each target."""
        return {f"schedule/{name}/{self.log_name}": value for name, value in values.items()}

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        # Leave the distillers as configured, so a later fit starts from the same base values.
        for name, distiller in self._targets.items():
            setattr(distiller, self.controls, self._base[name])

    def state_dict(self) -> dict[str, Any]:
        return {"base": dict(self._base), "values": dict(self._values)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._base = dict(state_dict["base"])
        self._values = dict(state_dict["values"])
