"""DistillationModule: a trainable student, an optional frozen teacher and weighted loss terms."""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from torch.optim import SGD, Optimizer
from torch.optim.lr_scheduler import ReduceLROnPlateau

from kdlab.checks import (
    check_class_names,
    check_logits,
    check_num_classes,
    data_class_names,
    normalization_mismatches,
    unique_names,
    verify_teacher,
)
from kdlab.epoch_means import EpochMeans
from kdlab.errors import ConfigurationError
from kdlab.eval_memo import EvalLogitsMemo
from kdlab.finite import FiniteGuard
from kdlab.init_phase import InitPhaseOptimizer
from kdlab.losses.base import Distiller
from kdlab.lr_schedulers import RunLength, run_length
from kdlab.metrics import KDMetrics
from kdlab.outputs import Batch, Outputs
from kdlab.probing import build_distillers, example_from_data, num_training_samples
from kdlab.taps import FeatureTaps, requested_taps
from kdlab.teacher import CLASS_NAMES_KEY, batch_statistics, freeze, load_teacher_weights, state_sha256
from kdlab.teacher_inference import TeacherInference

TEACHER_KEY = "kdlab_teacher"
INIT_OPTIMIZER_KEY = "kdlab_init_optimizer"
_MODULE_ARGS = ("student", "teacher", "distillers", "optimizer", "lr_scheduler")


def cross_entropy(outputs: Outputs, targets: Tensor) -> Tensor:
    """Cross-entropy with the labels, summed over the views (weak, and strong if there is one)."""
    loss = F.cross_entropy(outputs.logits, targets)
    return loss if outputs.strong_logits is None else loss + F.cross_entropy(outputs.strong_logits, targets)


def sgd(params: Iterable) -> Optimizer:
    """The CIFAR recipe of the CRD benchmark: SGD, lr 0.05, momentum 0.9, weight decay 5e-4."""
    return SGD(params, lr=0.05, momentum=0.9, weight_decay=5e-4)


