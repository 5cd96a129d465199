"""ImageFolderDataModule: layouts, classes, decoding, statistics, splits, views, errors, real runs."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from lightning.pytorch import LightningModule, Trainer
from PIL import Image
from safetensors.torch import save_file
from torchvision.io import encode_jpeg, encode_png
from torchvision.transforms.v2 import functional as TF

from kdlab.data import CIFARDataModule, ImageFolderDataModule
from kdlab.data.augment import IDENTITY_VIEW, apply_views, draw_views, normalize

from .datagen import CIFAR10_NAMES, prepared_cifar10, shared_data
from .kdlab_runs import QUIET

CLASSES = ["cat", "Dog", "zebra-2"]  # sorted by name: "Dog" < "cat" < "zebra-2"


def _pixels(seed: int, channels: int = 3, height: int = 8, width: int = 8) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (channels, height, width), dtype=torch.uint8, generator=generator)


def _write(path, image: torch.Tensor) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    encoded = encode_png(image) if path.suffix.lower() == ".png" else encode_jpeg(image, quality=95)
    path.write_bytes(encoded.numpy().tobytes())


def write_classes(folder, classes=CLASSES, per_class: int = 6, size=(8, 8), seed: int = 0) -> dict:
    """``folder/<class>/<i>.png`` with random pixels; returns ``{path: pixels}``."""
    written = {}
    for c, name in enumerate(classes):
        for i in range(per_class):
            path = folder / name / f"{i:03d}.png"
            written[str(path)] = _pixels(seed + 1000 * c + i, 3, *size)
            _write(path, written[str(path)])
    return written


@pytest.fixture
def splits_tree(tmp_path):
    root = tmp_path / "splits"
    train = write_classes(root / "train", per_class=6)
    val = write_classes(root / "val", per_class=2, seed=50)
    return root, train, val


@pytest.fixture
def flat_tree(tmp_path):
    root = tmp_path / "flat"
    return root, write_classes(root, per_class=10)


def _module(root, **kwargs) -> ImageFolderDataModule:
    kwargs.setdefault("image_size", 8)
    kwargs.setdefault("decode_threads", 2)
    dm = ImageFolderDataModule(str(root), **kwargs)
    dm.setup()
    return dm


def _expected(written: dict, files: list[str]) -> torch.Tensor:
    return torch.stack([written[f] for f in files])


# ----------------------------------------------------------------------------- layouts and classes
def test_the_splits_layout_reads_train_and_val_losslessly_in_class_order(splits_tree):
    root, train, val = splits_tree
    dm = _module(root)
    assert dm.layout.kind == "splits" and dm.class_names == ["Dog", "cat", "zebra-2"] and dm.num_classes == 3
    assert dm.input_shape == (3, 8, 8)
    assert (len(dm.splits["train"]), len(dm.splits["val"])) == (18, 6)
    assert dm.splits["test"] is dm.splits["val"]  # no test/: val/ serves both
    for split, written in (("train", train), ("val", val)):
        files = dm.files[split]
        assert sorted(files) == sorted(written)
        assert torch.equal(dm.splits[split].images, _expected(written, files))
        names = [dm.class_names[t] for t in dm.splits[split].targets.tolist()]
        assert names == [f.split("/")[-2] for f in files]


def test_a_test_folder_is_the_test_split_and_stands_in_for_a_missing_val(splits_tree):
    root, _, _ = splits_tree
    test = write_classes(root / "test", per_class=3, seed=90)
    dm = _module(root)
    assert (len(dm.splits["val"]), len(dm.splits["test"])) == (6, 9)
    assert torch.equal(dm.splits["test"].images, _expected(test, dm.files["test"]))
    shutil.rmtree(root / "val")
    dm = _module(root)
    assert dm.splits["val"] is dm.splits["test"] and len(dm.splits["test"]) == 9


def test_the_classes_layout_holds_out_a_seeded_disjoint_fraction_of_each_class(flat_tree):
    root, written = flat_tree
    dm = _module(root, seed=1)
    assert dm.layout.kind == "classes" and dm.val_fraction == 0.1
    train, val = dm.files["train"], dm.files["val"]
    assert (len(train), len(val)) == (27, 3) and dm.splits["test"] is dm.splits["val"]
    assert set(train).isdisjoint(val) and set(train) | set(val) == set(written)
    assert torch.bincount(dm.splits["val"].targets).tolist() == [1, 1, 1]
    assert torch.equal(dm.splits["val"].images, _expected(written, val))
    assert _module(root, seed=1).files["val"] == val
    assert _module(root, seed=2).files["val"] != val
    assert len(_module(root, val_fraction=0.3).files["val"]) == 9


def test_classes_given_keep_their_order_and_need_no_files_until_setup(splits_tree, tmp_path):
    root, _, _ = splits_tree
    missing = ImageFolderDataModule(str(tmp_path / "not-yet"), classes=["zebra-2", "cat"])
    assert missing.num_classes == 2 and missing.class_names == ["zebra-2", "cat"]
    dm = _module(root, classes=["zebra-2", "cat"])
    assert len(dm.splits["train"]) == 12
    assert [dm.class_names[t] for t in dm.splits["train"].targets.tolist()] == [
        f.split("/")[-2] for f in dm.files["train"]
    ]
    assert dm.splits["train"].targets.tolist() == [0] * 6 + [1] * 6  # labels follow the list
    classes_file = tmp_path / "classes.txt"
    classes_file.write_text("cat  # the first label\nDog\n")
    assert _module(root, classes=str(classes_file)).class_names == ["cat", "Dog"]


def test_hidden_folders_are_not_classes(flat_tree):
    root, _ = flat_tree
    write_classes(root / ".ipynb_checkpoints", classes=["stale"], per_class=1)
    assert _module(root).class_names == ["Dog", "cat", "zebra-2"]


# ----------------------------------------------------------------------------- decoding
def test_odd_sized_images_are_resized_on_the_shorter_side_and_center_cropped(tmp_path):
    root = tmp_path / "odd"
    wide, tall, square = _pixels(1, 3, 12, 20), _pixels(2, 3, 30, 9), _pixels(3, 3, 8, 8)
    for name, image in (("a/wide.png", wide), ("a/tall.png", tall), ("b/square.png", square)):
        _write(root / "train" / name, image)
        _write(root / "val" / name, image)
    dm = _module(root, image_size=8)
    images = dict(zip(dm.files["train"], dm.splits["train"].images, strict=True))
    for name, image in (("wide", wide), ("tall", tall)):
        reference = TF.center_crop(TF.resize(image, 8, antialias=True), [8, 8])
        assert torch.equal(images[str(root / "train" / "a" / f"{name}.png")], reference)
    assert torch.equal(images[str(root / "train" / "b" / "square.png")], square)  # already 8×8: as is
    small = _module(root, image_size=4).splits["train"].images
    assert small.shape == (3, 3, 4, 4)


def test_grayscale_folders_decode_to_one_channel(tmp_path):
    root = tmp_path / "gray"
    written = write_classes(root, per_class=4)
    jpeg = root / "cat" / "photo.jpg"
    _write(jpeg, _pixels(7, 3, 16, 16))
    dm = _module(root, channels=1, image_size=8, val_fraction=0.25)
    assert dm.input_shape == (1, 8, 8) and dm.splits["train"].images.shape[1:] == (1, 8, 8)
    assert len(dm.mean) == len(dm.std) == 1
    for path, image in zip(dm.files["train"], dm.splits["train"].images, strict=True):
        if path in written:
            luma = np.array(Image.fromarray(written[path].permute(1, 2, 0).numpy()).convert("L"))
            assert (image[0].int() - torch.from_numpy(luma).int()).abs().max() <= 1  # PIL's L, rounded
    batch = next(iter(dm.train_dataloader()))
    views = dm.augment_batch(batch, epoch=0)[0]
    assert views.shape[1:] == (1, 8, 8) and views.dtype == torch.float32


def test_damaged_files_are_skipped_and_reported(splits_tree):
    root, train, _ = splits_tree
    cat = root / "train" / "cat"
    (cat / "empty.jpg").write_bytes(b"")
    (cat / "notes.png").write_text("not an image")
    good = encode_jpeg(_pixels(5, 3, 8, 8)).numpy().tobytes()
    (cat / "cut.jpg").write_bytes(good[: len(good) // 3])
    with pytest.warns(UserWarning, match=r"left out 3 image file\(s\) that failed to decode:\n.*cut.jpg"):
        dm = _module(root)
    assert dm.skipped_files[str(cat / "empty.jpg")] == "empty file"
    assert dm.skipped_files[str(cat / "notes.png")] == "not a JPEG or PNG image"
    assert dm.skipped_files[str(cat / "cut.jpg")].startswith("truncated or corrupt JPEG")
    assert sorted(dm.files["train"]) == sorted(train)  # the others, all of them
    assert torch.equal(dm.splits["train"].images, _expected(train, dm.files["train"]))
    assert dm.splits["train"].targets.tolist() == [
        dm.class_names.index(f.split("/")[-2]) for f in dm.files["train"]
    ]


def test_a_class_whose_every_image_is_damaged_is_an_error(splits_tree):
    root, _, _ = splits_tree
    for path in (root / "val" / "cat").iterdir():
        path.write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(ValueError, match=r"every val image of class\(es\) \['cat'\] failed to decode"):
        _module(root)


# ----------------------------------------------------------------------------- normalisation
def test_mean_and_std_are_computed_from_the_training_pixels_and_kept_in_checkpoints(splits_tree):
    root, _, _ = splits_tree
    dm = _module(root)
    pixels = dm.splits["train"].images.double() / 255
    torch.testing.assert_close(torch.tensor(dm.mean), pixels.mean((0, 2, 3)).float(), atol=6e-5, rtol=0)
    std = pixels.std((0, 2, 3), correction=0).float()
    torch.testing.assert_close(torch.tensor(dm.std), std, atol=6e-5, rtol=0)
    assert _module(root, decode_threads=1).mean == dm.mean  # exact, whatever the threads
    assert dm.state_dict() == {"mean": list(dm.mean), "std": list(dm.std)}
    batch = dm.normalize_batch(next(iter(dm.val_dataloader())))
    assert torch.equal(batch[0], normalize(dm.splits["val"].images[: len(batch[0])], dm.mean, dm.std))

    half = _module(root, mean=[0.5, 0.5, 0.5])  # the std alone is computed
    assert (half.mean, half.std) == ((0.5, 0.5, 0.5), dm.std)
    given = _module(root, mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25])
    assert (given.mean, given.std) == ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    with pytest.warns(UserWarning, match="using the checkpoint's"):
        given.load_state_dict(dm.state_dict())  # a checkpoint trained on other statistics wins
    assert (given.mean, given.std) == (dm.mean, dm.std)
    images = next(iter(given.val_dataloader()))
    assert torch.equal(given.normalize_batch(images)[0], normalize(images[0], dm.mean, dm.std))


# ----------------------------------------------------------------------------- subsets
def test_images_per_class_and_train_fraction_are_seeded_per_class_subsets(splits_tree):
    root, _, _ = splits_tree
    two = _module(root, images_per_class=2, seed=1)
    assert torch.bincount(two.splits["train"].targets).tolist() == [2, 2, 2]
    assert _module(root, images_per_class=2, seed=1).files["train"] == two.files["train"]
    assert _module(root, images_per_class=2, seed=2).files["train"] != two.files["train"]
    assert torch.bincount(_module(root, images_per_class=100).splits["train"].targets).tolist() == [6] * 3
    half = _module(root, train_fraction=0.5, seed=1)
    assert torch.bincount(half.splits["train"].targets).tolist() == [3, 3, 3]
    assert len(half.splits["val"]) == 6  # subsets are of train/ only


def test_the_held_out_validation_does_not_change_with_the_training_subset(flat_tree):
    root, _ = flat_tree
    full, fifth = _module(root, seed=3), _module(root, seed=3, train_fraction=0.2)
    assert fifth.files["val"] == full.files["val"]
    assert set(fifth.files["train"]) < set(full.files["train"]) and len(fifth.files["train"]) == 6


# ----------------------------------------------------------------------------- batches and views
def _augmented(dm: ImageFolderDataModule, world: int, epoch: int) -> dict[int, tuple]:
    """``{index: (target, view id, augmented image)}`` over every rank of a ``world``-process run."""
    seen = {}
    for rank in range(world):
        dm.trainer = SimpleNamespace(world_size=world, global_rank=rank)
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(epoch)
        for batch in loader:
            images, targets, indices, views = dm.augment_batch(batch, epoch)
            for i, index in enumerate(indices.tolist()):
                assert index not in seen, f"sample {index} went to two ranks"
                seen[index] = (int(targets[i]), int(views[i]), images[i])
    dm.trainer = None
    return seen


def test_each_sample_gets_the_same_view_and_image_whatever_the_number_of_processes(flat_tree):
    root, _ = flat_tree
    dm = _module(root, batch_size=4, seed=5)
    train = dm.splits["train"]
    for epoch in (0, 3):
        alone, two = _augmented(dm, 1, epoch), _augmented(dm, 2, epoch)
        assert sorted(alone) == sorted(two) == list(range(len(train)))
        for index, (target, view, image) in alone.items():
            assert two[index][:2] == (target, view) and torch.equal(two[index][2], image)
            assert target == int(train.targets[index])
            assert view == int(draw_views(torch.tensor([index]), epoch, seed=5)[0])
        indices = torch.arange(len(train))
        views = torch.tensor([alone[i][1] for i in range(len(train))])
        expected = apply_views(train.images, views, dm.mean, dm.std)
        assert torch.equal(torch.stack([alone[i][2] for i in range(len(train))]), expected)
        assert torch.equal(dm.render_train(indices, views), expected)  # what the teacher cache renders
    assert dm.train_views(torch.arange(4), 0).tolist() != dm.train_views(torch.arange(4), 1).tolist()


def test_the_view_set_identity_follows_pixels_shape_and_statistics(flat_tree, tmp_path):
    root, _ = flat_tree
    identity = _module(root).view_set_identity()
    assert identity["dataset"] == "imagefolder" and identity["samples"] == 27
    assert identity["input_shape"] == [3, 8, 8] and identity["views"] == "pad4-crop-flip/162"
    assert _module(root).view_set_identity() == identity
    assert _module(root, seed=1).view_set_identity()["pixels_sha256"] != identity["pixels_sha256"]
    assert _module(root, image_size=6).view_set_identity()["input_shape"] == [3, 6, 6]
    other = _module(root, mean=[0.5] * 3, std=[0.5] * 3).view_set_identity()
    assert other["mean"] == [0.5] * 3 and other["pixels_sha256"] == identity["pixels_sha256"]


def test_augment_false_gives_the_identity_view_and_views_per_sample_limits_them(flat_tree):
    root, _ = flat_tree
    plain = _module(root, augment=False)
    batch = next(iter(plain.train_dataloader()))
    images, _, indices, views = plain.augment_batch(batch, epoch=4)
    assert (views == IDENTITY_VIEW).all()
    assert torch.equal(images, normalize(plain.splits["train"].images[indices], plain.mean, plain.std))
    one = _module(root, views_per_sample=1)
    indices = torch.arange(27)
    assert torch.equal(one.train_views(indices, 0), one.train_views(indices, 7))


class _Recorder(LightningModule):
    def __init__(self, inputs: int, classes: int) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(inputs, classes)
        self.train_batches: list[tuple] = []
        self.val_batches: list[tuple] = []

    def training_step(self, batch, batch_idx):
        self.train_batches.append((self.current_epoch, *[t.clone() for t in batch]))
        return torch.nn.functional.cross_entropy(self.fc(batch[0].flatten(1)), batch[1])

    def validation_step(self, batch, batch_idx):
        self.val_batches.append(tuple(t.clone() for t in batch))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_a_trainer_gets_augmented_training_and_normalised_evaluation_batches(splits_tree, trainer_kwargs):
    root, _, _ = splits_tree
    dm = ImageFolderDataModule(str(root), image_size=8, batch_size=5, seed=2)
    model = _Recorder(3 * 8 * 8, 3)
    Trainer(max_epochs=2, num_sanity_val_steps=0, **trainer_kwargs).fit(model, dm)
    train = dm.splits["train"]
    orders = []
    for epoch in (0, 1):
        batches = [b for b in model.train_batches if b[0] == epoch]
        images, targets, indices, views = (torch.cat(p) for p in list(zip(*batches, strict=True))[1:])
        assert sorted(indices.tolist()) == list(range(18))
        assert torch.equal(targets, train.targets[indices])
        assert torch.equal(views, draw_views(indices, epoch, seed=2))
        assert torch.equal(images, apply_views(train.images[indices], views, dm.mean, dm.std))
        orders.append(indices)
    assert not torch.equal(orders[0], orders[1])
    val = torch.cat([b[0] for b in model.val_batches[:2]])
    assert torch.equal(val, normalize(dm.splits["val"].images, dm.mean, dm.std))


# ----------------------------------------------------------------------------- errors
def test_a_missing_root_says_which_layouts_are_expected(tmp_path):
    with pytest.raises(
        FileNotFoundError, match=r"nowhere does not exist; expected .*nowhere/<class>/<image>"
    ):
        ImageFolderDataModule(str(tmp_path / "nowhere")).setup()
    with pytest.raises(FileNotFoundError, match=r"nowhere does not exist"):
        _module(tmp_path / "nowhere", classes=["a"])


def test_a_folder_without_class_folders_says_what_it_holds(tmp_path):
    _write(tmp_path / "one" / "a.png", _pixels(0))
    _write(tmp_path / "one" / "b.png", _pixels(1))
    with pytest.raises(
        FileNotFoundError, match=r"holds no class folders \(2 files \(a.png, b.png\)\); if these"
    ):
        _module(tmp_path / "one")
    (tmp_path / "empty" / "train").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"empty/train holds no class folders \(nothing\)"):
        _module(tmp_path / "empty")
    (tmp_path / "nothing").mkdir()
    with pytest.raises(FileNotFoundError, match=r"nothing holds no class folders \(nothing\); expected"):
        _module(tmp_path / "nothing")


def test_a_class_folder_without_images_names_the_extensions_looked_for(flat_tree):
    root, _ = flat_tree
    (root / "empty").mkdir()
    (root / "empty" / "notes.txt").write_text("")
    (root / "empty" / "scan.bmp").write_bytes(b"BM")
    message = r"empty holds no images directly \(looked for .jpg, .jpeg, .png, any case\); it holds 2 files"
    with pytest.raises(ValueError, match=message):
        _module(root)


def test_a_folder_one_level_too_high_is_pointed_out(splits_tree):
    root, _, _ = splits_tree
    with pytest.raises(ValueError, match=r"is root one level too high\? .*splits looks like an image folder"):
        _module(root.parent)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("no_val", r"has train/ but neither val/ nor test/; add .*val/<class>/<image>, or set val_fraction"),
        ("no_train", r"has val/ but no train/ folder"),
        ("val_class_missing", r"class folder .*val/zebra-2 is missing; did you mean 'zebra-3'\?"),
    ],
)
def test_incomplete_splits_say_what_is_missing(splits_tree, change, message):
    root, _, _ = splits_tree
    if change == "no_val":
        shutil.rmtree(root / "val")
    elif change == "no_train":
        shutil.rmtree(root / "train")
    else:
        (root / "val" / "zebra-2").rename(root / "val" / "zebra-3")
    with pytest.raises(FileNotFoundError, match=message):
        _module(root)


def test_a_classes_layout_needs_a_validation_fraction(flat_tree):
    root, _ = flat_tree
    with pytest.raises(ValueError, match=r"no val/ or test/ folder.*set val_fraction > 0"):
        _module(root, val_fraction=0)


def test_a_folder_too_big_for_memory_is_refused_with_the_estimate(flat_tree):
    root, _ = flat_tree
    message = (
        r"decoding the 30 images of .*flat at 3×1000×1000 would take 0.1 GB of memory \(per process\), over "
        r"max_memory_gb=0.05; .*kdlab.data.ImageNetDataModule"
    )
    with pytest.raises(ValueError, match=message):
        _module(root, image_size=1000, max_memory_gb=0.05)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"channels": 4}, r"channels must be 3 \(RGB\) or 1"),
        ({"image_size": 0}, "image_size must be positive"),
        ({"val_fraction": 1.0}, r"val_fraction must be in \[0, 1\)"),
        ({"train_fraction": 0.0}, r"train_fraction must be in \(0, 1\]"),
        ({"images_per_class": 0}, "at least 1"),
        ({"mean": [0.5]}, r"mean needs one value per channel \(3\)"),
        ({"std": [0.2, 0.2, 0.0]}, "std must be positive"),
        ({"strong_view": True, "channels": 1}, "strong_view needs channels=3"),
        ({"views_per_sample": 163}, r"views_per_sample must be in \[1, 162\]"),
        ({"classes": ["a", "a"]}, "more than once: a"),
    ],
)
def test_bad_arguments_fail_at_construction(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        ImageFolderDataModule(str(tmp_path), **kwargs)


# ----------------------------------------------------------------------------- kdlab fit
def _coloured_classes(root, per_class: int = 12) -> None:
    """Three classes told apart by their dominant colour, in ``train/`` and ``val/``."""
    for split, count in (("train", per_class), ("val", 4)):
        for c, name in enumerate(["red", "green", "blue"]):
            for i in range(count):
                image = _pixels(100 * c + i + (0 if split == "train" else 50), 3, 12, 12) // 4
                image[c] += 160
                _write(root / split / name / f"{i}.jpg", image)


def test_kdlab_fit_trains_a_student_on_an_image_folder(tmp_path):
    from kdlab.cli import main
    from kdlab.models.cifar import resnet8

    _coloured_classes(tmp_path / "colours")
    teacher = tmp_path / "teacher.safetensors"
    torch.manual_seed(0)
    save_file(resnet8(num_classes=3).state_dict(), str(teacher))
    run = tmp_path / "run"
    args = [
        "fit",
        "--seed_everything=0",
        "--model=kdlab.DistillationModule",
        "--model.student=kdlab.models.cifar.resnet8",
        "--model.teacher=kdlab.models.cifar.resnet8",
        f"--model.teacher_weights={teacher}",
        "--model.distillers+=kdlab.losses.KD",
        "--model.ce_weight=1.0",
        "--model.distillers.0.init_args.weight=0.1",
        "--data=kdlab.data.ImageFolderDataModule",
        f"--data.root={tmp_path / 'colours'}",
        "--data.image_size=12",
        "--data.batch_size=12",
        "--trainer.max_epochs=4",
        f"--trainer.default_root_dir={run}",
        *QUIET,
    ]
    assert main(args) == 0
    metrics = pd.read_csv(run / "logs" / "version_0" / "metrics.csv").groupby("epoch").first()
    assert metrics["val/acc1"].iloc[-1] >= 0.9, metrics["val/acc1"].tolist()  # chance: 1/3
    assert metrics["train/loss"].iloc[-1] < metrics["train/loss"].iloc[0]
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["state_dict"]["student.fc.weight"].shape[0] == 3  # num_classes linked from the data
    assert len(checkpoint["ImageFolderDataModule"]["mean"]) == 3  # the computed statistics are kept


def test_a_teacher_cache_serves_an_image_folder(flat_tree, trainer_kwargs, tmp_path):
    from kdlab import DistillationModule
    from kdlab.callbacks import TeacherCache
    from kdlab.losses import KD
    from kdlab.models.cifar import resnet8

    root, _ = flat_tree
    teacher = tmp_path / "teacher.safetensors"
    torch.manual_seed(0)
    save_file(resnet8(num_classes=3).state_dict(), str(teacher))
    module = DistillationModule(
        resnet8(num_classes=3), resnet8(num_classes=3), str(teacher), distillers=[KD()], ce_weight=0.1
    )
    cache = TeacherCache(root=str(tmp_path / "cache"))
    data = ImageFolderDataModule(str(root), image_size=8, batch_size=9, views_per_sample=1)
    settings = {**trainer_kwargs, "max_epochs": 2, "limit_val_batches": 0}
    Trainer(callbacks=[cache], **settings).fit(module, data)
    assert (cache.hits, cache.misses) == (27, 27)  # epoch 0 fills the one view of each sample, epoch 1 reads


# ----------------------------------------------------------------------------- the real CIFAR-10
@pytest.fixture(scope="session")
def real_cifar10(tmp_path_factory):
    if shared_data() is None:
        pytest.skip("the bundled CIFAR-10 (shared/data) is absent")
    return prepared_cifar10(tmp_path_factory)


@pytest.mark.realdata
@pytest.mark.slow
def test_the_real_cifar10_folder_matches_cifar_data_module(real_cifar10):
    dm = ImageFolderDataModule(str(real_cifar10 / "imagefolder"))
    cifar = CIFARDataModule("cifar10", root=str(real_cifar10))
    cifar.setup()
    assert dm.class_names == CIFAR10_NAMES == cifar.label_names  # sorted folder names: CIFAR's order
    dm.setup()
    assert dm.layout.kind == "splits" and not dm.skipped_files
    assert (len(dm.splits["train"]), len(dm.splits["test"])) == (50_000, 10_000)
    assert torch.bincount(dm.splits["train"].targets).tolist() == [5000] * 10
    # The pickles hold the same JPEGs decoded by PIL (libjpeg-turbo here): pixels within rounding,
    # and the statistics are the official ones but for the JPEG re-encoding.
    torch.testing.assert_close(torch.tensor(dm.mean), torch.tensor(cifar.mean), atol=2e-3, rtol=0)
    torch.testing.assert_close(torch.tensor(dm.std), torch.tensor(cifar.std), atol=5e-3, rtol=0)
    with open(real_cifar10 / "cifar-10-batches-py" / "test_batch", "rb") as f:
        batch = pickle.load(f)  # rows named "<class>_<file name>"
    rows = {name: row for row, name in enumerate(batch["filenames"])}
    order = [rows["_".join(Path(path).parts[-2:])] for path in dm.files["test"]]
    pickled = torch.from_numpy(batch["data"][order]).reshape(-1, 3, 32, 32)
    assert dm.splits["test"].targets.tolist() == [batch["labels"][row] for row in order]
    difference = (dm.splits["test"].images.int() - pickled.int()).abs()
    assert difference.max() <= 2 and difference.float().mean() < 0.1, (
        difference.max(),
        difference.float().mean(),
    )
