"""Random-number generator state in checkpoints, so a resumed run draws the same numbers.

Dropout masks, random negatives of contrastive distillers and anything else drawn from the global
generators (torch CPU and CUDA, numpy, Python's ``random``) continue exactly where the
interrupted run stood. kdlab's data order does not depend on these generators (samplers are
seeded by ``(seed, epoch)``), so restoring them is what remains for a bit-identical resume.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn


def capture() -> dict[str, Any]:
    """This process's generator states, as tensors and plain containers (loadable with
    ``torch.load(weights_only=True)``)."""
    kind, keys, position, has_gauss, cached_gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gauss": float(cached_gauss),
        },
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore(state: dict[str, Any]) -> None:
    """Set this process's generators to a state returned by :func:`capture`."""
    torch.set_rng_state(state["torch"])
    saved = state["numpy"]
    keys = saved["keys"].numpy().astype(np.uint32)
    np.random.set_state((saved["kind"], keys, saved["position"], saved["has_gauss"], saved["cached_gauss"]))
    python = state["python"]
    random.setstate((python["version"], tuple(python["internal"]), python["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


class RandomState(Callback):
    """Saves every process's generator states in checkpoints and restores them on resume.

    The states are captured when a checkpoint is written (end of a training step or epoch) and
    put back at the start of the resumed fit, after Lightning's set-up (sanity validation runs in
    an isolated RNG scope), immediately before the next training step would run. Under DDP the
    states of all ranks are gathered into rank 0's checkpoint, and rank ``r`` gets its own back
    (a run resumed on a different number of processes keeps the states it was given by seeding).

    The ``kdlab`` command adds this callback by default.
    """

    def __init__(self) -> None:
        self._loaded: list[dict[str, Any]] | None = None

    def state_dict(self) -> dict[str, Any]:
        state = capture()
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            # Every rank dumps the checkpoint together (only rank 0 writes it), so this
            # collective is matched on all ranks.
            gathered: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, state)
            return {"ranks": gathered}
        return {"ranks": [state]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._loaded = list(state_dict.get("ranks") or [])

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        loaded, self._loaded = self._loaded, None
        if not loaded:
            return
        if len(loaded) != trainer.world_size:
            rank_zero_warn(
                f"the checkpoint holds the random-generator states of {len(loaded)} process(es) and this "
                f"run has {trainer.world_size}: the generators keep their seeded states, so random draws "
                "(dropout, sampled negatives) differ from an uninterrupted run"
            )
            return
        restore(loaded[trainer.global_rank])
