"""Lightning callbacks of kdlab: feature taps, schedules, teacher cache, compression report."""

from kdlab.callbacks.compression import CompressionReport

__all__: list[str] = ["CompressionReport"]
