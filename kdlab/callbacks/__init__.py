"""Lightning callbacks of kdlab: feature taps, schedules, teacher cache, compression report."""

from kdlab.callbacks.feature_taps import FeatureTaps, TapError, resolve_tap

__all__ = ["FeatureTaps", "TapError", "resolve_tap"]
