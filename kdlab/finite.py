"""Non-finite loss terms and gradients: found without a per-step host sync, named, stopped in time.

A NaN or infinite loss term is plain to see; a finite term whose gradient is not (KD-SVD's SVD
with repeated singular values, a norm of a zero vector) corrupts the parameters just as surely
and silently. Every step the guard records, on the device, each term's value, whether the
gradient that each term sent back into the student's outputs was finite, and whether the whole
gradient was; the next step (or a checkpoint, or validation) reads them in one host sync and
raises :class:`~kdlab.errors.NonFiniteLossError` naming the term, before a checkpoint is
written, so the last good checkpoint is kept.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from kdlab.errors import NonFiniteLossError
from kdlab.outputs import Outputs


class _Watch(torch.autograd.Function):
    """Identity whose backward clears ``flags[index]`` if the gradient passing through is not finite."""

    @staticmethod
    def forward(ctx: Any, tensor: Tensor, flags: Tensor, index: int) -> Tensor:  # type: ignore[override]
        ctx.flags, ctx.index = flags, index
        return tensor.view_as(tensor)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        ctx.flags[ctx.index] &= torch.isfinite(grad).all()
        return grad, None, None


class FiniteGuard:
    """Records one step's terms and gradients; :meth:`check` raises if any was not finite."""

    def __init__(self) -> None:
        self._names: list[str] = []
        self._flags: Tensor | None = None  # per term: its gradient into the student was finite
        self._pending: tuple[Tensor, Tensor, int, list[str]] | None = None

    def begin(self, names: list[str], device: torch.device) -> None:
        """A step with these terms starts."""
        self._names = names
        self._flags = torch.ones(len(names), dtype=torch.bool, device=device)

    def watch(self, name: str, outputs: Outputs) -> Outputs:
        """``outputs`` as term ``name`` receives them, with its gradients watched."""
        index = self._names.index(name)

        def watched(tensor: Tensor) -> Tensor:
            return _Watch.apply(tensor, self._flags, index) if tensor.requires_grad else tensor

        features = {path: watched(value) for path, value in outputs.features.items()}
        strong = None if outputs.strong_logits is None else watched(outputs.strong_logits)
        return Outputs(watched(outputs.logits), features, strong)

    def record(self, values: Tensor, batch_idx: int, parameters: list[nn.Parameter]) -> None:
        """After the backward pass: the terms' values and the finiteness of all gradients."""
        grads = [p.grad for p in parameters if p.grad is not None]
        whole = torch.nn.utils.get_total_norm(grads).isfinite() if grads else values.new_ones((), dtype=bool)
        terms_ok = torch.isfinite(values) & self._flags
        self._pending = (torch.cat([terms_ok, whole[None]]), values, batch_idx, self._names)

    def forget(self) -> None:
        self._pending = None

    def check(self, epoch: int, module: nn.Module) -> None:
        """Raise if the recorded step had a non-finite term or gradient (one host sync)."""
        if self._pending is None:
            return
        ok, values, batch_idx, names = self._pending
        self._pending = None
        ok = ok.tolist()
        if all(ok):
            return
        where = f"at epoch {epoch}, batch {batch_idx}"
        advice = (
            "Training stopped before the next checkpoint, so the last good checkpoint is kept. Lower the "
            "learning rate or that term's weight, or check the batch's inputs."
        )
        values = values.tolist()
        bad_values = ", ".join(f"{n}={v:g}" for n, v in zip(names, values) if not math.isfinite(v))
        if bad_values:  # the message the tests and users know: "non-finite loss term(s) kd=nan at ..."
            raise NonFiniteLossError(f"non-finite loss term(s) {bad_values} {where}. {advice}")
        bad_grads = ", ".join(n for n, good in zip(names, ok) if not good)
        if not bad_grads and _world_size() > 1:  # DDP averaged another process's non-finite gradient in
            raise NonFiniteLossError(
                "another process of this distributed run stopped on a non-finite loss term or gradient "
                f"(the gradients averaged over the processes were not finite here {where}), so this one "
                "cannot go on; read that process's error above"
            )
        if not bad_grads:  # no term's watched outputs saw it (e.g. inside a term's own regressor)
            bad_grads = f"(parameters {_non_finite(module)})"
        shown = ", ".join(f"{n}={v:g}" for n, v in zip(names, values))
        raise NonFiniteLossError(
            f"non-finite gradient of loss term(s) {bad_grads} {where}, although every term's value was "
            f"finite ({shown}). {advice}"
        )


def _world_size() -> int:
    available = torch.distributed.is_available() and torch.distributed.is_initialized()
    return torch.distributed.get_world_size() if available else 1


def _non_finite(module: nn.Module, shown: int = 5) -> str:
    named = module.named_parameters()
    names = [n for n, p in named if p.grad is not None and not bool(p.grad.isfinite().all())]
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")
