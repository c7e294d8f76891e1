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
    "AlreadyExists",
    "NotFound",
    "ModRevisionMismatch",
    "VersionMismatch",
    "NotSwitchable",
    "PermissionDenied",
    "MapFull",
    "EntryTooLarge",
    "from_status",
    "from_write_error",
]


class MapsyncError(Exception):
    """Base of every error this client raises.

    Attributes:
        code: the gRPC status code the server (or the transport) gave, when
            there was one.
        message: the server's human-readable detail.
    """

    failed_op: Optional[int] = None
    """In a Txn the kernel refused: the index of the refused op in the branch
    that ran (the ops before it were undone); else None."""

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


class AlreadyExists(MapsyncError):
    """A put with ``mode="no_exist"`` on a present key (array maps: always)
    (``ALREADY_EXISTS``); nothing was written."""


class NotFound(MapsyncError):
    """A put with ``mode="exist"`` or a delete on an absent key
    (``NOT_FOUND``); nothing was written. (An unknown map is
    :class:`UnknownMap`.)"""


class ModRevisionMismatch(MapsyncError):
    """A compare-and-swap expectation did not hold (``FAILED_PRECONDITION``);
    nothing was written.

    Attributes:
        current: the key's mod revision now (0: absent).
    """

    def __init__(self, message: str, code: Optional[grpc.StatusCode] = None, current: int = 0) -> None:
        super().__init__(message, code)
        self.current = current


class VersionMismatch(MapsyncError):
    """An Apply's ``expect_version`` is not the live version
    (``FAILED_PRECONDITION``); nothing was switched.

    Attributes:
        live: the version live now.
    """

    def __init__(self, message: str, code: Optional[grpc.StatusCode] = None, live: int = 0) -> None:
        super().__init__(message, code)
        self.live = live


class NotSwitchable(MapsyncError):
    """Apply on a map that is not switchable (``FAILED_PRECONDITION``)."""


class PermissionDenied(MapsyncError):
    """The caller may not do this (``PERMISSION_DENIED``). Without a policy
    file: writes over the Unix socket only by root and the uids/gids of
    ``serve --write-uid/--write-gid``, over TCP by nobody. With one: the
    caller's roles do not allow reading or writing the map."""


class Unauthenticated(MapsyncError):
    """The server's policy file does not know the caller
    (``UNAUTHENTICATED``): a wrong or missing bearer token, a client
    certificate or Unix user that is no user of the policy."""


class MapFull(MapsyncError):
    """The map is full, or an Apply has more entries than it holds
    (``RESOURCE_EXHAUSTED``)."""


class EntryTooLarge(MapsyncError):
    """One Apply entry does not fit in a request message on its own (checked
    before anything is sent)."""


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
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return PermissionDenied(message, code)
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return Unauthenticated(message, code)
    return MapsyncError(message, code)


def from_rpc_error(error: grpc.RpcError, *, map: Optional[str] = None) -> MapsyncError:
    """The typed error for a failed call."""
    code = error.code() if isinstance(error, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = error.details() if isinstance(error, grpc.Call) else str(error)
    return from_status(code, details or code.name.lower(), map=map)


CURRENT_MOD_REVISION = "mapsync-current-mod-revision"
"""Metadata key: the key's mod revision, on a compare-and-swap mismatch."""
LIVE_VERSION = "mapsync-live-version"
"""Metadata key: the live version, on an Apply version mismatch."""
FAILED_OP = "mapsync-failed-op"
"""Metadata key: the index of the refused op of a Txn."""

_MOD_REVISION = re.compile(r"mod revision is (\d+)")
_LIVE = re.compile(r"live version is (\d+)")


def _metadata_int(error: grpc.RpcError, key: str) -> Optional[int]:
    if not isinstance(error, grpc.Call):
        return None
    for pairs in (error.trailing_metadata(), error.initial_metadata()):
        for k, v in pairs or ():
            if k == key:
                try:
                    return int(v)
                except (TypeError, ValueError):
                    return None
    return None


def from_write_error(error: grpc.RpcError, *, map: Optional[str] = None) -> MapsyncError:
    """The typed error of a failed write call, from its status code and the
    metadata the server sets (``mapsync-current-mod-revision``,
    ``mapsync-live-version``, ``mapsync-failed-op``); numbers only in the
    message are read from it."""
    code = error.code() if isinstance(error, grpc.Call) else grpc.StatusCode.UNKNOWN
    message = (error.details() if isinstance(error, grpc.Call) else str(error)) or code.name.lower()
    failed_op = _metadata_int(error, FAILED_OP)
    typed: MapsyncError
    if code == grpc.StatusCode.ALREADY_EXISTS:
        typed = AlreadyExists(message, code)
    elif code == grpc.StatusCode.NOT_FOUND and failed_op is None and "unknown map" in message:
        typed = UnknownMap(message, code, map=map)
    elif code == grpc.StatusCode.NOT_FOUND:
        typed = NotFound(message, code)
    elif code == grpc.StatusCode.PERMISSION_DENIED:
        typed = PermissionDenied(message, code)
    elif code == grpc.StatusCode.RESOURCE_EXHAUSTED and "too large" not in message and "request larger" not in message:
        typed = MapFull(message, code)
    elif code == grpc.StatusCode.FAILED_PRECONDITION:
        current = _metadata_int(error, CURRENT_MOD_REVISION)
        if current is None and (m := _MOD_REVISION.search(message)):
            current = int(m.group(1))
        live = _metadata_int(error, LIVE_VERSION)
        if live is None and (m := _LIVE.search(message)):
            live = int(m.group(1))
        if current is not None:
            typed = ModRevisionMismatch(message, code, current=current)
        elif live is not None:
            typed = VersionMismatch(message, code, live=live)
        elif "not switchable" in message:
            typed = NotSwitchable(message, code)
        else:
            typed = EpochChanged(message, code)
    else:
        typed = from_status(code, message, map=map)
    typed.failed_op = failed_op
    return typed
