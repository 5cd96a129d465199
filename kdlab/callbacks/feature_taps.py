"""Forward hooks on teacher and student that capture the intermediate features distillers read."""

from __future__ import annotations

import difflib
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

ROLES = ("student", "teacher")
INPUT_SUFFIX = ":input"


class TapError(ValueError):
    """A requested tap names no layer of the model."""


def resolve_tap(model: nn.Module, name: str) -> str:
    """Resolve a tap name to ``"<module path>"`` or ``"<module path>:input"``.

    Aliases go through the model's ``feature_points`` dict (``"stage3"`` →
    ``"layer3"``); other names are module paths of ``model.named_modules()``.

    Raises:
        TapError: the name resolves to no module; the message lists the closest valid names.
    """
    aliases: dict[str, str] = dict(getattr(model, "feature_points", None) or {})
    target = aliases.get(name, name)
    path, suffix = (
        (target[: -len(INPUT_SUFFIX)], INPUT_SUFFIX) if target.endswith(INPUT_SUFFIX) else (target, "")
    )
    modules = dict(model.named_modules())
    if path and path in modules:
        return path + suffix
    via = f" (alias of '{target}')" if name in aliases else ""
    candidates = [*aliases, *(p for p in modules if p)]
    close = difflib.get_close_matches(path if name in aliases else name, candidates, n=6, cutoff=0.3)
    raise TapError(
        f"'{name}'{via} is no layer of {type(model).__name__}. Closest valid names: {close or 'none'}. "
        f"Aliases of this model: {sorted(aliases) or 'none (it has no feature_points)'}. Use an alias or a "
        "module path from named_modules(), with ':input' to tap a module's input."
    )


def requested_taps(distillers: Iterable[nn.Module]) -> dict[str, dict[str, list[str]]]:
    """Tap names wanted per role, each with the distillers (by class name) that want it."""
    wanted: dict[str, dict[str, list[str]]] = {role: defaultdict(list) for role in ROLES}
    for distiller in distillers:
        for role in ROLES:
            for name in getattr(distiller, f"{role}_taps", ()):
                wanted[role][name].append(type(distiller).__name__)
    return {role: dict(names) for role, names in wanted.items()}


class FeatureTaps(Callback):
    """Registers forward hooks for every tap the module's distillers declare.

    At ``setup`` the names in each distiller's ``student_taps`` / ``teacher_taps`` are resolved
    (aliases through the model's ``feature_points``) and one hook per distinct layer is
    registered; a wrong name fails here, listing the closest valid names. Hooks write into
    ``pl_module.tapped[role][name]`` (the output of a module, or its input for ``:input``
    taps), which the module empties into ``Outputs.features`` at every forward. Teacher
    features are produced inside the module's ``torch.inference_mode()``. Capture is on
    during training batches and the set-up probe, off during validation, test and predict,
    so evaluation neither stores nor copies features. Hooks are removed at ``teardown``.

    ``DistillationModule.configure_callbacks`` adds this callback itself when a distiller
    declares taps; there is nothing to configure.
    """

    def __init__(self) -> None:
        self._handles: list[RemovableHandle] = []
        self.capturing = True

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._remove()
        wanted = requested_taps(pl_module.distillers.values())
        for role in ROLES:
            model = getattr(pl_module, role)
            if model is None or not wanted[role]:
                continue
            by_target: dict[str, list[str]] = defaultdict(list)
            for name, users in wanted[role].items():
                try:
                    target = resolve_tap(model, name)
                except TapError as error:
                    raise TapError(f"{role} tap of {', '.join(sorted(set(users)))}: {error}") from None
                by_target[target].append(name)
            modules = dict(model.named_modules())
            for target, names in by_target.items():
                self._handles.append(self._register(modules, target, pl_module.tapped, role, names))
        self.capturing = True  # the module's set-up probe runs next and needs the features

    def _register(
        self,
        modules: dict[str, nn.Module],
        target: str,
        store: dict[str, dict[str, Tensor]],
        role: str,
        names: list[str],
    ) -> RemovableHandle:
        def keep(value: Tensor) -> None:
            if not self.capturing:
                return
            if not isinstance(value, Tensor):
                raise TapError(f"{role} tap {names} ({target}) gives a {type(value).__name__}, not a tensor")
            # A copy, because in-place layers (ReLU(inplace=True), ``out += shortcut``) would
            # otherwise overwrite the captured tensor before a distiller reads it.
            value = value.clone()
            for name in names:
                store[role][name] = value

        if target.endswith(INPUT_SUFFIX):
            module = modules[target[: -len(INPUT_SUFFIX)]]
            return module.register_forward_pre_hook(lambda _module, args: keep(args[0]))
        return modules[target].register_forward_hook(lambda _module, _args, output: keep(output))

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self.capturing = True

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.capturing = False

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.capturing = False

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.capturing = False

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._remove()
        for role in ROLES:
            pl_module.tapped[role] = {}

    def _remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
