"""The ``kdlab`` command (:mod:`kdlab.cli.main`): LightningCLI with kdlab's defaults and tools."""

from kdlab.callbacks.checkpoints import BestAndLastCheckpoint
from kdlab.cli.main import KDLabCLI, build, link_num_classes, main

__all__ = ["BestAndLastCheckpoint", "KDLabCLI", "build", "link_num_classes", "main"]
