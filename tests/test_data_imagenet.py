"""ImageNetDataModule: ImageFolder trees, class presets, damaged files, transforms, Lightning runs."""

from __future__ import annotations

import io
import random
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch import LightningModule, Trainer
from PIL import Image
from torchvision.io import decode_jpeg
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from kdlab.data import ImageNetDataModule
from kdlab.data.image_transforms import RandomResizedCropFlip, resize
from kdlab.data.imagenet_classes import IMAGENET100, IMAGENETTE, PRESETS

from .datagen import CIFAR10_NAMES, jpeg_bytes, prepared_cifar10, shared_data, write_image_tree

CLASSES = ["n0003", "n0001", "n0002"]


@pytest.fixture
def tree(tmp_path):
    write_image_tree(tmp_path, CLASSES, per_class=5)
    return tmp_path


def _module(root, **kwargs) -> ImageNetDataModule:
    kwargs = {"image_size": 24, "batch_size": 4, "num_workers": 0, **kwargs}
    return ImageNetDataModule(str(root), **kwargs)


def _labels_match_folders(dm: ImageNetDataModule, split: str) -> list[int]:
    dataset = dm.splits[split]
    seen = []
    for images, targets, indices in dm._loader(split, shuffle=True):
        assert images.dtype == torch.uint8 and images.shape[1:] == (3, 24, 24)
        for target, index in zip(targets.tolist(), indices.tolist(), strict=True):
            assert Path(dataset.files[index]).parent.name == dm.class_names[target]
            seen.append(index)
    return seen


# ----------------------------------------------------------------------------- layout and classes
def test_classes_default_to_the_sorted_train_folders_and_labels_follow_folders(tree):
    dm = _module(tree)
    assert dm.class_names == sorted(CLASSES) and dm.num_classes == 3 and dm.input_shape == (3, 24, 24)
    dm.setup()
    assert sorted(_labels_match_folders(dm, "train")) == list(range(15))
    assert sorted(_labels_match_folders(dm, "test")) == list(range(15))
    assert dm.splits["val"] is dm.splits["test"]


def test_classes_from_a_list_a_file_or_a_preset(tree, tmp_path):
    listed = _module(tree, classes=["n0002", "n0003"])
    assert listed.class_names == ["n0002", "n0003"] and listed.num_classes == 2
    listed.setup()
    assert len(listed.splits["train"]) == 10
    _labels_match_folders(listed, "train")
    names = tmp_path / "classes.txt"
    names.write_text("# my subset\nn0001\n\nn0003  # second\n")
    assert _module(tree, classes=str(names)).class_names == ["n0001", "n0003"]
    write_image_tree(tmp_path / "nette", IMAGENETTE, per_class=1)
    nette = _module(tmp_path / "nette", classes="imagenette")
    assert nette.num_classes == 10
    nette.setup()
    assert len(nette.splits["train"]) == 10


def test_the_presets_are_the_published_class_lists():
    assert len(IMAGENETTE) == len(set(IMAGENETTE)) == 10 and "n03888257" in IMAGENETTE
    assert len(IMAGENET100) == len(set(IMAGENET100)) == 100
    assert all(re.fullmatch(r"n\d{8}", wnid) for wnid in IMAGENET100 + IMAGENETTE)
    assert IMAGENET100[:3] == ["n02869837", "n01749939", "n02488291"] and IMAGENET100[-1] == "n02090622"
    assert set(PRESETS) == {"imagenette", "imagenet100"}


def test_extensions_are_matched_in_any_case_and_other_files_ignored(tmp_path):
    folder = tmp_path / "train" / "a"
    folder.mkdir(parents=True)
    for i, name in enumerate(["x.jpg", "y.JPEG", "z.Jpeg"]):
        (folder / name).write_bytes(jpeg_bytes(i))
    buffer = io.BytesIO()
    Image.new("RGB", (20, 20), (255, 0, 0)).save(buffer, format="PNG")
    (folder / "w.png").write_bytes(buffer.getvalue())
    (folder / "notes.txt").write_text("not an image")
    (tmp_path / "val" / "a").mkdir(parents=True)
    (tmp_path / "val" / "a" / "v.jpg").write_bytes(jpeg_bytes(9))
    dm = _module(tmp_path)
    dm.setup()
    assert sorted(Path(f).name for f in dm.splits["train"].files) == ["w.png", "x.jpg", "y.JPEG", "z.Jpeg"]
    images, _, _ = dm.splits["train"][[0, 1, 2, 3]]
    assert images.shape == (4, 3, 24, 24)


