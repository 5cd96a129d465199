"""Lightning callbacks of kdlab: feature taps, schedules, teacher cache, fast paths, reports."""

from kdlab.callbacks.compression import CompressionReport
from kdlab.callbacks.ctkd import CTKD, LearnableTemperature, reverse_gradient
from kdlab.callbacks.dashboard import KDDashboard
from kdlab.callbacks.fast_paths import FastPaths
from kdlab.callbacks.feature_taps import FeatureTaps, TapError, resolve_tap
from kdlab.callbacks.run_config import RunConfig
from kdlab.callbacks.schedules import LossWeightSchedule, TemperatureSchedule
from kdlab.callbacks.teacher_cache import TeacherCache

__all__ = [
    "CTKD",
    "CompressionReport",
    "FastPaths",
    "FeatureTaps",
    "KDDashboard",
    "LearnableTemperature",
    "LossWeightSchedule",
    "RunConfig",
    "TapError",
    "TeacherCache",
    "TemperatureSchedule",
    "resolve_tap",
    "reverse_gradient",
]
