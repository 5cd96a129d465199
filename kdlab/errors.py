"""Errors that kdlab reports to the user as one short message (no traceback) on the command line."""

from __future__ import annotations

import os


class KDLabError(Exception):
    """Base of the errors whose message says what went wrong and how to fix it."""


class ConfigurationError(KDLabError, ValueError):
    """The run is configured in a way that cannot work; raised before training starts."""


class TeacherLoadError(KDLabError, RuntimeError):
    """A teacher weight file is missing, unsafe, corrupt or does not fit the architecture."""


class NonFiniteLossError(KDLabError, FloatingPointError):
    """A loss term became NaN or infinite; training stops before the next checkpoint."""


# Exceptions that kdlab's data and model layers (which import nothing from kdlab) raise on
# purpose, with a message for the user, when the input is wrong.
_USER_ERROR_TYPES = (KDLabError, ValueError, FileNotFoundError, NotADirectoryError, PermissionError)
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def _raised_by_kdlab(error: BaseException) -> bool:
    traceback = error.__traceback__
    while traceback is not None and traceback.tb_next is not None:
        traceback = traceback.tb_next
    if traceback is None:
        return False
    return os.path.abspath(traceback.tb_frame.f_code.co_filename).startswith(_PACKAGE_DIR)


def find_user_error(error: BaseException | None) -> BaseException | None:
    """The error to show the user in one line, from ``error``'s chain of causes, or None.

    That is a KDLabError, or a ValueError/FileNotFoundError/... raised by a ``raise``
    statement inside kdlab (jsonargparse and Lightning wrap these in their own errors).
    Anything else is a bug somewhere and deserves its traceback.
    """
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, KDLabError):
            return error
        if isinstance(error, _USER_ERROR_TYPES) and _raised_by_kdlab(error):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None
