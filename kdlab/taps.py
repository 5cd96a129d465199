"""Feature taps: forward hooks on student and teacher that capture what feature distillers read.

:class:`FeatureTaps` is a plain hook manager, owned by :class:`kdlab.DistillationModule`, as
timm's and torchdistill's are: the module attaches it at set-up for the layers its distillers
name and removes it at teardown; it holds the captured tensors until the module takes them.
"""

from __future__ import annotations

import difflib
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping

from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

ROLES = ("student", "teacher")
INPUT_SUFFIX = ":input"
# A transformer block's tokens ``(B, prefix + h*w, C)`` as a feature map ``(B, C, h, w)``: the
# model's ``token_prefix`` leading tokens (class, distillation, register tokens) are dropped and
# the patch tokens laid out on their square grid, so CNN feature methods read ViT features.
MAP_SUFFIX = ":map"
SUFFIXES = (INPUT_SUFFIX, MAP_SUFFIX)


class TapError(ValueError):
    """A requested tap names no layer of the model."""


def resolve_tap(model: nn.Module, name: str) -> str:
    """Resolve a tap name to ``"<module path>"``, ``"<module path>:input"`` or ``"<module path>:map"``.

    Aliases go through the model's ``feature_points`` dict (``"stage3"`` →
    ``"layer3"``); other names are module paths of ``model.named_modules()``, optionally with
    ``:input`` (the module's input) or ``:map`` (its output tokens as a feature map).

    Raises:
        TapError: the name resolves to no module; the message lists the closest valid names.
    """
    aliases: dict[str, str] = dict(getattr(model, "feature_points", None) or {})
    target = aliases.get(name, name)
    path, suffix = target, ""
    for candidate in SUFFIXES:
        if target.endswith(candidate):
            path, suffix = target[: -len(candidate)], candidate
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


class FeatureTaps:
    """Forward hooks for every tap some distiller declares, and the tensors they capture.

    :meth:`attach` resolves the names in each distiller's ``student_taps`` / ``teacher_taps``
    (aliases through the model's ``feature_points``; a wrong name fails here, listing the closest
    valid names) and registers one hook per distinct layer. Each forward pass leaves the output
    of each tapped module (or its input, for ``:input`` taps) under its tap names, copied,
    because in-place layers would otherwise overwrite it; :meth:`take` hands them over and
    empties the store. While ``capturing`` is off (the module turns it off for validation, test
    and predict) nothing is stored or copied.
    """

    def __init__(self) -> None:
        self._handles: list[RemovableHandle] = []
        self._store: dict[str, dict[str, Tensor]] = {role: {} for role in ROLES}
        self.capturing = True

    def attach(self, networks: Mapping[str, nn.Module | None], distillers: Iterable[nn.Module]) -> None:
        """Hook the layers that ``distillers`` tap in ``networks`` (by role); replaces earlier hooks."""
        self.remove()
        wanted = requested_taps(distillers)
        for role in ROLES:
            model = networks.get(role)
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
            prefix = int(getattr(model, "token_prefix", 0))
            for target, names in by_target.items():
                self._handles.append(self._register(modules, target, role, names, prefix))
        self.capturing = True

    def take(self, role: str) -> dict[str, Tensor]:
        """The tensors captured for ``role`` since the last call, by tap name."""
        features, self._store[role] = self._store[role], {}
        return features

    def remove(self) -> None:
        """Remove every hook and forget what was captured."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._store = {role: {} for role in ROLES}

    def _register(
        self, modules: dict[str, nn.Module], target: str, role: str, names: list[str], prefix: int
    ) -> RemovableHandle:
        as_map = target.endswith(MAP_SUFFIX)

        def keep(value: object) -> None:
            if not self.capturing:
                return
            if isinstance(value, (tuple, list)) and value and isinstance(value[0], Tensor):
                value = value[0]  # blocks returning (hidden states, attention, ...)
            if not isinstance(value, Tensor):
                raise TapError(f"{role} tap {names} ({target}) gives a {type(value).__name__}, not a tensor")
            # A copy, because in-place layers (ReLU(inplace=True), ``out += shortcut``) would
            # otherwise overwrite the captured tensor before a distiller reads it.
            value = tokens_to_map(value, prefix, f"{role} tap {target}") if as_map else value.clone()
            for name in names:
                self._store[role][name] = value

        if target.endswith(INPUT_SUFFIX):
            module = modules[target[: -len(INPUT_SUFFIX)]]
            return module.register_forward_pre_hook(lambda _module, args: keep(args[0]))
        module = modules[target[: -len(MAP_SUFFIX)] if as_map else target]
        return module.register_forward_hook(lambda _module, _args, output: keep(output))


def tokens_to_map(tokens: Tensor, prefix: int, what: str = "tokens") -> Tensor:
    """``(B, prefix + h*w, C)`` tokens as a ``(B, C, h, w)`` map of the patch tokens (square grid).

    Raises:
        TapError: not 3-D, or the patch tokens do not fill a square grid.
    """
    if tokens.ndim != 3:
        raise TapError(f"{what}: ':map' expects tokens (B, N, C), got shape {tuple(tokens.shape)}")
    batch, count, channels = tokens.shape
    side = math.isqrt(count - prefix) if count > prefix else 0
    if side * side != count - prefix or side == 0:
        raise TapError(
            f"{what}: {count} tokens minus {prefix} prefix token(s) do not fill a square grid; set the "
            "model's token_prefix to its number of class/distillation/register tokens"
        )
    patches = tokens[:, prefix:, :]
    return patches.transpose(1, 2).reshape(batch, channels, side, side).contiguous()
