"""Hugging Face ``transformers`` image classifiers from a local directory, as plain logits models.

``HuggingFaceClassifier("teachers/vit-cifar10")`` loads the directory ``save_pretrained`` wrote
(``config.json`` + ``model.safetensors``) with ``AutoModelForImageClassification``, offline and
from safetensors only (pickled ``pytorch_model.bin`` files are refused: convert them). Its forward
takes images and returns the logits tensor, so it is a teacher or student like any other; it
carries ``num_classes``, ``class_names`` (the config's ``id2label``, checked against the data's
class names at set-up), ``input_normalization`` (the saved image processor's mean and std,
checked against the data's), ``feature_points`` (``stageK`` over the encoder's stages or layers, as
``:map`` taps for transformers) and ``token_prefix``.

transformers is an optional dependency: ``pip install 'kdlab[hf]'``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from torch import Tensor, nn

__all__ = ["HuggingFaceClassifier"]

_GENERIC_LABEL = re.compile(r"LABEL_\d+")
_PREFIX_TOKENS = ("cls_token", "distillation_token", "register_tokens")


class HuggingFaceClassifier(nn.Module):
    """A ``transformers`` image classifier (ViT, DeiT, ConvNeXt, ResNet, ...) saved in a local folder.

    Args:
        path: Folder written by ``model.save_pretrained(path)``: ``config.json`` and ``*.safetensors``.
        num_classes: Classes of the data (the CLI links it); must match the config's ``num_labels``
            unless ``new_head`` is set.
        new_head: Replace the classifier with a new, randomly initialised one for ``num_classes``
            (fine-tuning a pretrained backbone, e.g. as a student or before it teaches).

    Raises:
        ImportError: transformers is not installed.
        FileNotFoundError: ``path`` is no folder, or holds no config or no safetensors weights.
        ValueError: the classifier has another number of classes than the data.
    """

    def __init__(self, path: str, num_classes: int | None = None, new_head: bool = False) -> None:
        super().__init__()
        transformers = _import_transformers()
        folder = _check_folder(Path(path).expanduser())
        config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
        if num_classes is not None and num_classes != config.num_labels and not new_head:
            raise ValueError(
                f"HuggingFaceClassifier: the classifier in {folder} predicts {config.num_labels} classes but "
                f"the data has {num_classes}; fine-tune it on this data first, or set new_head: true to "
                "start from a new classifier"
            )
        extra = (
            {"num_labels": num_classes, "ignore_mismatched_sizes": True} if new_head and num_classes else {}
        )
        self.model = transformers.AutoModelForImageClassification.from_pretrained(
            folder, local_files_only=True, use_safetensors=True, **extra
        )
        self.num_classes = int(self.model.config.num_labels)
        labels = [str(self.model.config.id2label.get(i, "")) for i in range(self.num_classes)]
        generic = new_head or all(_GENERIC_LABEL.fullmatch(label) for label in labels)
        self.class_names: list[str] | None = None if generic else labels
        self.input_normalization = _normalization(folder)
        self.token_prefix = _prefix_tokens(self.model)
        self.feature_points = _feature_points(self.model, self.token_prefix)

    def forward(self, images: Tensor) -> Tensor:
        return self.model(pixel_values=images).logits


def _check_folder(folder: Path) -> Path:
    if not folder.is_dir():
        raise FileNotFoundError(
            f"HuggingFaceClassifier: no folder at '{folder}' (give the folder model.save_pretrained() "
            "wrote; kdlab never downloads)"
        )
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"HuggingFaceClassifier: {folder} has no config.json; is it a saved model?")
    if not any(folder.glob("*.safetensors")):
        pickled = sorted(p.name for p in folder.glob("*.bin"))
        hint = (
            f" It holds {', '.join(pickled)}, pickled files kdlab does not load (they can run code); "
            "convert them with model.save_pretrained(folder, safe_serialization=True)."
            if pickled
            else ""
        )
        raise FileNotFoundError(f"HuggingFaceClassifier: {folder} holds no *.safetensors weights.{hint}")
    return folder


def _normalization(folder: Path) -> dict[str, tuple[float, ...]] | None:
    """The image processor's mean and std, if the folder holds its ``preprocessor_config.json``."""
    path = folder / "preprocessor_config.json"
    if not path.is_file():
        return None
    config = json.loads(path.read_text())
    if not config.get("do_normalize", True) or "image_mean" not in config or "image_std" not in config:
        return None
    return {"mean": tuple(config["image_mean"]), "std": tuple(config["image_std"])}


def _prefix_tokens(model: nn.Module) -> int:
    """Class, distillation and register tokens ahead of the patch tokens, counted from the
    embedding's parameters (0 for convolutional networks)."""
    count = 0
    for name, parameter in model.named_parameters():
        leaf = name.rpartition(".")[2]
        if leaf in _PREFIX_TOKENS and "embeddings" in name:
            count += parameter.shape[1] if parameter.ndim == 3 else 1
    return count


def _feature_points(model: nn.Module, prefix: int) -> dict[str, str]:
    lists = [(path, m) for path, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m)]
    stages = [(path, m) for path, m in lists if path.endswith("stages")]
    points: dict[str, str] = {}
    if stages:
        path, blocks = stages[0]
        points |= {f"stage{k}": f"{path}.{k - 1}" for k in range(1, len(blocks) + 1)}
    elif lists:
        path, blocks = max(lists, key=lambda item: len(item[1]))
        ends = sorted({max(len(blocks) * k // 4 - 1, 0) for k in range(1, 5)})
        suffix = ":map" if prefix else ""
        points |= {f"stage{k}": f"{path}.{end}{suffix}" for k, end in enumerate(ends, start=1)}
    linears = [path for path, m in model.named_modules() if isinstance(m, nn.Linear) and "classifier" in path]
    if linears:
        points |= {"embedding": f"{linears[-1]}:input", "logits": linears[-1]}
    return {alias: f"model.{target}" for alias, target in points.items()}


def _import_transformers():
    try:
        import transformers
    except ImportError:
        raise ImportError(
            "kdlab.models.HuggingFaceClassifier needs transformers: pip install 'kdlab[hf]'"
        ) from None
    # Loading is local and explicit (new_head says when a classifier is new): no banners and no
    # progress bars in every process of every run.
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    return transformers
