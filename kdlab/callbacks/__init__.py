"""Lightning callbacks of kdlab: feature taps, schedules, teacher cache, compression report."""

from kdlab.callbacks.compression import CompressionReport
from kdlab.callbacks.dashboard import KDDashboard
from kdlab.callbacks.run_config import RunConfig

__all__: list[str] = ["CompressionReport", "KDDashboard", "RunConfig"]
