"""The optimizer of multi-stage methods' init phase (AB, FT, FSP, two-stage FitNet).

RepDistiller (``helper/pretrain.py``) trains the init stage with an SGD of its own (the run's
momentum and weight decay; learning rate 0.01 for FT with ResNet/WRN students, the run's
otherwise), then trains the main phase with the run's optimizer, which has not stepped yet. So
here: while some distiller is in its init phase, the module's ``optimizer_step`` steps this
optimizer instead of the run's (Lightning's closure, backward and precision handling unchanged),
so the run's optimizer starts the main phase without momentum from the init phase.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from torch.optim import Optimizer

from kdlab.errors import ConfigurationError
from kdlab.losses.base import Distiller


class InitPhaseOptimizer:
    """Builds, steps and checkpoints the init phase's optimizer.

    Args:
        factory: Builds the run's optimizer from parameters (its class and hyper-parameters are
            reused; the learning rate is the distillers' ``init_lr`` where they set one).
    """

    def __init__(self, factory: Callable[[Iterable], Optimizer]) -> None:
        self.factory = factory
        self.optimizer: Optimizer | None = None
        self._saved: dict[str, Any] | None = None  # from a checkpoint, until the optimizer exists

    def get(self, parameters: list, distillers: Iterable[Distiller]) -> Optimizer:
        """The optimizer over ``parameters``, built on first use (restoring a checkpoint's state)."""
        if self.optimizer is None:
            self.optimizer = self.factory(parameters)
            lr = init_lr(distillers)
            if lr is not None:
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
            if self._saved is not None:
                self.optimizer.load_state_dict(self._saved)
                self._saved = None
        return self.optimizer

    def finish(self) -> None:
        """The init phase is over: drop the optimizer and its state."""
        self.optimizer, self._saved = None, None

    def state_dict(self) -> dict[str, Any] | None:
        return None if self.optimizer is None else self.optimizer.state_dict()

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        self.optimizer, self._saved = None, state


def init_lr(distillers: Iterable[Distiller]) -> float | None:
    """The one ``init_lr`` of ``distillers`` (None if none sets it); different ones are an error."""
    rates = {d.name: d.init_lr for d in distillers if d.init_lr is not None}
    if len(set(rates.values())) > 1:
        raise ConfigurationError(
            f"distillers in their init phase at the same time share one optimizer, but set different "
            f"init_lr values {rates}; give them the same init_lr"
        )
    return next(iter(rates.values()), None)
