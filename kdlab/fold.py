"""Fold inference-mode BatchNorm into the convolution before it, in a copy of a network.

In eval mode a BatchNorm is a per-channel affine map ``y = (x - mean) / sqrt(var + eps) * γ + β``;
after a convolution it can be absorbed into the convolution's weight and bias, which saves one
pass over every feature map. The pairs are found by tracing the network with ``torch.fx``: a
convolution whose output feeds a BatchNorm and nothing else, each module called exactly once.
Networks with shape-dependent control flow, which fx cannot trace, are run once on an example
input with hooks instead (a BatchNorm whose input is the very tensor a convolution returned);
either way the folded copy is checked against the original on that example and discarded if it
disagrees. The fold works on a deep copy whose module tree keeps its names (folded BatchNorms become
``nn.Identity``), so the original network, its weights, buffers and fingerprint are untouched.
"""

from __future__ import annotations

import copy
import warnings
from collections import Counter
from collections.abc import Iterable

import torch
from torch import Tensor, fx, nn

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def conv_bn_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """``(conv path, batchnorm path)`` of every convolution whose only consumer is a BatchNorm.

    Raises:
        Exception: whatever ``torch.fx.symbolic_trace`` raises for untraceable code.
    """
    graph = fx.symbolic_trace(model).graph
    modules = dict(model.named_modules())
    calls = Counter(node.target for node in graph.nodes if node.op == "call_module")
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), _NORMS):
            continue
        source = node.args[0] if node.args else None
        if (
            isinstance(source, fx.Node)
            and source.op == "call_module"
            and isinstance(modules.get(source.target), _CONVS)
            and len(source.users) == 1
            and calls[source.target] == calls[node.target] == 1
            and _foldable(modules[node.target])
        ):
            pairs.append((str(source.target), str(node.target)))
    return pairs


def conv_bn_pairs_by_hooks(model: nn.Module, example: Tensor) -> list[tuple[str, str]]:
    """Like :func:`conv_bn_pairs` from one forward pass; blind to non-module uses of the conv output."""
    calls: list[tuple[str, Tensor | None, Tensor]] = []
    modules = dict(model.named_modules())
    handles = [
        module.register_forward_hook(lambda m, args, out, path=path: calls.append((path, args[0], out)))
        for path, module in modules.items()
        if isinstance(module, _CONVS + _NORMS)
    ]
    try:
        model(example)
    finally:
        for handle in handles:
            handle.remove()
    counts = Counter(path for path, _, _ in calls)
    conv_of_output = {id(out): path for path, _, out in calls if isinstance(modules[path], _CONVS)}
    pairs = []
    for path, given, _ in calls:
        conv, norm = conv_of_output.get(id(given)), modules[path]
        if isinstance(norm, _NORMS) and conv and counts[conv] == counts[path] == 1 and _foldable(norm):
            pairs.append((conv, path))
    return pairs


def _foldable(norm: nn.Module) -> bool:
    # Without running statistics a BatchNorm normalises by the batch even in eval mode.
    return norm.track_running_stats and norm.running_mean is not None and norm.running_var is not None


@torch.no_grad()
def fold_batchnorm(
    model: nn.Module, keep: Iterable[str] = (), example: Tensor | None = None
) -> tuple[nn.Module, int]:
    """An eval-mode copy of ``model`` with BatchNorms folded into their convolutions.

    Args:
        model: The network (not modified).
        keep: Module paths whose own outputs must stay observable (e.g. tapped layers); a pair
            that involves one of them is not folded.
        example: An input batch: finds the pairs of networks fx cannot trace, and checks the
            folded copy against the original (both skipped without it).

    Returns:
        The copy (frozen, in eval mode) and the number of folded pairs (0, with a warning, when
        no pair could be found safely).
    """
    folded = copy.deepcopy(model).eval().requires_grad_(False)
    pairs = _find_pairs(folded, example)
    kept = {path.split(":", 1)[0] for path in keep}
    modules = dict(folded.named_modules())
    count = 0
    for conv_path, norm_path in pairs:
        if conv_path in kept or norm_path in kept:
            continue
        _fold_pair(modules[conv_path], modules[norm_path])
        parent, _, name = norm_path.rpartition(".")
        setattr(folded.get_submodule(parent) if parent else folded, name, nn.Identity())
        count += 1
    if count and example is not None and not _agrees(model.eval(), folded, example):
        warnings.warn(f"BatchNorm folding skipped for {type(model).__name__}: outputs changed", stacklevel=2)
        return copy.deepcopy(model).eval().requires_grad_(False), 0
    return folded, count


def _find_pairs(model: nn.Module, example: Tensor | None) -> list[tuple[str, str]]:
    try:
        return conv_bn_pairs(model)
    except Exception as error:  # shape-dependent control flow, etc.
        if example is not None:
            return conv_bn_pairs_by_hooks(model, example)
        detail = str(error).splitlines()[0] if str(error) else ""
        warnings.warn(
            f"BatchNorm folding skipped for {type(model).__name__}: torch.fx cannot trace it and no "
            f"example input was given ({type(error).__name__}: {detail})",
            stacklevel=3,
        )
        return []


def _agrees(model: nn.Module, folded: nn.Module, example: Tensor) -> bool:
    expected, actual = model(example).float(), folded(example).float()
    scale = expected.abs().max().clamp_min(1.0)
    return bool(((expected - actual).abs() <= 1e-4 * scale).all())


def _fold_pair(conv: nn.Module, norm: nn.Module) -> None:
    scale = norm.running_var.add(norm.eps).rsqrt()
    if norm.weight is not None:
        scale = scale * norm.weight
    shift = -norm.running_mean * scale
    if norm.bias is not None:
        shift = shift + norm.bias
    bias = shift if conv.bias is None else conv.bias * scale + shift
    shape = (-1,) + (1,) * (conv.weight.dim() - 1)
    conv.weight = nn.Parameter(conv.weight * scale.view(shape), requires_grad=False)
    conv.bias = nn.Parameter(bias.to(conv.weight.dtype), requires_grad=False)
