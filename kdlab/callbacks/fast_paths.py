"""Speed options of a distillation run that leave its results unchanged (up to float rounding)."""

from __future__ import annotations

import copy

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from kdlab.fold import fold_batchnorm


def requested_teacher_taps(pl_module: LightningModule) -> list[str]:
    """The teacher layers that some distiller of ``pl_module`` taps (empty: logits only)."""
    distillers = getattr(pl_module, "distillers", {})
    return sorted({path for distiller in distillers.values() for path in distiller.teacher_taps})


class FastPaths(Callback):
    """Run the teacher as a fast inference-only copy, and optionally compile or re-layout the student.

    The teacher copy has its BatchNorms folded into the preceding convolutions (one pass less over
    every feature map; outputs equal to float32 rounding), can be stored channels-last and
    compiled. It is a private copy: the teacher the module holds, saves and fingerprints is never
    modified. When a distiller taps teacher features the teacher is left as it is (the hooks
    live on the original modules). Mixed precision is the Trainer's ``precision`` (e.g.
    ``bf16-mixed``); the loss terms are computed in float32 either way.

    Args:
        fold_batchnorm: Fold the teacher's BatchNorms into its convolutions.
        channels_last: Store the student and the teacher copy channels-last. None (auto): on the
            CPU, and on CUDA under 16-bit mixed precision (tensor cores), for networks with 2-d
            convolutions that do not set ``prefers_channels_last = False``. Measured on a 2-core
            CPU (docs/performance.md): 1.05-1.5x faster training steps across the CIFAR zoo, except
            ShuffleNetV2 (0.76x: its channel splits copy), which opts out.
        compile_teacher: ``torch.compile`` the teacher copy (compiles on the first batches).
        compile_student: ``torch.compile`` the student in place (parameter names, and so
            checkpoints, are unchanged).
        compile_mode: ``mode`` of ``torch.compile`` (``default``, ``reduce-overhead``,
            ``max-autotune``).
    """

    def __init__(
        self,
        fold_batchnorm: bool = True,
        channels_last: bool | None = None,
        compile_teacher: bool = False,
        compile_student: bool = False,
        compile_mode: str = "default",
    ) -> None:
        self.fold_batchnorm = fold_batchnorm
        self.channels_last = channels_last
        self.compile_teacher = compile_teacher
        self.compile_student = compile_student
        self.compile_mode = compile_mode
        self.folded_pairs = 0
        self.teacher_copy: nn.Module | None = None
        self._auto_layout: bool | None = None  # auto channels-last on this run's device and precision

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        # Before the optimizer exists and before the move to the device (which keeps the layout).
        device = trainer.strategy.root_device.type
        half = str(trainer.precision).startswith(("16", "bf16"))
        self._auto_layout = device == "cpu" or (device == "cuda" and half)
        if self._channels_last(pl_module.student):
            pl_module.student.to(memory_format=torch.channels_last)
        if self.compile_student:
            pl_module.student.compile(mode=self.compile_mode)

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        teacher = getattr(pl_module, "teacher", None)
        if teacher is None or not (
            self.fold_batchnorm or self._channels_last(teacher) or self.compile_teacher
        ):
            return
        taps = requested_teacher_taps(pl_module)
        if taps:
            rank_zero_info(f"FastPaths: teacher run as it is, since distillers tap its layers {taps}")
            return
        if any(d.teacher_batch_statistics for d in getattr(pl_module, "distillers", {}).values()):
            return  # its BatchNorms normalise by batch statistics: nothing to fold
        self.teacher_copy = self.build_teacher(teacher, _example(pl_module))
        # A bound method, not a module: the copy must stay out of the state dict and parameters.
        pl_module.teacher_inference.use_runner(self.teacher_copy.__call__)

    def build_teacher(self, teacher: nn.Module, example: torch.Tensor | None) -> nn.Module:
        """The fast inference copy of ``teacher`` (on its device), as configured."""
        if self.fold_batchnorm:
            network, self.folded_pairs = fold_batchnorm(teacher, example=example)
        else:
            network = copy.deepcopy(teacher).eval().requires_grad_(False)
        if self._channels_last(teacher):
            network = network.to(memory_format=torch.channels_last)
        if self.compile_teacher:
            network = torch.compile(network, mode=self.compile_mode)
        return network

    def _channels_last(self, network: nn.Module) -> bool:
        if self.channels_last is not None:
            return self.channels_last
        auto = self._auto_layout
        if auto is None:  # built outside a fit (kdlab cache): the network's device decides
            auto = next(network.parameters(), torch.empty(0)).device.type == "cpu"
        convolutional = any(isinstance(m, nn.Conv2d) for m in network.modules())
        return auto and convolutional and getattr(network, "prefers_channels_last", True)

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.teacher_copy is not None and stage == "fit":
            pl_module.teacher_inference.use_runner(None)
            self.teacher_copy = None


def _example(pl_module: LightningModule) -> torch.Tensor | None:
    example = pl_module.example_input() if hasattr(pl_module, "example_input") else None
    if example is None:
        return None
    generator = torch.Generator().manual_seed(0)
    return torch.randn(example.shape, generator=generator).to(example.device)
