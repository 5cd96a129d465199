"""What a compression study reports about a network: parameters, FLOPs, file size, latency.

Plain functions, shared by the ``CompressionReport`` callback and ``kdlab demo``. Each works
on a private copy of the network without forward hooks, so measuring never fires feature
taps, never moves the original between devices and never changes its train/eval mode.
"""

from __future__ import annotations

import copy
import io
import statistics
import time
from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (shared parameters counted once).

    Args:
        model: The network.
        trainable_only: Count only parameters with ``requires_grad``.
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_flops(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Floating-point operations of one forward pass on one image, in eval mode.

    Counted by ``torch.utils.flop_counter.FlopCounterMode`` (matrix products and convolutions,
    2 FLOPs per multiply-add; papers that say "FLOPs" for multiply-adds report half of this).

    Args:
        model: The network.
        input_shape: Shape of one input without the batch dimension, e.g. ``(3, 32, 32)``.
    """
    plain = _plain_copy(model, "cpu")
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        plain(torch.zeros(1, *input_shape))
    return int(counter.get_total_flops())


def serialized_bytes(model: nn.Module, format: str = "safetensors") -> int:
    """Size in bytes of the model's state dict written as ``format``.

    Args:
        model: The network.
        format: ``safetensors`` or ``torch`` (``torch.save``).
    """
    state = {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}
    if format == "safetensors":
        from safetensors.torch import save

        # safetensors refuses tensors that share storage; a copy of each is what a file holds.
        return len(save({name: tensor.clone().contiguous() for name, tensor in state.items()}))
    if format == "torch":
        buffer = io.BytesIO()
        torch.save(state, buffer)
        return buffer.tell()
    raise ValueError(f"serialized_bytes: format must be 'safetensors' or 'torch', got '{format}'")


def latency_per_image(
    model: nn.Module,
    input_shape: Sequence[int],
    device: str | torch.device = "cpu",
    batch_size: int = 1,
    warmup: int = 3,
    repeats: int = 20,
) -> float:
    """Median wall time of one eval-mode forward pass, divided by ``batch_size``, in seconds.

    Args:
        model: The network (a copy is measured on ``device``).
        input_shape: Shape of one input without the batch dimension.
        device: Where to run, e.g. ``"cpu"`` or ``"cuda"``.
        batch_size: Images per forward pass (1 measures single-image latency).
        warmup: Untimed passes first (allocator, cuDNN autotuning, caches).
        repeats: Timed passes; the median is reported.
    """
    return latency_quantiles(model, input_shape, device, batch_size, warmup, repeats)[1]


def latency_quantiles(
    model: nn.Module,
    input_shape: Sequence[int],
    device: str | torch.device = "cpu",
    batch_size: int = 1,
    warmup: int = 3,
    repeats: int = 20,
) -> tuple[float, float, float]:
    """The 10th percentile, median and 90th percentile of :func:`latency_per_image`'s timed passes,
    per image, in seconds: a wide spread means the machine was busy while it measured."""
    device = torch.device(device)
    plain = _plain_copy(model, device)
    x = torch.zeros(batch_size, *input_shape, device=device)
    times = []
    with torch.inference_mode():
        for step in range(warmup + repeats):
            _synchronize(device)
            start = time.perf_counter()
            plain(x)
            _synchronize(device)
            elapsed = time.perf_counter() - start
            if step >= warmup:
                times.append(elapsed / batch_size)
    if len(times) == 1:
        return times[0], times[0], times[0]
    deciles = statistics.quantiles(times, n=10, method="inclusive")
    return deciles[0], statistics.median(times), deciles[-1]


_HOOK_DICTS = (
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_backward_hooks",
    "_backward_pre_hooks",
)


def _plain_copy(model: nn.Module, device: str | torch.device) -> nn.Module:
    # Seeding deepcopy's memo with empty dicts in place of the hook dicts leaves the hooks
    # (often bound to a callback that holds the whole trainer) out of the copy.
    memo: dict[int, object] = {}
    for module in model.modules():
        for name in _HOOK_DICTS:
            hooks = getattr(module, name, None)
            if hooks is not None:
                memo[id(hooks)] = type(hooks)()
    return copy.deepcopy(model, memo).to(device).eval()


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