def test_images_per_class_is_a_seeded_per_class_subset(tree):
    def files(seed: int, count: int) -> list[str]:
        dm = _module(tree, images_per_class=count, seed=seed)
        dm.setup()
        return dm.splits["train"].files

    assert len(files(0, 2)) == 6 and files(0, 2) == files(0, 2)
    assert any(files(s, 2) != files(0, 2) for s in (1, 2, 3))
    assert len(files(0, 50)) == 15  # classes with fewer images keep them all


def test_validation_is_held_out_from_train(tree):
    dm = _module(tree, val_fraction=0.4)
    dm.setup()
    train, val = set(dm.splits["train"].files), set(dm.splits["val"].files)
    assert (len(train), len(val)) == (9, 6) and train.isdisjoint(val)
    assert torch.bincount(dm.splits["val"].targets).tolist() == [2, 2, 2]


# ----------------------------------------------------------------------------- errors
def test_missing_root_split_class_and_empty_class_are_clear_errors(tree, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"does not exist.*train,val.*image-net\.org"):
        _module(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"train is missing.*image-net\.org"):
        _module(tree / "train" / "n0001")
    with pytest.raises(
        ValueError, match=r"neither a preset \(imagenette, imagenet100\) nor an existing file"
    ):
        _module(tree, classes="imagenet1k")
    with pytest.raises(ValueError, match="more than once: n0001"):
        _module(tree, classes=["n0001", "n0001"])
    with pytest.raises(FileNotFoundError, match=r"class folder .*train/n0009 is missing.*<class>"):
        _module(tree, classes=["n0001", "n0009"]).setup()
    (tree / "train" / "n0004").mkdir()
    with pytest.raises(ValueError, match=r"class folder .*n0004 holds no images"):
        _module(tree).setup()
    (tree / "train" / "n0004").rmdir()
    for path in (tree / "val").rglob("*.JPEG"):
        path.unlink()
    for folder in sorted((tree / "val").iterdir()):
        folder.rmdir()
    (tree / "val").rmdir()
    with pytest.raises(FileNotFoundError, match=r"split folder .*val is missing"):
        _module(tree).setup()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"images_per_class": 0}, "at least 1"),
        ({"image_size": 0}, "positive"),
        ({"val_fraction": 1.5}, r"\[0, 1\)"),
        ({"eval_crop_ratio": 0}, r"\(0, 1\]"),
    ],
)
def test_bad_arguments_fail_at_construction(tree, kwargs, message):
    with pytest.raises(ValueError, match=message):
        _module(tree, **kwargs)


# ----------------------------------------------------------------------------- damaged files
def test_damaged_files_are_left_out_counted_and_reported_once(tree):
    bad = {
        tree / "train" / "n0001" / "empty.JPEG": b"",
        tree / "train" / "n0002" / "cut.JPEG": jpeg_bytes(5)[:200],
        tree / "val" / "n0003" / "text.JPEG": b"this is not an image at all",
    }
    for path, data in bad.items():
        path.write_bytes(data)
    trailing = tree / "train" / "n0003" / "trailing.JPEG"
    trailing.write_bytes(jpeg_bytes(6) + b"camera metadata after the end marker")
    buffer = io.BytesIO()
    Image.new("RGB", (20, 20), (0, 255, 0)).save(buffer, format="PNG")
    (tree / "train" / "n0003" / "really_a_png.JPEG").write_bytes(buffer.getvalue())
    dm = _module(tree)
    with pytest.warns(UserWarning, match="left out 3 damaged image file") as record:
        dm.setup()
    assert len([w for w in record if "damaged" in str(w.message)]) == 1
    assert set(dm.skipped_files) == {str(p) for p in bad}
    assert "truncated" in dm.skipped_files[str(tree / "train" / "n0002" / "cut.JPEG")]
    assert len(dm.splits["train"]) == 17 and len(dm.splits["test"]) == 15
    assert str(trailing) in dm.splits["train"].files
    assert sorted(_labels_match_folders(dm, "train")) == list(range(17))


def test_a_file_that_fails_only_when_decoded_is_dropped_from_its_batch(tree):
    # Valid start and end markers pass the cheap screen; the body does not decode.
    broken = tree / "train" / "n0001" / "n0001_9.JPEG"
    broken.write_bytes(b"\xff\xd8\xff" + bytes(range(256)) * 2 + b"\xff\xd9")
    dm = _module(tree)
    dm.setup()
    position = dm.splits["train"].files.index(str(broken))
    with pytest.warns(UserWarning, match=r"failed to decode: .*n0001_9\.JPEG"):
        images, targets, indices = dm.splits["train"][[position - 1, position, position + 1]]
    assert indices.tolist() == [position - 1, position + 1] and len(images) == len(targets) == 2
    assert targets.tolist() == dm.splits["train"].targets[[position - 1, position + 1]].tolist()
    with warnings.catch_warnings():
        warnings.filterwarnings("error", category=UserWarning)  # reported once per process
        dm.splits["train"][[position, position + 1]]


