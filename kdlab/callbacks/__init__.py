"""Lightning callbacks of kdlab: schedules, teacher cache, fast paths, reports, the student's EMA,
per-step curves, and the ones the ``kdlab`` command adds to every run (checkpoints, random
state, SLURM requeue)."""

from kdlab.callbacks.checkpoints import BestAndLastCheckpoint
from kdlab.callbacks.compression import CompressionReport
from kdlab.callbacks.ctkd import CTKD, LearnableTemperature, reverse_gradient
from kdlab.callbacks.dashboard import KDDashboard
from kdlab.callbacks.ema import StudentEMA
from kdlab.callbacks.fast_paths import FastPaths
from kdlab.callbacks.random_state import RandomState
from kdlab.callbacks.requeue import RequeueAtStepEnd
from kdlab.callbacks.run_config import RunConfig
from kdlab.callbacks.schedules import LossWeightSchedule, TemperatureSchedule
from kdlab.callbacks.step_logging import StepLogging
from kdlab.callbacks.summary import ModelSummaryWithFlops
from kdlab.callbacks.teacher_cache import TeacherCache

__all__ = [
    "CTKD",
    "BestAndLastCheckpoint",
    "CompressionReport",
    "FastPaths",
    "KDDashboard",
    "LearnableTemperature",
    "LossWeightSchedule",
    "ModelSummaryWithFlops",
    "RandomState",
    "RequeueAtStepEnd",
    "RunConfig",
    "StepLogging",
    "StudentEMA",
    "TeacherCache",
    "TemperatureSchedule",
    "reverse_gradient",
]
