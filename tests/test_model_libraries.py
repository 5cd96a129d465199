"""timm and Hugging Face transformers models as teachers and students: real libraries, small
randomly initialised models written to disk, never a download."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from kdlab import DistillationModule
from kdlab.errors import ConfigurationError
from kdlab.losses import FitNet
from kdlab.models import HuggingFaceClassifier, TimmModel
from kdlab.models.cifar import resnet8
from kdlab.taps import TapError, tokens_to_map

from .datagen import write_cifar10
from .kdlab_runs import QUIET, run

timm = pytest.importorskip("timm")
transformers = pytest.importorskip("transformers")

CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def probe_features(module: DistillationModule, inputs: torch.Tensor) -> dict[str, torch.Tensor]:
    """The teacher features the module's distillers tap, for ``inputs``."""
    module.taps.attach({"student": module.student, "teacher": module.teacher}, module.distillers.values())
    return module.probe(inputs)[1].features


def tiny_vit(folder: Path, labels: list[str], name: str = "vit") -> Path:
    """A 32×32, 4-layer Hugging Face ViT saved with save_pretrained, labelled with ``labels``."""
    config = transformers.ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    torch.manual_seed(0)
    path = folder / name
    transformers.ViTForImageClassification(config).save_pretrained(path)
    return path


# ----------------------------------------------------------------------------- timm
def test_timm_cnn_aliases_come_from_its_feature_info_and_tap_the_named_stages():
    model = TimmModel("test_resnet", num_classes=10)
    points = model.feature_points
    assert points["stem"] == "act1" and [points[f"stage{k}"] for k in range(1, 5)] == [
        "layer1",
        "layer2",
        "layer3",
        "layer4",
    ]
    assert points["logits"] == "fc" and points["embedding"] == "fc:input"
    channels = [entry["num_chs"] for entry in model.feature_info][1:]
    fitnet = FitNet(student_taps=["stage2"], teacher_taps=["stage2"])
    module = DistillationModule(resnet8(num_classes=10), model, distillers=[fitnet])
    features = probe_features(module, torch.randn(2, 3, 32, 32))
    assert features["stage2"].shape == (2, channels[1], 4, 4)  # layer2: stride 8


def test_timm_vit_stages_are_token_maps_of_four_equal_groups_of_blocks():
    model = TimmModel("test_vit", num_classes=10, options={"img_size": 32, "patch_size": 8})
    assert model.token_prefix == 1
    assert [model.feature_points[f"stage{k}"] for k in range(1, 5)] == [
        "blocks.0:map",
        "blocks.2:map",
        "blocks.3:map",
        "blocks.5:map",
    ]
    captured = {}
    model.blocks[5].register_forward_hook(lambda m, a, out: captured.setdefault("tokens", out))
    fitnet = FitNet(student_taps=["stage3"], teacher_taps=["stage4"])
    module = DistillationModule(resnet8(num_classes=10), model, distillers=[fitnet])
    features = probe_features(module, torch.randn(2, 3, 32, 32))
    tokens = captured["tokens"]  # (2, 1 + 16, 64)
    assert features["stage4"].shape == (2, tokens.shape[-1], 4, 4)
    torch.testing.assert_close(features["stage4"][1, :, 2, 3], tokens[1, 1 + 2 * 4 + 3])


def test_tokens_to_map_refuses_tokens_that_fill_no_square_grid():
    with pytest.raises(TapError, match="square grid; set the model's token_prefix"):
        tokens_to_map(torch.zeros(2, 17, 8), prefix=0)
    with pytest.raises(TapError, match=r"expects tokens \(B, N, C\)"):
        tokens_to_map(torch.zeros(2, 8, 4, 4), prefix=1)


