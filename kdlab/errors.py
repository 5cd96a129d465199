"""Errors that kdlab reports to the user as one short message (no traceback) on the command line."""

from __future__ import annotations


class KDLabError(Exception):
    """Base of the errors whose message says what went wrong and how to fix it."""


class ConfigurationError(KDLabError, ValueError):
    """The run is configured in a way that cannot work; raised before training starts."""


class TeacherLoadError(KDLabError, RuntimeError):
    """A teacher weight file is missing, unsafe, corrupt or does not fit the architecture."""


class NonFiniteLossError(KDLabError, FloatingPointError):
    """A loss term became NaN or infinite; training stops before the next checkpoint."""


def find_kdlab_error(error: BaseException | None) -> KDLabError | None:
    """The first KDLabError in ``error``'s chain of causes (jsonargparse and Lightning wrap them)."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, KDLabError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None
