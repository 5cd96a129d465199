"""Lightning callbacks of kdlab: feature taps, schedules, teacher cache, compression report."""

__all__: list[str] = []