def test_timm_weights_load_strictly_and_a_wrong_file_names_the_mismatch(tmp_path):
    torch.manual_seed(3)
    source = TimmModel("test_convnext", num_classes=10)
    save_file(source.state_dict(), str(tmp_path / "convnext.safetensors"))
    loaded = TimmModel("test_convnext", num_classes=10, weights=str(tmp_path / "convnext.safetensors"))
    inputs = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(loaded.eval()(inputs), source.eval()(inputs))
    with pytest.raises(
        ValueError, match=r"do not fit .*head\.fc\.weight: file \(10, 64\) vs model \(5, 64\)"
    ):
        TimmModel("test_convnext", num_classes=5, weights=str(tmp_path / "convnext.safetensors"))
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        TimmModel("test_convnext", weights=str(tmp_path / "missing.safetensors"))
    with pytest.raises(ValueError, match="timm has no model 'resnet_999'"):
        TimmModel("resnet_999")


def hub_cache(root: Path, repo: str, weights: dict) -> Path:
    """The Hugging Face cache layout (``models--org--name/{refs,snapshots}``) holding ``weights``."""
    folder = root / f"models--{repo.replace('/', '--')}"
    snapshot = folder / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text("0" * 40)
    save_file(weights, str(snapshot / "model.safetensors"))
    return root


def test_timm_pretrained_weights_come_from_the_local_cache_with_a_new_head(tmp_path, monkeypatch):
    torch.manual_seed(4)
    published = TimmModel("test_resnet", num_classes=1000).state_dict()  # as timm publishes them
    repo = timm.models.get_pretrained_cfg("test_resnet").hf_hub_id
    monkeypatch.setenv("HF_HUB_CACHE", str(hub_cache(tmp_path / "hub", repo, published)))
    model = TimmModel("test_resnet", num_classes=10, pretrained=True)
    state = model.state_dict()
    torch.testing.assert_close(state["layer3.0.conv1.weight"], published["layer3.0.conv1.weight"])
    assert state["fc.weight"].shape == (10, published["fc.weight"].shape[1])  # a new classifier
    assert not hasattr(model, "class_names")  # a new classifier predicts no known classes
    assert model.input_normalization == {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
    from_file = TimmModel(
        "test_resnet", num_classes=1000, pretrained=str(next((tmp_path / "hub").rglob("*.safetensors")))
    )
    torch.testing.assert_close(from_file.state_dict()["fc.weight"], published["fc.weight"])
    assert len(from_file.class_names) == 1000 and from_file.class_names[0] == "n01440764"  # ImageNet wnids
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match=r"not in the local cache .*timm.create_model\('test_vit'"):
        TimmModel("test_vit", pretrained=True)


# ----------------------------------------------------------------------------- transformers
def test_huggingface_classifier_returns_the_models_logits_with_its_labels_and_stages(tmp_path):
    path = tiny_vit(tmp_path, CIFAR10)
    model = HuggingFaceClassifier(str(path), num_classes=10).eval()
    reference = transformers.AutoModelForImageClassification.from_pretrained(path).eval()
    inputs = torch.randn(3, 3, 32, 32)
    torch.testing.assert_close(model(inputs), reference(pixel_values=inputs).logits)
    assert model.class_names == CIFAR10 and model.num_classes == 10 and model.token_prefix == 1
    assert model.feature_points["stage4"] == "model.vit.layers.3:map"
    fitnet = FitNet(student_taps=["stage3"], teacher_taps=["stage2"])
    module = DistillationModule(resnet8(num_classes=10), model, distillers=[fitnet])
    assert probe_features(module, inputs)["stage2"].shape == (3, 32, 4, 4)


