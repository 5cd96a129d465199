"""docs/taps.md is true: every documented tap exists, has the documented shape, and is what
it says (pre-activations are really before a ReLU and no later in-place op overwrites a tap)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from kdlab.models.cifar import ZOO
from kdlab.models.imagenet import MobileNetV1, torchvision_model
from kdlab.models.recurrent import RowLSTM
from kdlab.models.timm_models import TimmModel
from kdlab.taps import tokens_to_map

DOC = Path(__file__).parents[1] / "docs" / "taps.md"
BUILDERS = {name: (lambda f=f: f(100), (3, 32, 32)) for name, f in ZOO.items()} | {
    "torchvision_model('resnet18')": (lambda: torchvision_model("resnet18"), (3, 224, 224)),
    "torchvision_model('resnet50')": (lambda: torchvision_model("resnet50"), (3, 224, 224)),
    "torchvision_model('mobilenet_v2')": (lambda: torchvision_model("mobilenet_v2"), (3, 224, 224)),
    "MobileNetV1()": (MobileNetV1, (3, 224, 224)),
    "RowLSTM()": (RowLSTM, (1, 8, 8)),
    "TimmModel('resnet18')": (lambda: TimmModel("resnet18", num_classes=10), (3, 32, 32)),
    "TimmModel('convnext_atto')": (lambda: TimmModel("convnext_atto", num_classes=10), (3, 32, 32)),
    "TimmModel('deit_tiny_patch16_224', options={img_size: 32, patch_size: 4, depth: 6})": (
        lambda: TimmModel("deit_tiny_patch16_224", 10, options={"img_size": 32, "patch_size": 4, "depth": 6}),
        (3, 32, 32),
    ),
}
_ROW = re.compile(r"^\| `(\w+)` \| `([\w.:]+)` \| ([\d×]+) \|$")


def _documented() -> dict[str, dict]:
    models: dict[str, dict] = {}
    current = None
    for line in DOC.read_text().splitlines():
        if line.startswith("### "):
            current = models.setdefault(line[4:].strip(), {"taps": {}})
        elif current is not None and line.startswith("Parameters: "):
            current["params"] = int(line.split(": ")[1].replace(",", ""))
        elif current is not None and (row := _ROW.match(line)):
            alias, path, shape = row.groups()
            current["taps"][alias] = (path, tuple(int(s) for s in shape.split("×")))
    return models


DOCUMENTED = _documented()


def test_every_model_is_documented():
    assert set(DOCUMENTED) == set(BUILDERS)


def _capture(model, paths):
    """Forward hooks storing each tap by reference and a copy taken when the hook fired."""
    seen = {}
    for path in paths:
        module_path, _, which = path.partition(":")

        def hook(_module, inputs, output, path=path, which=which):
            tensor = inputs[0] if which == "input" else output
            if which == "map":  # what FeatureTaps hands the distillers
                tensor = tokens_to_map(tensor, model.token_prefix)
            seen[path] = (tensor, tensor.clone())

        model.get_submodule(module_path).register_forward_hook(hook)
    return seen


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_documented_taps_exist_with_their_shapes(name):
    build, input_shape = BUILDERS[name]
    torch.manual_seed(0)
    model = build().eval()
    documented = DOCUMENTED[name]
    assert model.feature_points == {alias: path for alias, (path, _) in documented["taps"].items()}
    assert sum(p.numel() for p in model.parameters()) == documented["params"]
    seen = _capture(model, {path for path, _ in documented["taps"].values()})
    with torch.no_grad():
        model(torch.randn(1, *input_shape))
    for alias, (path, shape) in documented["taps"].items():
        tensor, at_hook = seen[path]
        assert tuple(tensor.shape[1:]) == shape, f"{name} {alias}"
        # An in-place op after the hook would leave callers a different tensor than was tapped.
        assert torch.equal(tensor, at_hook), f"{name} {alias} ({path}) was modified after it was tapped"
        if alias.endswith("_preact"):
            assert (tensor < 0).any(), f"{name} {alias} ({path}) has no negative value: not a pre-activation"
