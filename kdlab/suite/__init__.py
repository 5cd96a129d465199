"""``kdlab suite``: configs × seeds into a paper-style table (:mod:`kdlab.suite.command`).

Its parts: the plan of a suite file (:mod:`~kdlab.suite.plan`), running its tasks
(:mod:`~kdlab.suite.run`), reading their results (:mod:`~kdlab.suite.results`), the table and
plots (:mod:`~kdlab.suite.report`, :mod:`~kdlab.suite.plots`), SLURM array jobs
(:mod:`~kdlab.suite.slurm`).
"""

from kdlab.suite.command import main, run_task

__all__ = ["main", "run_task"]