# ----------------------------------------------------------------------------- transforms and Trainer
def test_eval_batches_are_resized_and_center_cropped(tree):
    dm = _module(tree, image_size=16, eval_crop_ratio=0.5)
    dm.setup()
    dataset = dm.splits["test"]
    images, _, _ = dataset[[0, 5]]
    for image, path in zip(images, [dataset.files[0], dataset.files[5]], strict=True):
        decoded = decode_jpeg(torch.frombuffer(bytearray(Path(path).read_bytes()), dtype=torch.uint8))
        expected = v2.CenterCrop(16)(v2.Resize(32, antialias=True)(decoded))
        assert torch.equal(image, expected)


def test_random_resized_crops_fit_the_image_and_follow_the_area_and_ratio_ranges():
    crop = RandomResizedCropFlip(24)
    random.seed(0)
    for _ in range(2000):
        top, left, h, w = crop.box(300, 200)
        assert 0 <= top <= 300 - h and 0 <= left <= 200 - w
        assert 0.08 * 0.95 <= h * w / 60_000 <= 1.0 and 3 / 4 * 0.95 <= w / h <= 4 / 3 * 1.05
    assert crop.box(10, 100) == (0, 43, 10, 13)  # nothing fits: the central box of ratio 4/3
    image = torch.randint(0, 256, (3, 50, 70), dtype=torch.uint8)
    expected = TF.resized_crop(image, 5, 9, 30, 41, [24, 24], antialias=True)
    assert torch.equal(resize(image[:, 5:35, 9:50], 24, 24), expected)
    assert crop(image).shape == (3, 24, 24)
    whole = RandomResizedCropFlip(50)
    whole.box = lambda height, width: (0, 10, 50, 50)
    outputs = [whole(image) for _ in range(200)]
    flipped = sum(torch.equal(o, image[:, :, 10:60].flip(-1)) for o in outputs)
    assert flipped + sum(torch.equal(o, image[:, :, 10:60]) for o in outputs) == 200 and 60 < flipped < 140


class _Recorder(LightningModule):
    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(3 * 24 * 24, num_classes)
        self.seen: list[torch.Tensor] = []

    def training_step(self, batch, batch_idx):
        images, targets, indices = batch
        assert images.dtype == torch.float32 and abs(float(images.mean())) < 3
        self.seen.append(indices)
        return torch.nn.functional.cross_entropy(self.fc(images.flatten(1)), targets)

    def validation_step(self, batch, batch_idx):
        assert len(batch) == 3 and batch[0].dtype == torch.float32

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_a_trainer_runs_with_worker_processes(tree, trainer_kwargs):
    dm = _module(tree, num_workers=1)
    model = _Recorder(dm.num_classes)
    Trainer(max_epochs=2, num_sanity_val_steps=0, **trainer_kwargs).fit(model, dm)
    epochs = torch.cat(model.seen).split(15)
    assert all(sorted(e.tolist()) == list(range(15)) for e in epochs)
    assert not torch.equal(epochs[0], epochs[1])


# ----------------------------------------------------------------------------- the real CIFAR-10
@pytest.fixture(scope="session")
def real_cifar10(tmp_path_factory):
    if shared_data() is None:
        pytest.skip("the bundled CIFAR-10 (shared/data) is absent")
    return prepared_cifar10(tmp_path_factory)


@pytest.mark.realdata
def test_the_real_cifar10_image_folder_loads(real_cifar10):
    root = real_cifar10 / "imagefolder"
    dm = ImageNetDataModule(str(root), image_size=32, eval_crop_ratio=1.0, batch_size=256, num_workers=0)
    assert dm.class_names == CIFAR10_NAMES
    dm.setup()
    assert (len(dm.splits["train"]), len(dm.splits["test"])) == (50_000, 10_000) and not dm.skipped_files
    assert torch.bincount(dm.splits["test"].targets).tolist() == [1000] * 10
    images, _, indices = next(iter(dm.test_dataloader()))
    for image, index in zip(images[:8], indices[:8], strict=True):
        path = dm.splits["test"].files[index]
        pixels = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)
        assert (image.int() - pixels.int()).abs().max() <= 2  # libjpeg-turbo vs PIL's decoder