def test_a_teacher_expecting_other_input_statistics_is_warned_about(tmp_path, recwarn):
    path = tiny_vit(tmp_path, CIFAR10)
    transformers.ViTImageProcessor(image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(path)
    teacher = HuggingFaceClassifier(str(path), num_classes=10)
    assert teacher.input_normalization == {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
    args = ["--model.teacher=kdlab.models.HuggingFaceClassifier", f"--model.teacher.path={path}"]
    code, stderr = run(cifar_fit_args(tmp_path, args))
    assert code == 0, stderr
    warned = [str(w.message) for w in recwarn] + [stderr]  # pytest captures warnings, if enabled
    expected = "the teacher's pretrained weights expect inputs normalised with mean [0.5, 0.5, 0.5]"
    assert any(
        expected in text and "the data normalises with mean [0.4914, 0.4822, 0.4465]" in text
        for text in warned
    )


def test_huggingface_classifier_errors_say_what_is_wrong(tmp_path):
    path = tiny_vit(tmp_path, CIFAR10)
    with pytest.raises(ValueError, match="predicts 10 classes but the data has 100; fine-tune"):
        HuggingFaceClassifier(str(path), num_classes=100)
    fresh = HuggingFaceClassifier(str(path), num_classes=100, new_head=True)
    assert fresh(torch.randn(1, 3, 32, 32)).shape == (1, 100) and fresh.class_names is None
    with pytest.raises(FileNotFoundError, match=r"no folder at .*never downloads"):
        HuggingFaceClassifier(str(tmp_path / "nowhere"))
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text(json.dumps({"model_type": "vit"}))
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x02")
    with pytest.raises(FileNotFoundError, match=r"pytorch_model\.bin, pickled files kdlab does not load"):
        HuggingFaceClassifier(str(pickled))


# ----------------------------------------------------------------------------- class names
def cifar_fit_args(tmp_path: Path, teacher: list[str]) -> list[str]:
    data = tmp_path / "cifar"
    if not data.is_dir():
        write_cifar10(data, per_batch=8, test=20)
    return [
        "--seed_everything=0",
        "--model=kdlab.DistillationModule",
        "--model.student=kdlab.models.cifar.resnet8",
        *teacher,
        "--model.distillers+=kdlab.losses.KD",
        "--data=kdlab.data.CIFARDataModule",
        "--data.dataset=cifar10",
        f"--data.root={data}",
        "--data.batch_size=16",
        "--trainer.max_epochs=1",
        f"--trainer.default_root_dir={tmp_path / 'run'}",
        *QUIET,
    ]


def test_a_vit_teacher_distils_into_a_cnn_from_the_command_line(tmp_path):
    teacher = [
        "--model.teacher=kdlab.models.HuggingFaceClassifier",
        f"--model.teacher.path={tiny_vit(tmp_path, CIFAR10)}",
    ]
    code, stderr = run(cifar_fit_args(tmp_path, teacher))
    assert code == 0, stderr
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()


def test_a_teacher_with_the_classes_in_another_order_is_refused_at_set_up(tmp_path):
    shuffled = CIFAR10[1:] + CIFAR10[:1]
    teacher = [
        "--model.teacher=kdlab.models.HuggingFaceClassifier",
        f"--model.teacher.path={tiny_vit(tmp_path, shuffled)}",
    ]
    code, stderr = run(cifar_fit_args(tmp_path, teacher))
    assert code != 0
    assert "its label 0 is 'automobile', the data's is 'airplane'" in stderr


def test_a_kdlab_checkpoint_remembers_its_classes_and_checks_them_against_the_next_data(tmp_path):
    teacher_run = [a for a in cifar_fit_args(tmp_path, []) if a != "--model.distillers+=kdlab.losses.KD"]
    assert run(teacher_run)[0] == 0  # a teacher trained on CIFAR-10's classes in their order
    checkpoint = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert torch.load(checkpoint, weights_only=True)["class_names"] == CIFAR10
    teacher = ["--model.teacher=kdlab.models.cifar.resnet8", f"--model.teacher_weights={checkpoint}"]
    reordered = "--data.classes=[cat,dog,airplane,automobile,bird,deer,frog,horse,ship,truck]"
    kd_run = [*cifar_fit_args(tmp_path, teacher), reordered, f"--trainer.default_root_dir={tmp_path / 'kd'}"]
    code, stderr = run(kd_run)
    assert code != 0 and "its label 0 is 'airplane', the data's is 'cat'" in stderr
    assert not (tmp_path / "kd" / "checkpoints").exists()


def test_data_and_model_class_sets_that_differ_are_named():
    from kdlab.checks import check_class_names

    teacher = torch.nn.Linear(2, 3)
    teacher.class_names = ["a", "b", "c"]
    with pytest.raises(ConfigurationError, match=r"only the teacher has \['c'\], only the data has \['d'\]"):
        check_class_names({"teacher": teacher}, ["a", "b", "d"])
    check_class_names({"teacher": teacher, "student": None}, ["a", "b", "c"])
    check_class_names({"teacher": teacher}, None)
