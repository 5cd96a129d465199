"""TeacherCache in real Trainer fits: equal to online KD, reused, invalidated, resumable."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch import Callback, Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint

from kdlab import DistillationModule
from kdlab.callbacks import TeacherCache
from kdlab.data import CIFARDataModule, DigitsDataModule
from kdlab.errors import ConfigurationError
from kdlab.losses import KD
from kdlab.models import MLP
from kdlab.models.cifar import resnet8, resnet14

from .kd_helpers import RecordingKD, random_teacher_file, tiny_cifar

SAMPLES = 100  # write_cifar10(per_batch=20): 5 files of 20 training images


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return tiny_cifar(tmp_path_factory.mktemp("cifar"))


def fit(data_root, trainer_kwargs, epochs, cache=None, student=resnet8, seed=0, views=2, **kwargs):
    seed_everything(seed)
    module = DistillationModule(
        student(num_classes=10),
        teacher=resnet8(num_classes=10),
        teacher_weights=str(kwargs.pop("teacher", data_root / "teacher.safetensors")),
        distillers=[RecordingKD()],
        ce_weight=0.1,
    )
    data = CIFARDataModule("cifar10", root=str(data_root), batch_size=16, views_per_sample=views, seed=seed)
    callbacks = ([] if cache is None else [cache]) + kwargs.pop("callbacks", [])
    ckpt_path = kwargs.pop("ckpt_path", None)
    settings = {**trainer_kwargs, "max_epochs": epochs, "limit_val_batches": 0, **kwargs}
    trainer = Trainer(callbacks=callbacks, **settings)
    trainer.fit(module, data, ckpt_path=ckpt_path)
    return module, trainer


def test_cached_kd_equals_online_kd_on_the_same_views(data_root, trainer_kwargs, tmp_path):
    online, _ = fit(data_root, trainer_kwargs, epochs=2, views=1)
    cache = TeacherCache(root=str(tmp_path))
    cached, trainer = fit(data_root, trainer_kwargs, epochs=2, cache=cache, views=1)
    assert (cache.hits, cache.misses) == (SAMPLES, SAMPLES)  # epoch 0 fills, epoch 1 is served whole
    steps = zip(online.distillers["recordingkd"].seen, cached.distillers["recordingkd"].seen, strict=True)
    for (o_idx, o_views, o_logits, o_loss), (c_idx, c_views, c_logits, c_loss) in steps:
        assert torch.equal(o_idx, c_idx) and torch.equal(o_views, c_views)
        assert torch.equal(c_logits, c_logits.half().float())  # served from float16 storage
        torch.testing.assert_close(c_logits, o_logits, rtol=2e-3, atol=2e-3)
        torch.testing.assert_close(c_loss, o_loss, rtol=1e-2, atol=1e-4)
    # float16 rounding of the teacher is the only difference; after 14 SGD steps it stays small
    for name, weight in online.student.state_dict().items():
        torch.testing.assert_close(cached.student.state_dict()[name], weight, rtol=1e-2, atol=1e-3)
    assert trainer.logged_metrics["cache/hit_rate"] == 1.0
    assert cached.teacher_inference.cache is None  # detached after fit


def test_lazy_fill_counts_rows_and_switches_to_the_epoch_table(data_root, trainer_kwargs, tmp_path):
    cache = TeacherCache(root=str(tmp_path))
    rates = []

    class Rates(Callback):  # runs after the cache's epoch end, which logs
        def on_train_epoch_end(self, trainer, pl_module):
            logged = trainer.callback_metrics
            rates.append((float(logged["cache/hit_rate"]), float(logged["cache/rows"])))

    fit(data_root, trainer_kwargs, epochs=4, cache=cache, views=3, callbacks=[Rates()])
    assert rates == [(0.0, 100.0), (0.0, 200.0), (0.0, 300.0), (1.0, 300.0)]
    assert cache.store.count_filled() == 3 * SAMPLES and cache.misses == 3 * SAMPLES


def test_one_cache_serves_other_students_and_seeds(data_root, trainer_kwargs, tmp_path):
    first = TeacherCache(root=str(tmp_path))
    fit(data_root, trainer_kwargs, epochs=2, cache=first)
    second = TeacherCache(root=str(tmp_path))
    module, _ = fit(data_root, trainer_kwargs, epochs=1, cache=second, student=resnet14, seed=7)
    assert second.store.directory == first.store.directory
    assert (second.hits, second.misses) == (SAMPLES, 0)
    # and the served logits are the first run's, i.e. the teacher's for those views
    indices, views, logits, _ = module.distillers["recordingkd"].seen[0]
    images = module.teacher(CIFARDataModule.render_train(_data(data_root), indices, views))
    torch.testing.assert_close(logits, images.detach().half().float(), rtol=2e-3, atol=2e-3)


def _data(data_root) -> CIFARDataModule:
    data = CIFARDataModule("cifar10", root=str(data_root))
    data.setup()
    return data


def test_another_teacher_or_subset_gets_its_own_cache(data_root, trainer_kwargs, tmp_path):
    first = TeacherCache(root=str(tmp_path))
    fit(data_root, trainer_kwargs, epochs=1, cache=first, limit_train_batches=1)
    other_file = random_teacher_file(tmp_path / "other.safetensors", seed=4)
    changed = TeacherCache(root=str(tmp_path))
    fit(data_root, trainer_kwargs, epochs=1, cache=changed, teacher=other_file, limit_train_batches=1)
    assert changed.store.directory != first.store.directory and changed.hits == 0
    # the same path with new contents is a new teacher too
    (tmp_path / "same.safetensors").write_bytes(other_file.read_bytes())
    again = TeacherCache(root=str(tmp_path))
    fit(data_root, trainer_kwargs, epochs=1, cache=again, teacher=tmp_path / "same.safetensors")
    assert again.store.directory == changed.store.directory
    assert first.store.count_filled() == 16  # the first cache is kept, untouched


def test_cache_state_survives_resume(data_root, trainer_kwargs, tmp_path):
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    cache = TeacherCache(root=str(tmp_path / "cache"))
    fit(data_root, trainer_kwargs, 1, cache, callbacks=[checkpoints], enable_checkpointing=True)
    assert cache.misses == SAMPLES
    resumed = TeacherCache(root=str(tmp_path / "cache"))
    last = tmp_path / "ckpt" / "last.ckpt"
    _, trainer = fit(data_root, trainer_kwargs, 3, resumed, ckpt_path=last)
    assert trainer.current_epoch == 3
    assert resumed.store.directory == cache.store.directory
    # epoch 0's rows were not recomputed: one miss per row over both attempts, counters carried on
    assert (resumed.hits, resumed.misses) == (SAMPLES, 2 * SAMPLES)
    assert resumed.store.count_filled() == 2 * SAMPLES


def test_runs_the_cache_cannot_serve_fail_at_setup(data_root, trainer_kwargs, tmp_path):
    class Tapping(KD):
        teacher_taps = ("layer1",)

    module = DistillationModule(
        resnet8(num_classes=10), teacher=resnet8(num_classes=10), distillers=[Tapping()]
    )
    trainer = Trainer(callbacks=[TeacherCache(root=str(tmp_path))], **trainer_kwargs)
    with pytest.raises(ConfigurationError, match=r"logits only.*\['layer1'\]"):
        trainer.fit(module, CIFARDataModule("cifar10", root=str(data_root)))
    digits = DistillationModule(MLP(), teacher=MLP(), distillers=[KD()])
    trainer = Trainer(callbacks=[TeacherCache(root=str(tmp_path))], **trainer_kwargs)
    with pytest.raises(ConfigurationError, match=r"finite set of views.*DigitsDataModule lacks"):
        trainer.fit(digits, DigitsDataModule())
