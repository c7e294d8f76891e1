"""Typed errors, built from gRPC status codes in one place (:func:`from_status`)."""

from __future__ import annotations

import re
from typing import Optional

import grpc

__all__ = [
    "MapsyncError",
    "UnknownMap",
    "InvalidArgument",
    "OutOfRange",
    "Compacted",
    "EpochChanged",
    "Unavailable",
    "DeadlineExceeded",
    "WatchCanceled",
    "from_status",
]


class MapsyncError(Exception):
    """Base of every error this client raises.

    Attributes:
        code: the gRPC status code the server (or the transport) gave, when
            there was one.
        message: the server's human-readable detail.
    """

    def __init__(self, message: str, code: Optional[grpc.StatusCode] = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code

    def __str__(self) -> str:
        if self.code is None:
            return self.message
        return f"{self.message} ({self.code.name})"


class UnknownMap(MapsyncError):
    """The server mirrors no map of that name (``NOT_FOUND``).

    Attributes:
        map: the name asked for, when the call named one map.
    """

    def __init__(
        self, message: str, code: Optional[grpc.StatusCode] = None, map: Optional[str] = None
    ) -> None:
        super().__init__(message, code)
        self.map = map


class InvalidArgument(MapsyncError):
    """The request is malformed: a key of the wrong size, a bad range, a page
    size over the limit (``INVALID_ARGUMENT``)."""


class OutOfRange(MapsyncError):
    """A revision outside what the server can answer for (``OUT_OF_RANGE``):
    newer than its current revision, or compacted (see :class:`Compacted`)."""


class Compacted(OutOfRange):
    """The revision asked for is older than the change log reaches.

    Attributes:
        oldest: the oldest revision still available (0 when the server did not
            say).
    """

    def __init__(self, message: str, code: Optional[grpc.StatusCode] = None, oldest: int = 0) -> None:
        super().__init__(message, code)
        self.oldest = oldest


class EpochChanged(MapsyncError):
    """The revision belongs to another epoch: the server restarted since
    (``FAILED_PRECONDITION``). Start again from a snapshot."""


class Unavailable(MapsyncError):
    """The server cannot be reached, is shutting down, or is not ready yet
    (``UNAVAILABLE``). Retrying later may succeed."""


class DeadlineExceeded(MapsyncError):
    """The call's deadline passed first, e.g. while waiting for
    ``min_revision`` (``DEADLINE_EXCEEDED``)."""


class WatchCanceled(MapsyncError):
    """The server ended a watch for a reason the client cannot repair by
    resuming (e.g. a watched map is no longer mirrored).

    Attributes:
        reason: the ``CancelReason`` name without its prefix, e.g.
            ``"MAP_REMOVED"``.
        revision: the revision up to which the watch was complete.
    """

    def __init__(self, message: str, reason: str, revision: int = 0) -> None:
        super().__init__(message)
        self.reason = reason
        self.revision = revision

    def __str__(self) -> str:
        return f"watch canceled ({self.reason}): {self.message}"


_OLDEST = re.compile(r"oldest available revision is (\d+)")


def from_status(
    code: grpc.StatusCode, message: str, *, map: Optional[str] = None
) -> MapsyncError:
    """The typed error for a gRPC status.

    Args:
        code: the status code.
        message: the status message.
        map: the map the call was about, to name in :class:`UnknownMap`.
    """
    if code == grpc.StatusCode.NOT_FOUND:
        return UnknownMap(message, code, map=map)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidArgument(message, code)
    if code == grpc.StatusCode.OUT_OF_RANGE:
        oldest = _OLDEST.search(message)
        if oldest is not None or "compacted" in message:
            return Compacted(message, code, oldest=int(oldest.group(1)) if oldest else 0)
        return OutOfRange(message, code)
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return EpochChanged(message, code)
    if code == grpc.StatusCode.UNAVAILABLE:
        return Unavailable(message, code)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeadlineExceeded(message, code)
    return MapsyncError(message, code)


def from_rpc_error(error: grpc.RpcError, *, map: Optional[str] = None) -> MapsyncError:
    """The typed error for a failed call."""
    code = error.code() if isinstance(error, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = error.details() if isinstance(error, grpc.Call) else str(error)
    return from_status(code, details or code.name.lower(), map=map)
