"""Curriculum Temperature for Knowledge Distillation (Li et al., AAAI 2023)."""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from kdlab.callbacks.targets import check_exclusive, check_names, resolve_distillers


class _ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, scale: float) -> Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return -ctx.scale * grad, None


def reverse_gradient(x: Tensor, scale: float = 1.0) -> Tensor:
    """Gradient reversal layer (Ganin & Lempitsky, 2015): identity forward, gradient × −scale backward."""
    return _ReverseGradient.apply(x, scale)


class LearnableTemperature(nn.Module):
    """A global temperature ``min_temperature + temperature_range · sigmoid(θ)`` trained through a GRL.

    The gradient reversal makes the optimizer that minimises the distillation loss push θ
    to *maximise* it, scaled by the curriculum's λ.

    Args:
        min_temperature: Lowest reachable temperature.
        temperature_range: Width of the reachable interval above ``min_temperature``.
        init_temperature: Temperature at the start; None starts θ at 1 as the authors' code
            (``min + range · sigmoid(1)``, ≈ 15.6 with the defaults).
    """

    def __init__(
        self,
        min_temperature: float = 1.0,
        temperature_range: float = 20.0,
        init_temperature: float | None = None,
    ) -> None:
        super().__init__()
        self.min_temperature = min_temperature
        self.temperature_range = temperature_range
        theta = 1.0
        if init_temperature is not None:
            fraction = (init_temperature - min_temperature) / temperature_range
            if not 0 < fraction < 1:
                raise ValueError(
                    f"CTKD: init_temperature must lie strictly between min_temperature={min_temperature} "
                    f"and min_temperature + temperature_range={min_temperature + temperature_range}, "
                    f"got {init_temperature}"
                )
            theta = math.log(fraction / (1 - fraction))
        self.theta = nn.Parameter(torch.tensor(theta))

    def forward(self, lambda_: float) -> Tensor:
        """The temperature, a 0-d tensor whose gradient into θ is reversed and scaled by ``lambda_``."""
        return self.min_temperature + self.temperature_range * torch.sigmoid(
            reverse_gradient(self.theta, lambda_)
        )

    def extra_repr(self) -> str:
        return f"min_temperature={self.min_temperature}, temperature_range={self.temperature_range}"


