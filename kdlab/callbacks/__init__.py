"""Lightning callbacks of kdlab: feature taps, schedules, teacher cache, compression report."""

from kdlab.callbacks.compression import CompressionReport
from kdlab.callbacks.fast_paths import FastPaths
from kdlab.callbacks.teacher_cache import TeacherCache

__all__: list[str] = ["CompressionReport", "FastPaths", "TeacherCache"]
