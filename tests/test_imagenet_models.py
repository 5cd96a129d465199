"""ImageNet models: torchvision by name with local, safely loaded weights; MobileNetV1."""

from __future__ import annotations

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from kdlab.models.imagenet import MobileNetV1, TorchvisionModel, torchvision_model


def test_mobilenetv1_has_the_papers_parameter_count():
    assert sum(p.numel() for p in MobileNetV1().parameters()) == 4_231_976
    assert MobileNetV1(num_classes=10, in_channels=1)(torch.randn(2, 1, 32, 32)).shape == (2, 10)


def test_unknown_name_lists_close_matches():
    with pytest.raises(ValueError, match="did you mean resnet50") as error:
        torchvision_model("resnet05")
    assert "mobilenet_v2" in str(error.value)  # the full list follows


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50", "mobilenet_v2"])
def test_named_models_keep_torchvision_parameters_and_outputs(name):
    torch.manual_seed(0)
    reference = torchvision.models.get_model(name, weights=None, num_classes=7).eval()
    model = torchvision_model(name, num_classes=7).eval()
    model.load_state_dict(reference.state_dict(), strict=True)  # same names and shapes
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x))
    assert model.num_classes == 7 and model.feature_points["logits"]


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_loads_local_weights(tmp_path, suffix):
    source = torchvision_model("resnet18", num_classes=5)
    path = tmp_path / f"w{suffix}"
    if suffix == ".safetensors":
        save_file(source.state_dict(), str(path))
    else:
        torch.save({"state_dict": source.state_dict()}, path)
    loaded = torchvision_model("resnet18", num_classes=5, weights=str(path))
    for name, tensor in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name


def test_refuses_weights_that_would_run_code(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": torchvision_model("resnet18").state_dict(), "hook": print}, path)
    with pytest.raises(ValueError, match="refused"):
        torchvision_model("resnet18", weights=str(path))


def test_weights_that_do_not_fit_are_explained(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file(torchvision_model("resnet18", num_classes=1000).state_dict(), str(path))
    wrong = r"shape \(2\): fc.bias: file \(1000,\) vs model \(10,\).*num_classes"
    with pytest.raises(ValueError, match=wrong):
        torchvision_model("resnet18", num_classes=10, weights=str(path))
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        torchvision_model("resnet18", weights=str(tmp_path / "absent.pt"))


def test_in_channels_rebuilds_the_first_convolution():
    model = torchvision_model("resnet18", num_classes=10, in_channels=1)
    assert model.conv1.in_channels == 1 and model.conv1.out_channels == 64
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 10)


def test_class_name_for_configs_returns_the_torchvision_model(tmp_path):
    from kdlab.cli import KDLabCLI

    args = ["--model", "kdlab.DistillationModule", "--data", "kdlab.data.DigitsDataModule"]
    args += ["--model.student", "kdlab.models.imagenet.TorchvisionModel", "--model.student.name", "resnet18"]
    args += ["--model.student.in_channels", "1", "--model.teacher", "kdlab.models.imagenet.MobileNetV1"]
    args += ["--model.teacher.in_channels", "1", "--trainer.default_root_dir", str(tmp_path)]
    cli = KDLabCLI(args=args, run=False)
    student, teacher = cli.model.student, cli.model.teacher
    assert isinstance(student, torchvision.models.ResNet)
    assert student.fc.out_features == teacher.fc.out_features == 10  # linked from data.num_classes
    assert isinstance(TorchvisionModel("mobilenet_v2", num_classes=4), torchvision.models.MobileNetV2)
