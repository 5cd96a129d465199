"""``kdlab export``: a checkpoint's student as safetensors / TorchScript / ONNX, reloaded without kdlab."""

from __future__ import annotations

import importlib.util
import json
import sys
from contextlib import contextmanager

import pytest
import torch
from lightning.pytorch import Trainer
from safetensors import safe_open
from safetensors.torch import load_file

from kdlab import DistillationModule
from kdlab.cli import main as kdlab_main
from kdlab.data import DigitsDataModule
from kdlab.models.cifar import resnet8

STUDENT = {"class_path": "kdlab.models.cifar.resnet8", "init_args": {"num_classes": 10, "in_channels": 1}}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A real checkpoint of `kdlab fit`: CIFAR resnet8 (1 channel) distilled from a ConvNet on the digits."""
    root = tmp_path_factory.mktemp("fit")
    args = """fit --model kdlab.DistillationModule --data kdlab.data.DigitsDataModule
        --model.student kdlab.models.cifar.resnet8 --model.student.in_channels 1
        --model.teacher kdlab.models.ConvNet --model.teacher.width 8
        --model.distillers+=kdlab.losses.KD --seed_everything 0
        --trainer.max_epochs 1 --trainer.limit_train_batches 2 --trainer.limit_val_batches 1
        --trainer.enable_progress_bar false --trainer.enable_model_summary false"""
    kdlab_main([*args.split(), "--trainer.default_root_dir", str(root)])
    return root / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def reference(checkpoint):
    """The checkpointed student and a digits batch, through the student's plain state dict."""
    state = torch.load(checkpoint, weights_only=True)["state_dict"]
    model = resnet8(num_classes=10, in_channels=1)
    model.load_state_dict({k[len("student.") :]: v for k, v in state.items() if k.startswith("student.")})
    data = DigitsDataModule()
    data.setup()
    images = data.splits["test"].tensors[0][:5]  # batch 5: the export traced batch 2
    with torch.no_grad():
        return images, model.eval()(images)


def _export(*args: str) -> int:
    return kdlab_main(["export", *args])


@contextmanager
def _without_kdlab(monkeypatch):
    """Within the block, importing any kdlab module fails: loaders must not need kdlab."""
    with monkeypatch.context() as patch:
        for name in [n for n in sys.modules if n == "kdlab" or n.startswith("kdlab.")]:
            patch.setitem(sys.modules, name, None)
        yield


def test_safetensors_round_trip(checkpoint, reference, tmp_path):
    images, expected = reference
    output = tmp_path / "student.safetensors"
    assert _export("--ckpt", str(checkpoint), "--format", "safetensors", "--output", str(output)) == 0
    with safe_open(str(output), "pt") as handle:
        assert json.loads(handle.metadata()["kdlab_student"]) == STUDENT
    model = resnet8(num_classes=10, in_channels=1)
    model.load_state_dict(load_file(str(output)), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(images), expected)


def test_torchscript_round_trip(checkpoint, reference, tmp_path, monkeypatch):
    images, expected = reference
    output = tmp_path / "student.pt"
    assert _export("--ckpt", str(checkpoint), "--format", "torchscript", "--output", str(output)) == 0
    with _without_kdlab(monkeypatch), torch.no_grad():
        torch.testing.assert_close(torch.jit.load(str(output))(images), expected)


def test_onnx_round_trip(checkpoint, reference, tmp_path, monkeypatch):
    import numpy as np
    import onnx

    images, expected = reference
    output = tmp_path / "student.onnx"
    assert _export("--ckpt", str(checkpoint), "--format", "onnx", "--output", str(output)) == 0
    with _without_kdlab(monkeypatch):
        graph = onnx.load(str(output))
        onnx.checker.check_model(graph, full_check=True)
        if importlib.util.find_spec("onnxruntime"):
            import onnxruntime

            session = onnxruntime.InferenceSession(str(output), providers=["CPUExecutionProvider"])
            (logits,) = session.run(None, {"input": images.numpy()})
        else:
            from onnx.reference import ReferenceEvaluator

            (logits,) = ReferenceEvaluator(graph).run(None, {"input": images.numpy()})
    np.testing.assert_allclose(logits, expected.numpy(), rtol=1e-4, atol=1e-4)


def test_checkpoint_without_config_asks_for_student(tmp_path, trainer_kwargs, capsys):
    trainer = Trainer(max_epochs=1, limit_train_batches=1, limit_val_batches=0, **trainer_kwargs)
    trainer.fit(DistillationModule(resnet8(num_classes=10, in_channels=1)), DigitsDataModule())
    path = tmp_path / "python.ckpt"
    trainer.save_checkpoint(path)
    safetensors = [
        "--ckpt",
        str(path),
        "--format",
        "safetensors",
        "--output",
        str(tmp_path / "s.safetensors"),
    ]
    assert _export(*safetensors) == 1
    assert "Pass it with --student" in capsys.readouterr().err
    assert _export(*safetensors, "--student", json.dumps(STUDENT)) == 0
    wrong = "{class_path: kdlab.models.cifar.resnet8, init_args: {in_channels: 1}}"  # 100 classes
    assert _export(*safetensors, "--student", wrong) == 1
    assert "do not fit kdlab.models.cifar.resnet8" in capsys.readouterr().err
    # No datamodule class in a Python-built checkpoint: tracing formats need the shape.
    torchscript = ["--ckpt", str(path), "--format", "torchscript", "--output", str(tmp_path / "s.pt")]
    assert _export(*torchscript, "--student", json.dumps(STUDENT)) == 1
    assert "--input-shape" in capsys.readouterr().err
    assert _export(*torchscript, "--student", json.dumps(STUDENT), "--input-shape", "1,8,8") == 0


def test_missing_optional_dependency_names_the_package(checkpoint, tmp_path, monkeypatch, capsys):
    find_spec = importlib.util.find_spec
    hidden = lambda name, *args: None if name == "onnx" else find_spec(name, *args)  # noqa: E731
    monkeypatch.setattr(importlib.util, "find_spec", hidden)
    assert _export("--ckpt", str(checkpoint), "--format", "onnx", "--output", str(tmp_path / "s.onnx")) == 1
    assert "pip install onnx" in capsys.readouterr().err


def test_bad_checkpoint_is_explained(tmp_path, capsys):
    path = tmp_path / "bad.ckpt"
    path.write_bytes(b"not a checkpoint")
    assert _export("--ckpt", str(path), "--format", "onnx", "--output", str(tmp_path / "s.onnx")) == 1
    assert "cannot read" in capsys.readouterr().err


def test_wrong_input_shape_is_explained(checkpoint, tmp_path, capsys):
    args = ["--ckpt", str(checkpoint), "--output", str(tmp_path / "s.out"), "--input-shape", "3,8,8"]
    assert _export(*args, "--format", "torchscript") == 1
    assert _export(*args, "--format", "onnx") == 1
    err = capsys.readouterr().err
    assert err.count("the student does not run on inputs of shape (3, 8, 8)") == 2
    assert "expected input[2, 3, 8, 8] to have 1 channels" in err
