"""timm models by name (PyTorch Image Models, Wightman 2019), with local weights only.

``timm_model("resnet50", num_classes=100, weights="teachers/resnet50_cifar100.safetensors")``
builds ``timm.create_model(name)`` and adds kdlab's ``num_classes``, ``feature_points`` (tap
aliases from timm's own ``feature_info``) and, for vision transformers, ``token_prefix`` (class /
distillation / register tokens before the patch tokens, so ``stageK`` taps give feature maps).

Two ways to load weights, neither ever downloads:

- ``weights``: a state dict of exactly this network (a file kdlab wrote, or
  ``torch.save(model.state_dict())``), loaded strictly and safely by :mod:`kdlab.models._weights`.
- ``pretrained``: timm's published weights, as timm adapts them (a new classifier when
  ``num_classes`` differs from the weights', the first convolution when ``in_channels`` does):
  ``true`` takes them from the local Hugging Face cache (where ``timm.create_model(name,
  pretrained=True)`` put them on a machine with internet), a path takes that file.

timm is an optional dependency: ``pip install 'kdlab[timm]'``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import nn

from kdlab.models._weights import load_weights, read_object

__all__ = ["TimmModel", "timm_model"]

_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin")


def timm_model(
    name: str,
    num_classes: int = 1000,
    weights: str | None = None,
    pretrained: bool | str = False,
    in_channels: int = 3,
    options: dict[str, Any] | None = None,
) -> nn.Module:
    """A timm model by name, with kdlab's tap aliases.

    Args:
        name: A ``timm.list_models()`` name, e.g. ``resnet18``, ``convnext_nano``, ``deit_tiny_patch16_224``.
        num_classes: Number of classes.
        weights: Path of a state dict of this exact network, loaded strictly and safely.
        pretrained: timm's published weights: ``true`` for the local Hugging Face cache, or the
            path of the downloaded weight file; adapted to ``num_classes`` / ``in_channels``.
        in_channels: Input image channels.
        options: Further ``timm.create_model`` arguments, e.g. ``{img_size: 32, patch_size: 4}``
            for a ViT on CIFAR, ``{drop_path_rate: 0.1}``.

    Raises:
        ImportError: timm is not installed.
        ValueError: unknown ``name`` (close matches listed), or both ``weights`` and ``pretrained``.
        FileNotFoundError: the weight file, or timm's weights in the cache, are missing.
    """
    timm = _import_timm()
    if weights is not None and pretrained:
        raise ValueError(
            "timm_model: give weights (a state dict of this network) or pretrained (timm's weights), not both"
        )
    if not timm.is_model(name):
        close = timm.list_models(f"*{name.split('.')[0][:6]}*")[:8]
        hint = f" Close names: {', '.join(close)}." if close else ""
        raise ValueError(f"timm_model: timm has no model '{name}'.{hint} All of them: timm.list_models().")
    arguments: dict[str, Any] = {"num_classes": num_classes, "in_chans": in_channels, **(options or {})}
    if pretrained:
        state = read_object(_pretrained_file(timm, name, pretrained))
        arguments |= {"pretrained": True, "pretrained_cfg_overlay": {"state_dict": state}}
    model = timm.create_model(name, **arguments)
    if weights is not None:
        load_weights(model, weights)
    if pretrained:
        _describe_pretraining(timm, model, num_classes)
    model.num_classes = num_classes
    model.feature_points = feature_points(model)
    if getattr(model, "num_prefix_tokens", None) is not None:
        model.token_prefix = int(model.num_prefix_tokens)
    return model


class TimmModel(nn.Module):
    """``timm_model`` under a class name, for configs (``class_path: kdlab.models.TimmModel``).

    Instantiating it returns the timm model itself, so parameter names and weight files stay
    timm's; the class exists because jsonargparse links ``num_classes`` into classes only.

    Args:
        name: A ``timm.list_models()`` name.
        num_classes: Number of classes.
        weights: Path of a state dict of this exact network, loaded strictly and safely.
        pretrained: timm's published weights: ``true`` for the local Hugging Face cache, or a file.
        in_channels: Input image channels.
        options: Further ``timm.create_model`` arguments (``img_size``, ``patch_size``, ...).
    """

    def __new__(  # type: ignore[misc]
        cls,
        name: str,
        num_classes: int = 1000,
        weights: str | None = None,
        pretrained: bool | str = False,
        in_channels: int = 3,
        options: dict[str, Any] | None = None,
    ) -> nn.Module:
        return timm_model(name, num_classes, weights, pretrained, in_channels, options)

    def __init__(
        self,
        name: str,
        num_classes: int = 1000,
        weights: str | None = None,
        pretrained: bool | str = False,
        in_channels: int = 3,
        options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()  # never runs: __new__ returns another class; the signature is for configs


def feature_points(model: nn.Module) -> dict[str, str]:
    """kdlab's tap aliases for a timm model, from its ``feature_info`` and classifier.

    CNNs: ``stem`` (the last feature at stride 2 or less), ``stage1..`` (the last feature at each
    larger stride). Transformers, whose blocks share one stride: ``stage1..4`` at the ends of four
    equal groups of blocks, as ``:map`` taps (patch tokens as a feature map). Both: ``embedding``
    (the classifier's input) and ``logits``.
    """
    info = [(entry["module"], entry["reduction"]) for entry in getattr(model, "feature_info", None) or []]
    points: dict[str, str] = {}
    strides = sorted({reduction for _, reduction in info})
    if len(strides) > 1:
        last_at = {reduction: module for module, reduction in info}  # the last module at each stride
        stem = [last_at[r] for r in strides if r <= 2]
        if stem:
            points["stem"] = stem[-1]
        for k, reduction in enumerate((r for r in strides if r > 2), start=1):
            points[f"stage{k}"] = last_at[reduction]
    elif info:
        suffix = ":map" if getattr(model, "num_prefix_tokens", None) is not None else ""
        ends = sorted({max(len(info) * k // 4 - 1, 0) for k in range(1, 5)})
        points |= {f"stage{k}": info[end][0] + suffix for k, end in enumerate(ends, start=1)}
    classifier = _classifier_path(model)
    if classifier is not None:
        points |= {"embedding": f"{classifier}:input", "logits": classifier}
    return points


def _describe_pretraining(timm: Any, model: nn.Module, num_classes: int) -> None:
    """What timm's weights expect and predict: ``input_normalization`` (checked against the data's
    mean and std at set-up) and, with their own classifier kept, ImageNet's class ids."""
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    if cfg.get("mean") and cfg.get("std"):
        model.input_normalization = {"mean": tuple(cfg["mean"]), "std": tuple(cfg["std"])}
    from timm.data import ImageNetInfo, infer_imagenet_subset

    subset = infer_imagenet_subset(model) if num_classes == cfg.get("num_classes") else None
    if subset:
        model.class_names = list(ImageNetInfo(subset).label_names())


