"""ImageNet models: torchvision classifiers by name (local weights only) and MobileNetV1.

``torchvision_model("resnet50", weights="teachers/resnet50.safetensors")`` builds torchvision's
network, loads a local weight file safely (never downloads) and adds kdlab's ``num_classes`` and
``feature_points`` attributes. ResNets get tappable pre-activations: each block's last ReLU
becomes its own module ``relu_out`` (same parameter names, so torchvision weight files load).
"""

from __future__ import annotations

import difflib

import torchvision
from torch import Tensor, nn
from torchvision.models import resnet as tv_resnet

from kdlab.models._weights import load_weights
from kdlab.models.mobilenetv1 import MobileNetV1

__all__ = ["MobileNetV1", "TorchvisionModel", "torchvision_model"]

# torchvision's mobilenet_v2 ``features`` indices ending the 24/32/96/320-channel groups
# (the stages of the CIFAR MobileNetV2 of the CRD benchmark).
_MOBILENET_V2_STAGES = (3, 6, 13, 17)


def torchvision_model(
    name: str, num_classes: int = 1000, weights: str | None = None, in_channels: int = 3
) -> nn.Module:
    """A torchvision classification model by name, with kdlab's tap aliases.

    Args:
        name: A torchvision classification builder, e.g. ``resnet18``, ``resnet50``, ``mobilenet_v2``.
        num_classes: Number of classes.
        weights: Path of a local weight file (``.safetensors``, or a state dict saved with
            ``torch.save``) loaded strictly and without unpickling code; None for random weights.
            Nothing is ever downloaded.
        in_channels: Input image channels (the first convolution is rebuilt when not 3).

    Raises:
        ValueError: unknown ``name`` (close matches listed), or weights that do not fit.
    """
    available = torchvision.models.list_models(module=torchvision.models)
    if name not in available:
        close = difflib.get_close_matches(name, available, n=5, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise ValueError(
            f"torchvision_model: unknown model '{name}'; {hint}torchvision's classification models are: "
            f"{', '.join(available)}"
        )
    model = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    if in_channels != 3:
        _replace_first_conv(model, in_channels)
    if isinstance(model, tv_resnet.ResNet):
        _make_preactivations_tappable(model)
    if weights is not None:
        load_weights(model, weights)
    model.num_classes = num_classes
    model.feature_points = _feature_points(model)
    return model


class TorchvisionModel(nn.Module):
    """``torchvision_model`` under a class name, for configs (``class_path``).

    Instantiating it returns the torchvision model itself, not a wrapper, so parameter names
    and weight files stay torchvision's. It exists because jsonargparse cannot link
    ``num_classes`` into a function's arguments, only into a class's.

    Args:
        name: A torchvision classification builder, e.g. ``resnet50``.
        num_classes: Number of classes.
        weights: Path of a local weight file, or None for random weights.
        in_channels: Input image channels.
    """

    def __new__(  # type: ignore[misc]
        cls, name: str, num_classes: int = 1000, weights: str | None = None, in_channels: int = 3
    ) -> nn.Module:
        return torchvision_model(name, num_classes, weights, in_channels)

    def __init__(
        self, name: str, num_classes: int = 1000, weights: str | None = None, in_channels: int = 3
    ) -> None:
        super().__init__()  # never runs: __new__ returns another class; the signature is for configs


def _replace_first_conv(model: nn.Module, in_channels: int) -> None:
    for path, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            parent_path, _, attribute = path.rpartition(".")
            replacement = nn.Conv2d(
                in_channels,
                module.out_channels,
                module.kernel_size,
                module.stride,
                module.padding,
                module.dilation,
                1 if module.groups == 1 else in_channels,
                module.bias is not None,
                module.padding_mode,
            )
            setattr(model.get_submodule(parent_path), attribute, replacement)
            return
    raise ValueError(
        f"torchvision_model: {type(model).__name__} has no Conv2d to adapt to in_channels={in_channels}"
    )


class _TappableBasicBlock(tv_resnet.BasicBlock):
    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu_out(out + identity)


class _TappableBottleneck(tv_resnet.Bottleneck):
    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))))
        return self.relu_out(self.bn3(self.conv3(out)) + identity)


def _make_preactivations_tappable(model: tv_resnet.ResNet) -> None:
    # torchvision reuses one in-place ReLU inside a block, so a hook on it fires several
    # times and its input is overwritten; the block's last ReLU gets a module of its own.
    for module in model.modules():
        if type(module) is tv_resnet.BasicBlock:
            module.__class__ = _TappableBasicBlock
        elif type(module) is tv_resnet.Bottleneck:
            module.__class__ = _TappableBottleneck
        else:
            continue
        module.relu_out = nn.ReLU()


def _feature_points(model: nn.Module) -> dict[str, str]:
    if isinstance(model, tv_resnet.ResNet):
        stages = ["layer1", "layer2", "layer3", "layer4"]
        points = {"stem": "maxpool"} | {f"stage{k}": s for k, s in enumerate(stages, start=1)}
        points |= {
            f"stage{k}_preact": f"{s}.{len(model.get_submodule(s)) - 1}.relu_out:input"
            for k, s in enumerate(stages, start=1)
        }
        return points | {"embedding": "fc:input", "logits": "fc"}
    points: dict[str, str] = {}
    if isinstance(model, torchvision.models.MobileNetV2):
        # Linear bottlenecks: stages end without a ReLU, so the pre-activation is the stage output.
        stages = [f"features.{index}" for index in _MOBILENET_V2_STAGES]
        points["stem"] = "features.0"
        points |= {f"stage{k}": path for k, path in enumerate(stages, start=1)}
        points |= {f"stage{k}_preact": path for k, path in enumerate(stages, start=1)}
    linears = [path for path, module in model.named_modules() if isinstance(module, nn.Linear)]
    if linears:
        points |= {"embedding": f"{linears[-1]}:input", "logits": linears[-1]}
    return points
