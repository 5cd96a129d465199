"""kdlab's tools beside training: ``kdlab demo``, ``kdlab export`` and ``kdlab cache``.

Tools that read a ``kdlab fit`` configuration (``kdlab cache``, ``kdlab suite``) do not import
the command line: the ``kdlab`` command hands them a :data:`Build` function, which builds (and
runs, if asked) what ``kdlab <arguments>`` would; Python callers pass ``kdlab.cli.build``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

#: ``build(arguments, run)``: the LightningCLI object of ``kdlab <arguments>`` (with ``.model``,
#: ``.datamodule``, ``.trainer``), built and, with ``run=True``, run.
Build = Callable[[list[str], bool], Any]