def _classifier_path(model: nn.Module) -> str | None:
    configured = getattr(model, "pretrained_cfg", {}).get("classifier")
    names = dict(model.named_modules())
    paths = configured if isinstance(configured, (list, tuple)) else [configured]
    for path in paths:
        if path in names and isinstance(names[path], nn.Linear):
            return path
    linears = [path for path, module in names.items() if isinstance(module, nn.Linear)]
    return linears[-1] if linears else None


def _pretrained_file(timm: Any, name: str, pretrained: bool | str) -> Path:
    if isinstance(pretrained, str):
        path = Path(pretrained).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"timm_model: no weight file at '{path}' (pretrained=<path> takes the file timm downloads, "
                "e.g. model.safetensors; kdlab never downloads)"
            )
        return path
    from huggingface_hub import constants, try_to_load_from_cache

    hub_id = timm.models.get_pretrained_cfg(name).hf_hub_id if timm.models.get_pretrained_cfg(name) else None
    cache = os.environ.get("HF_HUB_CACHE", constants.HF_HUB_CACHE)
    for filename in _WEIGHT_FILES if hub_id else ():
        found = try_to_load_from_cache(hub_id, filename, cache_dir=cache)
        if isinstance(found, str):
            return Path(found)
    where = f"Hugging Face repository {hub_id}" if hub_id else "no published weights known to timm"
    raise FileNotFoundError(
        f"timm_model: timm's weights for '{name}' ({where}) are not in the local cache {cache}, and kdlab "
        'never downloads. On a machine with internet run python -c "import timm; '
        f"timm.create_model('{name}', pretrained=True)\" and copy the cache (or set HF_HUB_CACHE), or pass "
        "pretrained=<path of the weight file>."
    )


def _import_timm() -> Any:
    try:
        import timm
    except ImportError:
        raise ImportError(
            "kdlab.models.TimmModel needs timm: pip install 'kdlab[timm]' (or pip install timm)"
        ) from None
    return timm
