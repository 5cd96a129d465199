"""How the frozen teacher's logits are produced: the one place where callbacks may change it.

By default the teacher itself runs, in eval and inference mode. A callback may plug in a faster
network that computes the same logits (:class:`kdlab.callbacks.FastPaths`: BatchNorms folded,
channels-last, compiled) with :meth:`TeacherInference.use_runner`, and a store of logits for
training batches (:class:`kdlab.callbacks.TeacherCache`) with :meth:`TeacherInference.use_cache`.
The module owns this object and only ever asks it for logits.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
from torch import Tensor, nn

from kdlab.outputs import Batch


class LogitsCache(Protocol):
    """A store of teacher logits for training batches (see :class:`kdlab.callbacks.TeacherCache`)."""

    def teacher_logits(self, batch: Batch, compute: Callable[[Tensor], Tensor]) -> Tensor:
        """The batch's logits; ``compute(inputs)`` runs the teacher for the rows it lacks."""
        ...


class TeacherInference:
    """The frozen teacher's float32 logits, from the teacher, a faster copy of it, or a cache.

    Args:
        teacher: The frozen teacher (None: no teacher; nothing here may be called then).
    """

    def __init__(self, teacher: nn.Module | None) -> None:
        self.teacher = teacher
        self.runner: Callable[[Tensor], Tensor] | None = None
        self.cache: LogitsCache | None = None

    def use_runner(self, runner: Callable[[Tensor], Tensor] | None) -> None:
        """Run ``runner`` instead of the teacher (None: the teacher again); it must compute the
        teacher's logits, e.g. a copy with BatchNorms folded."""
        self.runner = runner

    def use_cache(self, cache: LogitsCache | None) -> None:
        """Serve training batches that carry view ids from ``cache`` (None: stop)."""
        self.cache = cache

    def logits(self, inputs: Tensor) -> Tensor:
        """The teacher's float32 logits for ``inputs`` (eval mode, inference mode), as a normal
        tensor usable by autograd."""
        if self.teacher.training:  # checking the root is cheap; eval() walks every submodule
            self.teacher.eval()
        run = self.teacher if self.runner is None else self.runner
        with torch.inference_mode():
            logits = run(inputs)
        return logits.to(torch.float32, copy=True)

    def cached_logits(self, batch: Batch) -> Tensor | None:
        """The batch's logits from the cache, or None when no cache serves it."""
        if self.cache is None or batch.views is None:
            return None
        return self.cache.teacher_logits(batch, self.logits)
