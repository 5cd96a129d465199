"""Which distillers a callback acts on, and which callback owns each distiller attribute."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from lightning.pytorch import Callback, LightningModule, Trainer
from torch import nn


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
