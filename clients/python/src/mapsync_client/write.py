"""What the write calls take and return: Txn compares and ops, results, and
the Apply stream cut into messages under the server's request cap."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, List, Optional, Tuple, Union

from ._proto import mapsync_pb2 as pb
from .errors import EntryTooLarge

__all__ = [
    "Previous",
    "WriteResult",
    "TxnResult",
    "Applied",
    "Compare",
    "TxnPut",
    "TxnDelete",
    "MAX_REQUEST_BYTES",
    "APPLY_CHUNK_BYTES",
]

MAX_REQUEST_BYTES = 64 * 1024
"""The server's default cap on one request message."""
APPLY_CHUNK_BYTES = MAX_REQUEST_BYTES - 1024
"""What one Apply message carries at most, encoded."""

_PUT_MODES = {"any": pb.PUT_MODE_ANY, "no_exist": pb.PUT_MODE_NO_EXIST, "exist": pb.PUT_MODE_EXIST}
_RESULTS = {
    "==": pb.Compare.EQUAL,
    "!=": pb.Compare.NOT_EQUAL,
    ">": pb.Compare.GREATER,
    "<": pb.Compare.LESS,
}


def put_mode(mode: str) -> int:
    """The protobuf PutMode of ``"any"``, ``"no_exist"`` or ``"exist"``."""
    try:
        return _PUT_MODES[mode]
    except KeyError:
        raise ValueError(f"put mode {mode!r}: expected one of {', '.join(_PUT_MODES)}") from None


@dataclass(frozen=True)
class Previous:
    """A key's state just before a write."""

    value: Optional[bytes]
    """The value, None if the key was absent."""
    mod_revision: int
    """The revision that set it (0 when absent)."""


def previous_from_pb(prev: "pb.PrevValue") -> Previous:
    return Previous(value=bytes(prev.value) if prev.found else None, mod_revision=prev.mod_revision)


@dataclass(frozen=True)
class WriteResult:
    """A put or delete carried out."""

    revision: int
    """The revision at which the write is visible: ``get(...,
    min_revision=revision)`` reads it."""
    epoch: int
    """The server's epoch."""
    prev: Optional[Previous] = None
    """With ``prev_value=True``: the key's state before the write."""


@dataclass(frozen=True)
class TxnResult:
    """A transaction carried out."""

    succeeded: bool
    """Whether the compares held (``success`` ran) or not (``failure`` ran)."""
    revision: int
    """The revision at which its ops are visible."""
    epoch: int
    prev: List[Previous] = field(default_factory=list)
    """With ``prev_value=True``: per op run, its key's state before it."""


@dataclass(frozen=True)
class Applied:
    """An Apply carried out."""

    version: int
    """The version now live."""
    revision: int
    """The revision at which the new set is visible."""
    epoch: int
    entries: int
    """Entries of the new set."""
    changed: int
    """Keys the switch changed."""
    switch_ns: int
    """How long the one outer-slot update took, in nanoseconds."""


@dataclass(frozen=True)
class Compare:
    """One condition of a Txn: the key's mod revision, value or existence
    related to a target by ``result`` (``"=="``, ``"!="``, ``">"``, ``"<"``).
    Build with :meth:`mod_revision`, :meth:`value` or :meth:`exists`."""

    map: str
    key: bytes
    result: str
    target: Tuple[str, Union[int, bytes, bool]]

    @classmethod
    def mod_revision(cls, map: str, key: bytes, result: str, revision: int) -> "Compare":
        """The key's mod revision (an absent key's is 0) ``result`` ``revision``."""
        return cls(map, bytes(key), result, ("mod_revision", revision))

    @classmethod
    def value(cls, map: str, key: bytes, result: str, value: bytes) -> "Compare":
        """The key's value, bytewise (an absent key never compares true)."""
        return cls(map, bytes(key), result, ("value", bytes(value)))

    @classmethod
    def exists(cls, map: str, key: bytes, exists: bool = True) -> "Compare":
        """The key is present (True) or absent (False)."""
        return cls(map, bytes(key), "==", ("exists", exists))

    def to_pb(self) -> "pb.Compare":
        try:
            result = _RESULTS[self.result]
        except KeyError:
            raise ValueError(f"compare result {self.result!r}: expected one of {', '.join(_RESULTS)}") from None
        name, target = self.target
        return pb.Compare(map=self.map, key=self.key, result=result, **{name: target})  # type: ignore[arg-type]


@dataclass(frozen=True)
class TxnPut:
    """A put inside a Txn (``mode``: ``"any"``, ``"no_exist"``, ``"exist"``)."""

    map: str
    key: bytes
    value: bytes
    mode: str = "any"

    def to_pb(self) -> "pb.TxnOp":
        return pb.TxnOp(
            put=pb.TxnPut(map=self.map, key=bytes(self.key), value=bytes(self.value), mode=put_mode(self.mode))
        )


@dataclass(frozen=True)
class TxnDelete:
    """A delete inside a Txn."""

    map: str
    key: bytes

    def to_pb(self) -> "pb.TxnOp":
        return pb.TxnOp(delete=pb.TxnDelete(map=self.map, key=bytes(self.key)))


def _varint_len(n: int) -> int:
    length = 1
    while n >= 0x80:
        n >>= 7
        length += 1
    return length


def apply_messages(
    map: str,
    entries: Iterable[Tuple[bytes, Optional[bytes]]],
    *,
    merge: bool,
    expect_version: Optional[int],
) -> List["pb.ApplyRequest"]:
    """The messages of an Apply, each under :data:`APPLY_CHUNK_BYTES`
    encoded; the first names the map, mode and expected version. Entries are
    ``(key, value)``; a value of None deletes (merge only). Raises
    :class:`EntryTooLarge` before anything is sent."""
    first = pb.ApplyRequest(map=map, mode=pb.APPLY_MODE_MERGE if merge else pb.APPLY_MODE_REPLACE)
    if expect_version is not None:
        first.expect_version = expect_version
    messages = [first]
    size = first.ByteSize()
    for key, value in entries:
        if value is None:
            entry = pb.ApplyEntry(key=bytes(key), delete=True)
        else:
            entry = pb.ApplyEntry(key=bytes(key), value=bytes(value))
        length = entry.ByteSize()
        framed = 1 + _varint_len(length) + length
        if framed > APPLY_CHUNK_BYTES:
            raise EntryTooLarge(
                f"an Apply entry of {framed} bytes does not fit in one request of at most {APPLY_CHUNK_BYTES} bytes"
            )
        if size + framed > APPLY_CHUNK_BYTES:
            messages.append(pb.ApplyRequest())
            size = 0
        messages[-1].entries.append(entry)
        size += framed
    return messages
