"""CIFARDataModule: the official pickle formats, subsets, splits, errors, download, Lightning runs."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import pickle
import tarfile
import threading

import numpy as np
import pytest
import torch
from lightning.pytorch import LightningModule, Trainer

from kdlab.data import CIFARDataModule, cifar_files
from kdlab.data.augment import IDENTITY_VIEW, apply_views, draw_views, normalize

from .datagen import CIFAR10_NAMES, prepared_cifar10, shared_data, write_cifar10, write_cifar100


def _images(rows: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(rows).reshape(-1, 3, 32, 32)


def _collect(loader) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    parts = list(zip(*loader, strict=True))
    return tuple(torch.cat(p) for p in parts)


@pytest.fixture
def cifar10(tmp_path):
    return tmp_path, write_cifar10(tmp_path)


# ----------------------------------------------------------------------------- formats
@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar10_reads_the_official_batches_in_file_order(tmp_path, protocol):
    ref = write_cifar10(tmp_path, protocol=protocol)
    dm = CIFARDataModule("cifar10", root=str(tmp_path), batch_size=16)
    dm.setup()
    images, targets, indices = _collect(dm.test_dataloader())
    assert images.dtype == torch.uint8 and images.shape == (30, 3, 32, 32)
    assert torch.equal(images, _images(ref["test_data"]))
    assert targets.tolist() == ref["test_labels"] and torch.equal(indices, torch.arange(30))
    train = dm.splits["train"]
    assert torch.equal(train.images, _images(ref["train_data"]))
    assert train.targets.tolist() == ref["train_labels"]
    assert dm.label_names == CIFAR10_NAMES


def test_cifar100_fine_and_coarse_labels(tmp_path):
    ref = write_cifar100(tmp_path)
    fine = CIFARDataModule("cifar100", root=str(tmp_path))
    coarse = CIFARDataModule("cifar100", root=str(tmp_path), coarse_labels=True)
    assert (fine.num_classes, coarse.num_classes) == (100, 20)
    fine.setup(), coarse.setup()
    assert fine.splits["train"].targets.tolist() == ref["train_fine"]
    assert coarse.splits["train"].targets.tolist() == [f // 5 for f in ref["train_fine"]]
    assert torch.equal(coarse.splits["test"].images, _images(ref["test_data"]))
    assert coarse.label_names[3] == "coarse03"


def test_num_classes_and_shapes_are_known_without_files(tmp_path):
    missing = str(tmp_path / "nowhere")
    assert CIFARDataModule("cifar10", root=missing).num_classes == 10
    assert CIFARDataModule("cifar100", root=missing).num_classes == 100
    assert CIFARDataModule("cifar100", root=missing, coarse_labels=True).num_classes == 20
    dm = CIFARDataModule("cifar100", root=missing, classes=["apple", "bear", 7])
    assert dm.num_classes == 3 and dm.input_shape == (3, 32, 32) and len(dm.mean) == len(dm.std) == 3


def test_the_pickle_reader_refuses_anything_but_arrays(tmp_path):
    write_cifar10(tmp_path)

    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    with open(tmp_path / "cifar-10-batches-py" / "data_batch_2", "wb") as f:
        pickle.dump({"data": Payload(), "labels": []}, f)
    with pytest.raises(ValueError, match=r"data_batch_2 is not a CIFAR python batch file.*builtins\.print"):
        CIFARDataModule("cifar10", root=str(tmp_path)).setup()


# ----------------------------------------------------------------------------- subsets and splits
def test_classes_by_name_or_id_are_relabelled_in_the_given_order(cifar10):
    root, ref = cifar10
    dm = CIFARDataModule("cifar10", root=str(root), classes=["cat", 1])
    dm.setup()
    labels = np.array(ref["train_labels"])
    train = dm.splits["train"]
    assert torch.equal(train.images, _images(ref["train_data"][(labels == 3) | (labels == 1)]))
    expected = np.where(labels[(labels == 3) | (labels == 1)] == 3, 0, 1)
    assert train.targets.tolist() == expected.tolist()
    test_labels = np.array(ref["test_labels"])
    assert len(dm.splits["test"]) == int(((test_labels == 3) | (test_labels == 1)).sum())
    assert dm.label_names == ["cat", "automobile"]


def test_samples_per_class_and_fraction_are_per_class_and_seeded(cifar10):
    root, _ = cifar10

    def rows(**kwargs):
        dm = CIFARDataModule("cifar10", root=str(root), **kwargs)
        dm.setup()
        return dm.splits["train"]

    five = rows(samples_per_class=5, seed=1)
    assert torch.bincount(five.targets).tolist() == [5] * 10
    assert torch.equal(five.images, rows(samples_per_class=5, seed=1).images)
    assert not torch.equal(five.images, rows(samples_per_class=5, seed=2).images)
    half = rows(train_fraction=0.5, seed=1)
    assert torch.bincount(half.targets).tolist() == [5] * 10
    assert not torch.equal(half.images, rows(train_fraction=0.5, seed=3).images)


def test_validation_is_held_out_per_class_from_train(cifar10):
    root, ref = cifar10
    dm = CIFARDataModule("cifar10", root=str(root), val_fraction=0.2, seed=4)
    dm.setup()
    train, val = dm.splits["train"], dm.splits["val"]
    assert (len(train), len(val)) == (80, 20)
    assert torch.bincount(val.targets).tolist() == [2] * 10
    everything = {row.numpy().tobytes() for row in _images(ref["train_data"])}
    seen_train = {row.numpy().tobytes() for row in train.images}
    seen_val = {row.numpy().tobytes() for row in val.images}
    assert seen_train.isdisjoint(seen_val) and seen_train | seen_val == everything
    no_val = CIFARDataModule("cifar10", root=str(root))
    no_val.setup()
    assert no_val.splits["val"] is no_val.splits["test"]


# ----------------------------------------------------------------------------- errors
def test_missing_files_name_the_layout_and_the_download_option(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"cifar-100-python.*train, test, meta.*download=True"):
        CIFARDataModule("cifar100", root=str(tmp_path)).setup()
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match=r"cifar-10-batches-py.*data_batch_3.*download=True"):
        CIFARDataModule("cifar10", root=str(tmp_path)).setup()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dataset": "cifar1000"}, r"one of \['cifar10', 'cifar100'\]"),
        ({"dataset": "cifar10", "coarse_labels": True}, "needs dataset='cifar100'"),
        ({"val_fraction": 1.0}, r"val_fraction must be in \[0, 1\)"),
        ({"train_fraction": 0.0}, r"train_fraction must be in \(0, 1\]"),
        ({"samples_per_class": 0}, "at least 1"),
        ({"classes": []}, "classes is empty"),
        ({"classes": ["cat", "cat"]}, "twice"),
    ],
)
def test_bad_arguments_fail_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CIFARDataModule(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"classes": ["kat"]}, "unknown class 'kat'; valid names: airplane, automobile"),
        ({"classes": [10]}, "class id 10 is out of range"),
        ({"classes": [3, "cat"]}, "same class twice"),
        ({"samples_per_class": 11}, "samples_per_class=11 but class 'airplane' has only 10"),
        ({"samples_per_class": 1, "val_fraction": 0.5}, "would hold out all 1 training samples"),
    ],
)
def test_impossible_subsets_fail_with_the_reason(cifar10, kwargs, message):
    root, _ = cifar10
    with pytest.raises(ValueError, match=message):
        CIFARDataModule("cifar10", root=str(root), **kwargs).setup()


# ----------------------------------------------------------------------------- download
@pytest.fixture
def local_server(tmp_path):
    """An HTTP server on localhost serving ``tmp_path / "served"`` (no outside network)."""
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(QuietHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    thread.join()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def _archive(tmp_path, local_server, monkeypatch, md5: str | None = None):
    served, url = local_server
    source = tmp_path / "source"
    write_cifar10(source)
    archive = served / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    digest = md5 or hashlib.md5(archive.read_bytes()).hexdigest()
    local = dataclasses.replace(cifar_files.FORMATS["cifar10"], url=f"{url}/{archive.name}", md5=digest)
    monkeypatch.setitem(cifar_files.FORMATS, "cifar10", local)


def test_download_fetches_checks_and_extracts_the_archive(tmp_path, local_server, monkeypatch):
    _archive(tmp_path, local_server, monkeypatch)
    root = tmp_path / "data"
    dm = CIFARDataModule("cifar10", root=str(root), download=True)
    dm.prepare_data()
    dm.setup()
    assert len(dm.splits["train"]) == 100 and (root / "cifar-10-batches-py" / "batches.meta").is_file()


def test_download_rejects_an_archive_with_the_wrong_md5(tmp_path, local_server, monkeypatch):
    _archive(tmp_path, local_server, monkeypatch, md5="0" * 32)
    with pytest.raises(RuntimeError, match="corrupted"):
        CIFARDataModule("cifar10", root=str(tmp_path / "data"), download=True).prepare_data()


# ----------------------------------------------------------------------------- in a Trainer
class _Recorder(LightningModule):
    """A linear classifier that records every batch it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(3 * 32 * 32, 10)
        self.train_batches: list[tuple] = []
        self.val_batches: list[tuple] = []

    def training_step(self, batch, batch_idx):
        self.train_batches.append((self.current_epoch, *[t.clone() for t in batch]))
        return torch.nn.functional.cross_entropy(self.fc(batch[0].flatten(1)), batch[1])

    def validation_step(self, batch, batch_idx):
        self.val_batches.append(tuple(t.clone() for t in batch))

    def predict_step(self, batch, batch_idx):
        return batch[2]

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_training_batches_carry_hashed_views_and_reshuffle_every_epoch(cifar10, trainer_kwargs):
    root, ref = cifar10
    dm = CIFARDataModule("cifar10", root=str(root), batch_size=16, seed=3)
    model = _Recorder()
    Trainer(max_epochs=2, num_sanity_val_steps=0, **trainer_kwargs).fit(model, dm)
    source = _images(ref["train_data"])
    orders = []
    for epoch in (0, 1):
        batches = [b for b in model.train_batches if b[0] == epoch]
        images, targets, indices, views = (torch.cat(p) for p in list(zip(*batches, strict=True))[1:])
        assert images.dtype == torch.float32 and views.dtype == torch.int64
        assert sorted(indices.tolist()) == list(range(100))
        assert targets.tolist() == [ref["train_labels"][i] for i in indices]
        assert torch.equal(views, draw_views(indices, epoch, seed=3))
        assert torch.equal(images, apply_views(source[indices], views, dm.mean, dm.std))
        orders.append(indices)
    assert not torch.equal(orders[0], orders[1])
    val = model.val_batches
    assert all(len(b) == 3 for b in val) and val[0][0].dtype == torch.float32
    assert torch.equal(val[0][0], normalize(_images(ref["test_data"])[:16], dm.mean, dm.std))
    predicted = torch.cat(Trainer(**trainer_kwargs).predict(model, dm))
    assert torch.equal(predicted, torch.arange(30))


