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


class CheckpointError(KDLabError, RuntimeError):
    """A checkpoint is missing, unsafe to unpickle or corrupt, or checkpointing is misconfigured."""


def unpickling_detail(error: BaseException) -> str:
    """The line of a refused ``torch.load(weights_only=True)`` that names the offending object."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    named = [line for line in lines if "GLOBAL" in line or "Unsupported" in line]
    return (named or lines or [type(error).__name__])[0]


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


# What a DDP collective raises on a healthy process when another process of the group died.
_PEER_LOST = ("Connection closed by peer", "remote worker crashing", "Connection reset by peer")


def lost_peer(error: BaseException | None) -> str | None:
    """One line for an error that only says another DDP process died (its own error is the
    one to read), or None. Recognises gloo's messages and torch's ``DistBackendError``."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        text = str(error)
        if any(marker in text for marker in _PEER_LOST) or type(error).__name__ == "DistBackendError":
            detail = text.strip().splitlines()[0] if text.strip() else type(error).__name__
            return (
                "another process of this distributed run stopped, so this one cannot go on; read that "
                f"process's error above ({detail[:160]})"
            )
        error = error.__cause__ or error.__context__
    return None