class DistillationModule(LightningModule):
    """Train ``student`` with cross-entropy plus distillation terms from a frozen ``teacher``.

    The total loss is ``ce_weight * CE(student, y) + Σ distiller.weight * distiller(...)``.
    Without a teacher this is plain supervised training, which is how teachers and vanilla
    baselines are trained. The teacher is frozen in one place, here: no gradients, always in
    eval mode, run under ``torch.inference_mode()``, absent from the optimizer and from
    checkpoints (which record its source file and sha256 instead, verified on resume).

    Args:
        student: The network being trained.
        teacher: The frozen teacher network, or None for supervised training.
        teacher_weights: Path of the teacher's weights (``.safetensors``, a state dict, or a
            kdlab/Lightning checkpoint); loaded safely, never by unpickling code.
        distillers: Distillation terms, each with its own ``weight``.
        ce_weight: Weight of the cross-entropy term with the ground-truth labels.
        optimizer: Builds the optimizer over the student's and the distillers' parameters.
        lr_scheduler: Builds a learning-rate scheduler for that optimizer. Schedulers sized to the
            run (:mod:`kdlab.lr_schedulers`) take their length from the trainer.
        lr_scheduler_interval: Step the scheduler after every ``"epoch"`` or after every optimizer
            ``"step"`` (one-cycle, warm-up + cosine per step).
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        teacher_weights: str | None = None,
        distillers: list[Distiller] | None = None,
        ce_weight: float = 1.0,
        optimizer: OptimizerCallable = sgd,
        lr_scheduler: LRSchedulerCallable | None = None,
        lr_scheduler_interval: Literal["epoch", "step"] = "epoch",
    ) -> None:
        super().__init__()
        self._save_plain_hyperparameters(student, teacher, distillers, optimizer, lr_scheduler)
        distillers = list(distillers or [])
        if teacher_weights is not None and teacher is None:
            raise ConfigurationError(
                f"teacher_weights='{teacher_weights}' was given without a teacher: set model.teacher "
                "to the teacher's architecture (class_path and init_args)."
            )
        if distillers and teacher is None:
            raise ConfigurationError(
                f"distillers {[type(d).__name__ for d in distillers]} need a teacher: set model.teacher, "
                "or remove the distillers to train without one."
            )
        if lr_scheduler_interval not in ("epoch", "step"):
            raise ConfigurationError(
                f"lr_scheduler_interval must be 'epoch' or 'step', got {lr_scheduler_interval!r}"
            )
        if not ce_weight >= 0:  # also refuses NaN
            raise ConfigurationError(f"ce_weight must be a number >= 0, got {ce_weight}")
        check_num_classes(student, teacher)
        self.student = student
        self.teacher = None if teacher is None else freeze(teacher)
        self.teacher_source: dict[str, str | None] | None = None
        if teacher is not None:
            digest = (
                load_teacher_weights(teacher, teacher_weights) if teacher_weights else state_sha256(teacher)
            )
            self.teacher_source = {"path": teacher_weights, "sha256": digest}
        self.distillers = nn.ModuleDict(unique_names(distillers))
        self.ce_weight = ce_weight
        self.optimizer_factory = optimizer
        self.init_optimizer = InitPhaseOptimizer(optimizer)  # multi-stage methods' init phase
        self.lr_scheduler_factory = lr_scheduler
        self.lr_scheduler_interval = lr_scheduler_interval
        self.metrics = nn.ModuleDict({"val": KDMetrics(), "test": KDMetrics()})
        self.taps = FeatureTaps()  # hooks for the layers distillers read, attached at set-up
        self.guard = FiniteGuard()  # non-finite terms and gradients, checked one step late
        self._step_values: tuple[Tensor, int] | None = None
        self._step_names: tuple[str, ...] = ()
        self._teacher_accuracy_pending = True
        self._distillers_built = False
        self.epoch_means = EpochMeans()
        self.eval_memo = EvalLogitsMemo()
        # Where teacher logits come from; callbacks plug in a fast copy or a cache (use_runner/use_cache).
        self.teacher_inference = TeacherInference(self.teacher)

    # ----------------------------------------------------------------------------- the step
    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        batch = Batch(*batch)
        self._check_finite()  # the previous step's terms and gradients (no host sync per step)
        with self._teacher_statistics():
            teacher = self.teacher_outputs(batch)
        student = self.student_outputs(batch.inputs)
        if batch.strong_inputs is not None:  # a second, strongly augmented view (MLKD)
            self._strong_view(batch.strong_inputs, student, teacher)
        terms = self.loss_terms(student, teacher, batch)
        values = torch.stack(list(terms.values()))
        self._step_values = (values.detach(), batch_idx)  # checked with the gradients after backward
        self._step_names = tuple(terms)
        self.epoch_means.update(terms, values.detach(), len(batch.targets))  # logged at epoch end
        return values.sum()

    @property
    def step_terms(self) -> dict[str, Tensor]:
        """The last training step's loss terms by name, detached (for per-step logging)."""
        if self._step_values is None:
            return {}
        return dict(zip(self._step_names, self._step_values[0]))

    def student_outputs(self, inputs: Tensor) -> Outputs:
        # float32 logits: under mixed precision the loss terms still compute in full precision.
        logits = self.student(inputs).float()
        return Outputs(logits, self._take_tapped("student"))

    def teacher_outputs(self, batch: Batch) -> Outputs | None:
        """The frozen teacher's outputs: cached logits for training batches when a teacher cache
        serves them, else computed in eval and inference mode, returned as normal tensors."""
        if self.teacher is None:
            return None
        cached = self.teacher_inference.cached_logits(batch)
        if cached is not None:
            return Outputs(cached)
        logits = self.teacher_logits(batch.inputs)
        # Inference tensors cannot be saved for backward; a clone outside the context can.
        features = {path: value.clone() for path, value in self._take_tapped("teacher").items()}
        return Outputs(logits, features)

    def _strong_view(self, inputs: Tensor, student: Outputs, teacher: Outputs | None) -> None:
        """Both networks' logits for the strong view, into their outputs (its taps are dropped)."""
        student.strong_logits = self.student_outputs(inputs).logits
        if teacher is not None:
            teacher.strong_logits = self.teacher_logits(inputs)
            self._take_tapped("teacher")

    def teacher_logits(self, inputs: Tensor) -> Tensor:
        """The frozen teacher's float32 logits for ``inputs`` (eval mode, inference mode)."""
        return self.teacher_inference.logits(inputs)

    def loss_terms(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        """Each weighted term of the total loss, by name (``ce`` and the distillers' names).

        While some distiller is in its init phase (the first ``init_epochs`` epochs: AB, FT, FSP,
        two-stage FitNet), only the init objectives of those distillers train, as ``<name>_init``.
        Every term computes in float32, also under mixed precision: autocast is off here and the
        tapped features are upcast (in bfloat16, PKT's value on random features is off ~34x).
        """
        with torch.autocast(student.logits.device.type, enabled=False):
            student, teacher = student.float(), None if teacher is None else teacher.float()
            initialising = self.initialising()
            if initialising:
                parts = {f"{n}_init": d.init_loss for n, d in initialising.items()}
            else:
                parts = {"ce": lambda s, t, b: self.ce_weight * cross_entropy(s, b.targets)}
                parts |= {n: lambda s, t, b, d=d: d.weight * d(s, t, b) for n, d in self.distillers.items()}
            self.guard.begin(list(parts), student.logits.device)
            return {
                name: term(self.guard.watch(name, student), teacher, batch) for name, term in parts.items()
            }

    def attach_learnable(self, name: str, module: nn.Module) -> nn.Module:
        """Make ``module`` part of this one under ``name`` (once): optimised with the student and saved
        in checkpoints. The extension point for callbacks with learnable parts (CTKD's temperature);
        attach before the optimizer is built (a callback's ``setup``)."""
        existing = getattr(self, name, None)
        if existing is None:
            self.add_module(name, module)
            return module
        if type(existing) is not type(module):
            raise ConfigurationError(f"the module already has an attribute `{name}` of another kind")
        return existing

    def initialising(self) -> dict[str, Distiller]:
        """The distillers in their init phase this epoch, by name."""
        return {name: d for name, d in self.distillers.items() if self.current_epoch < d.init_epochs}

    # ----------------------------------------------------------------------------- set-up
    def setup(self, stage: str) -> None:
        """Probe both networks once with an example input, check that they fit the data, and let
        the distillers build their shape-dependent adapters (before the optimizer exists)."""
        needs_shapes = any(requested_taps(self.distillers.values()).values())
        if needs_shapes:  # the hooks are in place for the probe below and for training
            self.taps.attach({"student": self.student, "teacher": self.teacher}, self.distillers.values())
        datamodule = self._datamodule()
        networks = {"teacher": self.teacher, "student": self.student}
        check_class_names(networks, data_class_names(datamodule))
        for warning in normalization_mismatches(networks, datamodule):
            rank_zero_warn(warning)
        example = self.example_input()
        if example is None and needs_shapes:
            example = example_from_data(datamodule, stage, self._parameter_device())
        if example is None:
            return
        student, teacher = self.probe(example)
        check_logits(student.logits, teacher, getattr(datamodule, "num_classes", None))
        if teacher is not None and not self._distillers_built:
            num_samples = num_training_samples(datamodule, stage) if needs_shapes else None
            networks = {"student": self.student, "teacher": self.teacher}
            build_distillers(self.distillers, networks, {"student": student, "teacher": teacher}, num_samples)
            self._distillers_built = True

    def teardown(self, stage: str) -> None:
        self.taps.remove()

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self.taps.capturing = True

    def on_validation_start(self) -> None:
        self.taps.capturing = False  # evaluation reads logits only: no feature copies

    on_test_start = on_predict_start = on_validation_start

    def example_input(self, batch_size: int = 2) -> Tensor | None:
        """Zeros shaped like the datamodule's ``input_shape``, or None if it does not declare one."""
        shape = getattr(self._datamodule(), "input_shape", None)
        return None if shape is None else torch.zeros(batch_size, *shape, device=self._parameter_device())

    def probe(self, inputs: Tensor) -> tuple[Outputs, Outputs | None]:
        """Student and teacher outputs (with tapped features) for ``inputs``, without side effects:
        eval mode (no BatchNorm statistics update) and no gradients."""
        was_training = self.student.training
        self.student.eval()
        try:
            with torch.no_grad():
                batch = Batch(inputs, torch.zeros(0), torch.zeros(0))
                return self.student_outputs(inputs), self.teacher_outputs(batch)
        finally:
            self.student.train(was_training)

    # ----------------------------------------------------------------------------- evaluation
    def validation_step(
        self, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> dict[str, Tensor | None]:
        teacher_accuracy = self._teacher_accuracy_pending and not self.trainer.sanity_checking
        return self._evaluate(Batch(*batch), "val", teacher_accuracy, dataloader_idx)

    def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> dict[str, Tensor | None]:
        return self._evaluate(Batch(*batch), "test", True, dataloader_idx)

    def predict_step(self, batch: Any, batch_idx: int) -> Tensor:
        inputs = batch[0] if isinstance(batch, (list, tuple)) else batch
        return self.student(inputs).softmax(dim=1)

    def _evaluate(
        self, batch: Batch, stage: str, teacher_accuracy: bool, dataloader_idx: int
    ) -> dict[str, Tensor | None]:
        teacher_logits = self._evaluation_teacher_logits(batch, stage, dataloader_idx)
        student_logits = self.student(batch.inputs)
        self._take_tapped("student")
        self.metrics[stage].update(student_logits, batch.targets, teacher_logits, teacher_accuracy)
        # Returned for callbacks (on_validation_batch_end), e.g. kdlab.callbacks.KDDashboard.
        return {"logits": student_logits, "targets": batch.targets, "teacher_logits": teacher_logits}

    def _evaluation_teacher_logits(self, batch: Batch, stage: str, dataloader_idx: int) -> Tensor | None:
        """The teacher's logits for an evaluation batch; on validation data computed once per run
        (kdlab.eval_memo), since neither the frozen teacher nor the unaugmented samples change."""
        if self.teacher is None:
            return None

        def compute() -> Tensor:
            logits = self.teacher_logits(batch.inputs)
            self._take_tapped("teacher")  # evaluation reads logits only
            return logits

        if stage != "val":
            return compute()
        loaders = self.trainer.val_dataloaders
        loader = loaders[dataloader_idx] if isinstance(loaders, (list, tuple)) else loaders
        return self.eval_memo.logits(dataloader_idx, getattr(loader, "dataset", None), batch.indices, compute)

    def on_validation_epoch_start(self) -> None:
        self._check_finite()

    def on_validation_epoch_end(self) -> None:
        self._log_evaluation("val")
        if not self.trainer.sanity_checking:
            self._teacher_accuracy_pending = False

    def on_test_epoch_end(self) -> None:
        self._log_evaluation("test")

    def _log_evaluation(self, stage: str) -> None:
        # Logged once per epoch, not per batch (see kdlab.metrics.KDMetrics); Lightning computes
        # each metric (reduced over DDP processes) and resets it. A callback's own
        # on_validation_epoch_end runs before this one and sees them from the next epoch on.
        metrics = {f"{stage}/{name}": metric for name, metric in self.metrics[stage].updated().items()}
        accuracy = metrics.pop("val/acc1", None)
        self.log_dict(metrics)
        if accuracy is not None:  # shown in the progress bar
            self.log("val/acc1", accuracy, prog_bar=True)

    def on_train_epoch_start(self) -> None:
        self.epoch_means.reset()

    def on_train_epoch_end(self) -> None:
        self._check_finite()
        means = self.epoch_means.compute(lambda t: self.trainer.strategy.reduce(t, reduce_op="sum"))
        if means:
            self.log_dict({f"train/{name}": value for name, value in means.items()})
            self.log("train/loss", torch.stack(list(means.values())).sum(), prog_bar=True)

    # ----------------------------------------------------------------------------- optimisation
    def trainable_parameters(self) -> list[nn.Parameter]:
        """Every parameter that trains: the student's and the distillers', never the teacher's."""
        return [
            p for name, p in self.named_parameters() if p.requires_grad and not name.startswith("teacher.")
        ]

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.trainable_parameters())
        if self.lr_scheduler_factory is None:
            return optimizer
        with run_length(self._run_length):
            scheduler = self.lr_scheduler_factory(optimizer)
        config = {"scheduler": scheduler, "interval": self.lr_scheduler_interval}
        if isinstance(scheduler, ReduceLROnPlateau):
            if self.lr_scheduler_interval == "step":
                raise ConfigurationError(
                    "ReduceLROnPlateau reads a validation metric, so it steps per epoch: set "
                    "lr_scheduler_interval to 'epoch'"
                )
            # mode "max" watches the accuracy, "min" (torch's default) the validation loss
            config["monitor"] = "val/acc1" if scheduler.mode == "max" else "val/loss"
        return {"optimizer": optimizer, "lr_scheduler": config}

    def _run_length(self) -> RunLength:
        """The run's length in scheduler steps (for schedulers sized to the run)."""
        trainer = self.trainer
        if self.lr_scheduler_interval == "epoch":
            return RunLength(total=trainer.max_epochs, per_epoch=1)
        total = trainer.estimated_stepping_batches
        if not math.isfinite(total):
            raise ConfigurationError(
                "a learning-rate schedule sized to the run needs a finite run: set trainer.max_epochs "
                "or trainer.max_steps, or the scheduler's total_steps"
            )
        per_epoch = math.ceil(trainer.num_training_batches / trainer.accumulate_grad_batches)
        return RunLength(total=int(total), per_epoch=per_epoch)

    def optimizer_step(
        self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None
    ) -> Any:
        """The run's optimizer steps, except in an init phase, which has its own (kdlab.init_phase)."""
        initialising = self.initialising()
        if not initialising:
            self.init_optimizer.finish()
            return super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        init = self.init_optimizer.get(self.trainable_parameters(), initialising.values())
        self.trainer.strategy.optimizer_step(init, optimizer_closure, model=self)
        return None

    # ----------------------------------------------------------------------------- frozen teacher
    def on_fit_start(self) -> None:
        if self.teacher is not None:
            # Lightning warns about modules in eval mode at the start of training; the teacher's
            # are meant to be. Silence exactly that count so a student in eval mode still warns.
            count = sum(1 for _ in self.teacher.modules())
            warnings.filterwarnings("ignore", message=rf"Found {count} module\(s\) in eval mode")
        if any(d.init_epochs for d in self.distillers.values()):
            # The run's scheduler counts the init epochs while its optimizer waits for the main phase.
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)` before")

    def train(self, mode: bool = True) -> DistillationModule:
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._check_finite()  # never write a checkpoint from a step whose loss was NaN/inf
        state = checkpoint["state_dict"]
        checkpoint["state_dict"] = {k: v for k, v in state.items() if not k.startswith("teacher.")}
        checkpoint[TEACHER_KEY] = self.teacher_source
        names = data_class_names(self._datamodule())
        if names is not None:  # a teacher loaded from this file is checked against its next data
            checkpoint[CLASS_NAMES_KEY] = names
        if self.init_optimizer.state_dict() is not None:
            checkpoint[INIT_OPTIMIZER_KEY] = self.init_optimizer.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        verify_teacher(checkpoint.get(TEACHER_KEY), self.teacher_source)
        self.init_optimizer.load_state_dict(checkpoint.get(INIT_OPTIMIZER_KEY))
        if self.teacher is not None:
            teacher_state = {f"teacher.{k}": v for k, v in self.teacher.state_dict().items()}
            checkpoint["state_dict"] = {**checkpoint["state_dict"], **teacher_state}

    # ----------------------------------------------------------------------------- helpers
    def _datamodule(self) -> Any:
        return None if self._trainer is None else getattr(self._trainer, "datamodule", None)

    def _parameter_device(self) -> torch.device:
        # Not self.device: during setup Lightning already reports the target device while the
        # parameters are still where they were built.
        return next(self.student.parameters(), torch.empty(0)).device

    def _teacher_statistics(self) -> contextlib.AbstractContextManager:
        """Batch statistics in the teacher's BatchNorms if a distiller asks for them (OFD's option)."""
        wanted = any(d.teacher_batch_statistics for d in self.distillers.values())
        return batch_statistics(self.teacher) if wanted and self.teacher else contextlib.nullcontext()

    def _take_tapped(self, role: str) -> dict[str, Tensor]:
        return self.taps.take(role)

    def on_after_backward(self) -> None:
        if self._step_values is not None:
            values, batch_idx = self._step_values
            self.guard.record(values, batch_idx, self._parameters_trained())

    def _parameters_trained(self) -> list[nn.Parameter]:
        if getattr(self, "_trained", None) is None:
            self._trained = self.trainable_parameters()
        return self._trained

    def _check_finite(self) -> None:
        self.guard.check(self.current_epoch, self)

    def _save_plain_hyperparameters(self, *modules: Any) -> None:
        # Under LightningCLI the hyper-parameters are the resolved config (plain dicts with
        # class_path), which makes checkpoints self-describing. Built in Python, the module
        # arguments are live objects: keep them out so checkpoints stay loadable with
        # weights_only=True.
        ignore = [name for name, value in zip(_MODULE_ARGS, modules) if value is not None]
        try:
            from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters

            if _given_hyperparameters.get() is not None:
                ignore = []
        except ImportError:  # older/newer Lightning: keep the safe behaviour
            pass
        self.save_hyperparameters(ignore=ignore)
