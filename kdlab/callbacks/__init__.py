"""Lightning callbacks of kdlab: feature taps, schedules, teacher cache, compression report, dashboard."""

from kdlab.callbacks.compression import CompressionReport
from kdlab.callbacks.ctkd import CTKD, LearnableTemperature, reverse_gradient
from kdlab.callbacks.dashboard import KDDashboard
from kdlab.callbacks.feature_taps import FeatureTaps, TapError, resolve_tap
from kdlab.callbacks.run_config import RunConfig
from kdlab.callbacks.schedules import LossWeightSchedule, TemperatureSchedule

__all__ = [
    "CTKD",
    "CompressionReport",
    "FeatureTaps",
    "KDDashboard",
    "LearnableTemperature",
    "LossWeightSchedule",
    "RunConfig",
    "TapError",
    "TemperatureSchedule",
    "resolve_tap",
    "reverse_gradient",
]