def test_augment_false_gives_the_identity_view(cifar10):
    root, ref = cifar10
    dm = CIFARDataModule("cifar10", root=str(root), augment=False)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    images, _, indices, views = dm.augment_batch(batch, epoch=5)
    assert (views == IDENTITY_VIEW).all()
    assert torch.equal(images, normalize(_images(ref["train_data"])[indices], dm.mean, dm.std))


def test_teacher_and_student_see_the_same_augmented_view(cifar10, trainer_kwargs):
    from kdlab.losses import KD
    from kdlab.models.small import ConvNet
    from kdlab.module import DistillationModule

    root, _ = cifar10
    student, teacher = ConvNet(in_channels=3, width=4), ConvNet(in_channels=3, width=8)
    seen: dict[str, list[torch.Tensor]] = {"student": [], "teacher": []}
    for name, net in (("student", student), ("teacher", teacher)):
        # Batches of 32 only: the module also probes each network once with 2 zero images at set-up.
        net.register_forward_pre_hook(
            lambda _m, args, name=name: seen[name].append(args[0].clone()) if len(args[0]) == 32 else None
        )
    module = DistillationModule(student, teacher, distillers=[KD()])
    dm = CIFARDataModule("cifar10", root=str(root), batch_size=32)
    trainer = Trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=0, **trainer_kwargs)
    trainer.fit(module, dm)
    assert len(seen["student"]) == len(seen["teacher"]) == 2
    for s, t in zip(seen["student"], seen["teacher"], strict=True):
        assert torch.equal(s, t) and s.dtype == torch.float32


# ----------------------------------------------------------------------------- the real CIFAR-10
@pytest.fixture(scope="session")
def real_cifar10(tmp_path_factory):
    if shared_data() is None:
        pytest.skip("the bundled CIFAR-10 (shared/data) is absent")
    return prepared_cifar10(tmp_path_factory)


@pytest.mark.realdata
def test_real_cifar10_has_50000_and_10000_images_with_the_files_labels(real_cifar10):
    folder = real_cifar10 / "cifar-10-batches-py"
    labels = []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "rb") as f:
            labels.append(pickle.load(f)["labels"])
    dm = CIFARDataModule("cifar10", root=str(real_cifar10), batch_size=500)
    dm.setup()
    assert (len(dm.splits["train"]), len(dm.splits["test"])) == (50_000, 10_000)
    assert dm.splits["train"].targets.tolist() == [label for batch in labels[:5] for label in batch]
    assert dm.splits["test"].targets.tolist() == labels[5]
    assert torch.bincount(dm.splits["train"].targets).tolist() == [5000] * 10
    assert dm.label_names == CIFAR10_NAMES