class CTKD(Callback):
    """Curriculum Temperature for Knowledge Distillation (Li et al., AAAI 2023).

    Replaces the fixed temperature of distillers by one learnable global temperature that
    is trained adversarially: the same optimizer step that makes the student minimise the
    distillation loss makes the temperature maximise it, through a gradient reversal layer
    whose strength λ follows an easy-to-hard cosine curriculum,
    ``λ(e) = λ_min + (λ_max − λ_min) · (1 − cos(π · min(e + 1, E) / E)) / 2`` at epoch ``e``
    (counted from 0; the authors' counter starts at 1), ``E = lambda_epochs``.

    At ``setup`` the temperature module is attached to the LightningModule as ``ctkd`` (or
    ``ctkd_<names>``), before the optimizer is built, so it is optimised with the student
    (same optimizer, learning rate and weight decay, as in the authors' code), synchronised
    by DDP and saved in checkpoints. A forward pre-hook on each target distiller sets its
    ``temperature`` to the live tensor at every call; ``teardown`` restores the configured
    float. Logs ``ctkd/temperature`` (epoch mean) and ``ctkd/lambda``.

    Defaults follow the authors' CIFAR-100 script: T = 1 + 20·sigmoid(θ), θ starting at 1,
    λ from 0 to 1 over 10 epochs. Only the global temperature is implemented (not the
    instance-wise variant).

    Args:
        distillers: Names of the distillers whose temperature is learned; None means every
            distiller that has a ``temperature``.
        min_temperature: Lowest reachable temperature.
        temperature_range: Width of the reachable interval above ``min_temperature``.
        init_temperature: Temperature at the start; None uses the authors' θ = 1.
        lambda_min: λ at the start of the curriculum.
        lambda_max: λ at the end of the curriculum and after it.
        lambda_epochs: Epochs of the cosine curriculum; 0 uses ``lambda_max`` throughout.
    """

    controls = "temperature"

    def __init__(
        self,
        distillers: list[str] | None = None,
        min_temperature: float = 1.0,
        temperature_range: float = 20.0,
        init_temperature: float | None = None,
        lambda_min: float = 0.0,
        lambda_max: float = 1.0,
        lambda_epochs: int = 10,
    ) -> None:
        self.distillers = check_names("CTKD", distillers)
        if not min_temperature > 0 or not temperature_range > 0:
            raise ValueError(
                "CTKD: min_temperature and temperature_range must be > 0, "
                f"got {min_temperature} and {temperature_range}"
            )
        if not 0 <= lambda_min <= lambda_max:
            raise ValueError(f"CTKD: need 0 <= lambda_min <= lambda_max, got {lambda_min} and {lambda_max}")
        if isinstance(lambda_epochs, bool) or not isinstance(lambda_epochs, int) or lambda_epochs < 0:
            raise ValueError(f"CTKD: lambda_epochs must be an integer >= 0, got {lambda_epochs!r}")
        self.min_temperature, self.temperature_range = min_temperature, temperature_range
        self.init_temperature = init_temperature
        self._make()  # validates init_temperature now rather than at setup
        self.lambda_min, self.lambda_max, self.lambda_epochs = lambda_min, lambda_max, lambda_epochs
        self.module_name = "ctkd" if self.distillers is None else "ctkd_" + "_".join(self.distillers)
        self.lambda_ = self.curriculum(0)
        self._original: dict[str, float] = {}
        self._handles: list[RemovableHandle] = []
        self._last: Tensor | None = None

    @property
    def state_key(self) -> str:
        return self._generate_state_key(distillers=self.distillers)

    def curriculum(self, epoch: int) -> float:
        """λ at ``epoch`` (counted from 0)."""
        if self.lambda_epochs == 0:
            return self.lambda_max
        progress = min(epoch + 1, self.lambda_epochs) / self.lambda_epochs
        return self.lambda_min + (self.lambda_max - self.lambda_min) * (1 - math.cos(math.pi * progress)) / 2

    def _make(self) -> LearnableTemperature:
        return LearnableTemperature(self.min_temperature, self.temperature_range, self.init_temperature)

    def target_names(self, pl_module: LightningModule) -> list[str]:
        return list(resolve_distillers("CTKD", pl_module, self.distillers, "temperature"))

    def temperature_module(self, pl_module: LightningModule) -> LearnableTemperature:
        """The learnable temperature attached to ``pl_module``."""
        return getattr(pl_module, self.module_name)

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        targets = resolve_distillers("CTKD", pl_module, self.distillers, "temperature")
        check_exclusive(self, trainer, pl_module)
        pl_module.attach_learnable(self.module_name, self._make())
        self._remove_hooks()
        for name, distiller in targets.items():
            self._original.setdefault(name, distiller.temperature)
            self._handles.append(distiller.register_forward_pre_hook(partial(self._inject, pl_module)))
            self._handles.append(distiller.register_forward_hook(self._detach))

    def _inject(self, pl_module: LightningModule, distiller: nn.Module, args: Any) -> None:
        """Before each distiller call: its temperature becomes the live learned one."""
        self._last = self.temperature_module(pl_module)(self.lambda_)
        distiller.temperature = self._last

    def _detach(self, distiller: nn.Module, args: Any, output: Any) -> None:
        """After the call: keep no autograd graph alive between steps; the value stays readable."""
        distiller.temperature = distiller.temperature.detach()
        self._last = self._last.detach()

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.lambda_ = self.curriculum(trainer.current_epoch)
        pl_module.log("ctkd/lambda", self.lambda_, on_step=False, on_epoch=True, batch_size=1)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        if self._last is not None:  # a device tensor: accumulated without a host sync
            pl_module.log("ctkd/temperature", self._last, on_step=False, on_epoch=True, batch_size=1)

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._remove_hooks()
        for name, distiller in pl_module.distillers.items():
            if name in self._original:
                distiller.temperature = self._original[name]
        self._last = None

    def _remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def state_dict(self) -> dict[str, Any]:
        return {"lambda": self.lambda_}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.lambda_ = float(state_dict["lambda"])
