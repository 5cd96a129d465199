"""Safe teacher loading: formats, wrapper prefixes, refused pickles, corrupt files, fingerprints."""

from __future__ import annotations

import os
import pickle

import pytest
import torch
from safetensors.torch import save_file

from kdlab.errors import TeacherLoadError
from kdlab.models import ConvNet
from kdlab.teacher import file_sha256, load_teacher_weights, read_state_dict, state_sha256


@pytest.fixture
def source():
    torch.manual_seed(0)
    return ConvNet(width=4)


def _assert_same(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for (key, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), key


@pytest.mark.parametrize(
    ("name", "wrap"),
    [
        ("plain.safetensors", lambda sd: sd),
        ("plain.pt", lambda sd: sd),
        ("ddp.pth", lambda sd: {f"module.{k}": v for k, v in sd.items()}),
        ("compiled.pt", lambda sd: {f"_orig_mod.{k}": v for k, v in sd.items()}),
        ("wrapped.pt", lambda sd: {f"model.module.{k}": v for k, v in sd.items()}),
        ("lightning.ckpt", lambda sd: {"state_dict": {f"model.{k}": v for k, v in sd.items()}, "epoch": 3}),
        (
            "kdlab.ckpt",
            lambda sd: {
                "state_dict": {**{f"student.{k}": v for k, v in sd.items()}, "distillers.x.w": torch.ones(1)}
            },
        ),
    ],
)
def test_formats_and_prefixes_load(tmp_path, source, name, wrap):
    path = tmp_path / name
    if name.endswith(".safetensors"):
        save_file(wrap(source.state_dict()), str(path))
    else:
        torch.save(wrap(source.state_dict()), path)
    target = ConvNet(width=4)
    digest = load_teacher_weights(target, path)
    _assert_same(source, target)
    assert digest == file_sha256(path)


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch /tmp/kdlab-pwned-marker",))


def test_pickle_that_would_run_code_is_refused_and_never_runs(tmp_path, source):
    marker = "/tmp/kdlab-pwned-marker"
    if os.path.exists(marker):
        os.remove(marker)
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": source.state_dict(), "x": _Payload()}, path)
    with pytest.raises(TeacherLoadError, match="refused to load"):
        load_teacher_weights(ConvNet(width=4), path)
    raw = tmp_path / "evil.pkl"
    raw.write_bytes(pickle.dumps(_Payload()))
    with pytest.raises(TeacherLoadError):
        read_state_dict(raw)
    assert not os.path.exists(marker), "the pickled code ran"


def test_truncated_and_garbage_files_are_clear_errors(tmp_path, source):
    good = tmp_path / "good.pt"
    torch.save(source.state_dict(), good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(TeacherLoadError, match="corrupt, truncated"):
        read_state_dict(truncated)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00\x01 not a tensor file")
    with pytest.raises(TeacherLoadError, match="corrupt, truncated"):
        read_state_dict(garbage)
    not_state = tmp_path / "list.pt"
    torch.save([1, 2, 3], not_state)
    with pytest.raises(TeacherLoadError, match="holds no state dict"):
        read_state_dict(not_state)


def test_missing_file_and_architecture_mismatch(tmp_path, source):
    with pytest.raises(TeacherLoadError, match="no file at"):
        read_state_dict(tmp_path / "absent.safetensors")
    path = tmp_path / "wide.safetensors"
    save_file(ConvNet(width=8).state_dict(), str(path))
    with pytest.raises(
        TeacherLoadError, match=r"layer1\.0\.weight: file \(8, 1, 3, 3\) vs model \(4, 1, 3, 3\)"
    ):
        load_teacher_weights(ConvNet(width=4), path)


def test_state_fingerprint_tracks_values(source):
    copy = ConvNet(width=4)
    copy.load_state_dict(source.state_dict())
    assert state_sha256(copy) == state_sha256(source)
    with torch.no_grad():
        copy.fc.bias[0] += 1e-6
    assert state_sha256(copy) != state_sha256(source)


def test_a_network_whose_own_attribute_is_model_keeps_its_names(tmp_path):
    """Wrapper prefixes are stripped only as far as the network needs: MobileNetV1 keeps ``model.``."""
    from kdlab.models import MobileNetV1

    torch.manual_seed(0)
    network = MobileNetV1(num_classes=10)
    state = {f"student.{k}": v for k, v in network.state_dict().items()}  # a kdlab run's checkpoint
    torch.save({"state_dict": state, "epoch": 1}, tmp_path / "run.ckpt")
    fresh = MobileNetV1(num_classes=10)
    load_teacher_weights(fresh, tmp_path / "run.ckpt")
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in network.state_dict().items())
