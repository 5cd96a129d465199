"""Regenerate docs/taps.md: ``PYTHONPATH=. python docs/make_taps.py > docs/taps.md``.

Builds every documented model, runs one input through it with forward hooks on each tap
path and writes the tables; tests/test_taps_doc.py checks the written file against the models.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from kdlab.models.cifar import ZOO
from kdlab.models.imagenet import MobileNetV1, torchvision_model
from kdlab.models.recurrent import RowLSTM
from kdlab.models.timm_models import TimmModel
from kdlab.taps import tokens_to_map

INTRO = """# Tap points of the model zoo

Every kdlab model has a `feature_points` attribute mapping **tap aliases** to **module paths**.
Feature distillers accept either (`"stage2_preact"` or `"layer2.4.relu:input"`): a path taps a
module's output, `path:input` its input, and `path:map` a transformer block's output tokens laid
out as a feature map (the model's `token_prefix` class/distillation/register tokens dropped, the
patch tokens on their square grid), so the CNN feature methods read vision transformers.

| alias | what it is |
| --- | --- |
| `stem` | the output of the stem (feature 0 of the CRD benchmark's `is_feat` list) |
| `stage1`..`stageN` | the output of each stage (features 1..N of that list) |
| `stage1_preact`.. | the stage's pre-activation: the input of its final ReLU (its own module, not in place) |
| `embedding` | the pooled, flattened feature before the classifier (output of `pool`) |
| `logits` | the classifier's output (`fc`) |

Family notes:

- **ResNet / ResNet50 / ShuffleV1**: each block ends with its own `relu`; `stageK_preact` is the
  input of the last block's `relu` (the reference's `preact=True` features).
- **WRN** (pre-activation blocks): stage outputs are not activated; the pre-activation of stage
  K is the BN that opens the next stage (`block{K+1}.layer.0.relu1:input`) and, for the last
  stage, the final `bn1` (`relu:input`), as the reference's `preact=True` features.
- **VGG**: each block's last ReLU is `relu0`..`relu4`; the fourth max-pool runs only on 64×64 inputs.
- **MobileNetV2** (CIFAR and torchvision): stages end in linear bottlenecks without ReLU, so
  `stageK_preact` is the same tensor as `stageK`, as in the reference.
- **ShuffleV2**: the last unit's `relu` acts on `[kept half, transformed half]` before the channel
  shuffle; its input is the reference's pre-activation (unshuffled), its output equals the
  reference's (the kept half is never negative).
- **torchvision ResNets**: each block's last ReLU is a new module `relu_out` (parameter names
  unchanged); `embedding` is `fc:input` (torchvision flattens in `forward`, not in a module).
- **Other torchvision models**: `embedding`/`logits` are the input/output of the last `nn.Linear`.
- **RowLSTM**: `sequence` is every step's LSTM output, `embedding` the last step's.
- **timm models** (`kdlab.models.TimmModel`): from timm's own `feature_info`: `stem` is the last
  feature at stride 2 or less, `stageK` the last at each larger stride; transformers, whose
  blocks share one stride, get `stage1..4` at the ends of four equal groups of blocks as `:map`
  taps. `embedding`/`logits` are the classifier's input/output.
- **Hugging Face classifiers** (`kdlab.models.HuggingFaceClassifier`): `stageK` over the encoder's
  `stages` (ConvNeXt, ResNet) or, for transformers, four equal groups of its layers as `:map`
  taps; paths start with `model.` (the wrapped `transformers` model).

Shapes are per sample (batch dimension left out).
"""

# Section title -> (models by name, input shape).
SECTIONS: dict[str, tuple[dict[str, Callable[[], nn.Module]], tuple[int, ...]]] = {
    "CIFAR zoo (`kdlab.models.cifar`, 3×32×32 input, 100 classes)": (
        {name: (lambda f=f: f(100)) for name, f in ZOO.items()},
        (3, 32, 32),
    ),
    "ImageNet (`kdlab.models.imagenet`, 3×224×224 input, 1000 classes)": (
        {
            "torchvision_model('resnet18')": lambda: torchvision_model("resnet18"),
            "torchvision_model('resnet50')": lambda: torchvision_model("resnet50"),
            "torchvision_model('mobilenet_v2')": lambda: torchvision_model("mobilenet_v2"),
            "MobileNetV1()": MobileNetV1,
        },
        (3, 224, 224),
    ),
    "Recurrent (`kdlab.models.recurrent`, 1×8×8 input, 10 classes)": ({"RowLSTM()": RowLSTM}, (1, 8, 8)),
    "timm (`kdlab.models.TimmModel`, 3×32×32 input, 10 classes)": (
        {
            "TimmModel('resnet18')": lambda: TimmModel("resnet18", num_classes=10),
            "TimmModel('convnext_atto')": lambda: TimmModel("convnext_atto", num_classes=10),
            "TimmModel('deit_tiny_patch16_224', options={img_size: 32, patch_size: 4, depth: 6})": lambda: (
                TimmModel("deit_tiny_patch16_224", 10, options={"img_size": 32, "patch_size": 4, "depth": 6})
            ),
        },
        (3, 32, 32),
    ),
}


def tap_shapes(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    """Per-sample shape of every ``feature_points`` path for one input."""
    shapes: dict[str, tuple[int, ...]] = {}
    handles = []
    for path in model.feature_points.values():
        module_path, _, which = path.partition(":")

        def hook(_module, inputs, output, path=path, which=which) -> None:
            value = inputs[0] if which == "input" else output
            if which == "map":
                value = tokens_to_map(value, int(getattr(model, "token_prefix", 0)))
            shapes[path] = tuple(value.shape[1:])

        handles.append(model.get_submodule(module_path).register_forward_hook(hook))
    with torch.no_grad():
        model.eval()(torch.zeros(1, *input_shape))
    for handle in handles:
        handle.remove()
    return shapes


def render() -> str:
    lines = [INTRO]
    for title, (models, input_shape) in SECTIONS.items():
        lines.append(f"## {title}\n")
        for name, build in models.items():
            model = build()
            shapes = tap_shapes(model, input_shape)
            params = sum(p.numel() for p in model.parameters())
            lines += [f"### {name}\n", f"Parameters: {params:,}\n"]
            lines += ["| alias | module path | shape |", "| --- | --- | --- |"]
            for alias, path in model.feature_points.items():
                lines.append(f"| `{alias}` | `{path}` | {'×'.join(map(str, shapes[path]))} |")
            lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    torch.set_num_threads(1)
    print(render(), end="")
