"""The CIFAR zoo: exact parameter counts of the CRD benchmark, 8×8 inputs, config-friendly names."""

from __future__ import annotations

import inspect

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from kdlab.models import cifar
from kdlab.models.cifar import ZOO
from kdlab.models.cifar.reference import convert_reference_checkpoint

# Parameter counts at num_classes=100 of the CRD benchmark's models (the table).
PARAMETERS = {
    "resnet8": 83_892,
    "resnet14": 181_108,
    "resnet20": 278_324,
    "resnet32": 472_756,
    "resnet44": 667_188,
    "resnet56": 861_620,
    "resnet110": 1_736_564,
    "resnet8x4": 1_233_540,
    "resnet32x4": 7_433_860,
    "resnet50": 23_705_252,
    "wrn_16_1": 180_916,
    "wrn_16_2": 703_284,
    "wrn_40_1": 569_780,
    "wrn_40_2": 2_255_156,
    "vgg8": 3_965_028,
    "vgg11": 9_277_284,
    "vgg13": 9_462_180,
    "vgg16": 14_774_436,
    "vgg19": 20_086_692,
    "mobilenetv2": 812_836,
    "shufflev1": 949_258,
    "shufflev2": 1_355_528,
}


def test_zoo_lists_every_model_of_the_benchmark():
    assert set(ZOO) == set(PARAMETERS)
    for name in ZOO:
        assert getattr(cifar, name) is ZOO[name]


@pytest.mark.parametrize("name", sorted(PARAMETERS))
def test_parameter_count_matches_the_benchmark(name):
    model = ZOO[name](num_classes=100)
    assert sum(p.numel() for p in model.parameters()) == PARAMETERS[name]
    assert model.num_classes == 100


@pytest.mark.parametrize("name", sorted(PARAMETERS))
def test_runs_on_one_channel_8x8_digits(name):
    torch.manual_seed(0)
    model = ZOO[name](num_classes=10, in_channels=1)
    logits = model(torch.randn(2, 1, 8, 8))  # train mode: BatchNorm on the smallest maps too
    assert logits.shape == (2, 10)
    assert torch.isfinite(logits).all()
    logits.sum().backward()


@pytest.mark.parametrize("name", sorted(PARAMETERS))
def test_constructor_signature_is_config_friendly(name):
    parameters = inspect.signature(ZOO[name]).parameters
    assert list(parameters) == ["num_classes", "in_channels"]
    assert parameters["num_classes"].default == 100 and parameters["in_channels"].default == 3
    assert issubclass(ZOO[name], nn.Module)


def test_resnet_stage_output_is_the_relu_of_its_preactivation():
    model = ZOO["resnet20"](num_classes=100).eval()
    seen = {}
    model.layer2.register_forward_hook(lambda m, i, o: seen.__setitem__("stage", o))
    model.layer2[-1].relu.register_forward_hook(lambda m, i, o: seen.__setitem__("preact", i[0]))
    model(torch.randn(2, 3, 32, 32))
    assert (seen["preact"] < 0).any()
    torch.testing.assert_close(seen["stage"], seen["preact"].relu(), rtol=0, atol=0)


def test_vgg_applies_the_fourth_pool_only_at_64x64():
    model = ZOO["vgg8"](num_classes=100).eval()
    sizes = []
    model.relu4.register_forward_hook(lambda m, i, o: sizes.append(o.shape[-1]))
    model(torch.zeros(1, 3, 32, 32))
    model(torch.zeros(1, 3, 64, 64))
    assert sizes == [4, 4]


@pytest.mark.parametrize(
    ("family", "args", "message"),
    [
        (cifar.ResNet, {"depth": 9}, "6n\\+2"),
        (cifar.WideResNet, {"depth": 15}, "6n\\+4"),
        (cifar.VGG, {"config": [[64]]}, "five blocks"),
        (cifar.ShuffleNetV2, {"width": 0.7}, "one of"),
        (cifar.BottleneckResNet, {"num_blocks": (3, 4)}, "four counts"),
    ],
)
def test_bad_architecture_arguments_are_explained(family, args, message):
    with pytest.raises(ValueError, match=message):
        family(**args)


# The reference's classifier name per family (all other parameter names are the zoo's).
REFERENCE_CLASSIFIER = {"vgg8": "classifier.", "mobilenetv2": "classifier.0.", "shufflev1": "linear."}
REFERENCE_CLASSIFIER |= {"shufflev2": "linear.", "resnet50": "linear.", "resnet8x4": "fc."}


@pytest.mark.parametrize("name", sorted(REFERENCE_CLASSIFIER))
def test_converts_reference_checkpoints(name, tmp_path):
    model = ZOO[name](num_classes=100)
    prefix = REFERENCE_CLASSIFIER[name]
    state = {(prefix + k[3:] if k.startswith("fc.") else k): v for k, v in model.state_dict().items()}
    # What the benchmark's training script saves: the model's state dict among other entries.
    source = tmp_path / "ckpt_epoch_240.pth"
    torch.save({"epoch": 240, "model": state, "best_acc": torch.tensor(79.4)}, source)
    target = convert_reference_checkpoint(source, tmp_path / "teacher.safetensors")
    loaded = load_file(str(target))
    assert set(loaded) == set(model.state_dict())
    ZOO[name](num_classes=100).load_state_dict(loaded, strict=True)
