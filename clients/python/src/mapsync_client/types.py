"""The values the client returns and the items a watch yields."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import List, Optional, Union

from ._proto import mapsync_pb2 as pb

__all__ = [
    "Op",
    "Source",
    "MapInfo",
    "Maps",
    "GetResult",
    "Entry",
    "Event",
    "InitialStateDone",
    "Progress",
    "StartOver",
    "WatchItem",
]


class Op(enum.Enum):
    """What happened to a key."""

    PUT = pb.OP_PUT
    """Created or replaced."""
    DELETE = pb.OP_DELETE
    """Removed."""


class Source(enum.Enum):
    """Which part of mapsync saw a change."""

    UNSPECIFIED = pb.SOURCE_UNSPECIFIED
    INITIAL = pb.SOURCE_INITIAL
    """Part of the initial state of a watch from revision 0."""
    EMIT = pb.SOURCE_EMIT
    """A BPF program through ``mapsync_update()`` / ``mapsync_delete()``."""
    TRACE = pb.SOURCE_TRACE
    """The ``bpf()`` syscall trace (bpftool, other agents)."""
    RESYNC = pb.SOURCE_RESYNC
    """A re-read of the kernel that found the mirror behind."""
    POLL = pb.SOURCE_POLL
    """The map's periodic poll (in-place updates, LRU evictions)."""
    API = pb.SOURCE_API
    """A write through the API (put, delete, txn, apply)."""

    @classmethod
    def of(cls, value: int) -> "Source":
        """The member for a wire value; unknown (newer) values map to UNSPECIFIED."""
        try:
            return cls(value)
        except ValueError:
            return cls.UNSPECIFIED


@dataclass(frozen=True)
class MapInfo:
    """One mirrored map, as ``ListMaps`` describes it."""

    name: str
    """The name clients use."""
    id: int
    """Kernel map id."""
    kind: str
    """Kind as the kernel names it: ``"hash"``, ``"percpu_array"``..."""
    key_size: int
    value_size: int
    """Declared value size (one CPU's slot for per-CPU maps)."""
    value_bytes: int
    """Bytes of a value as Get, List and Watch carry it."""
    max_entries: int
    entries: int
    """Entries in the mirror now."""
    kernel_name: str
    has_btf: bool = False
    """Whether keys and values carry BTF (decodable)."""
    switchable: bool = False
    """Whether the map is switchable (written atomically with
    :meth:`Client.apply`)."""
    version: int = 0
    """The live version of a switchable map (0 for others)."""


@dataclass(frozen=True)
class Maps:
    """The mirrored maps, at one revision."""

    epoch: int
    revision: int
    maps: List[MapInfo]

    def by_name(self, name: str) -> Optional[MapInfo]:
        """The map called ``name``, if mirrored."""
        return next((m for m in self.maps if m.name == name), None)


@dataclass(frozen=True)
class GetResult:
    """One key's value at one revision."""

    value: Optional[bytes]
    """The value, or None when the key is absent."""
    mod_revision: int
    """Revision of the change that set the value (0 when absent)."""
    revision: int
    """The revision the read reflects."""
    epoch: int
    """The server's epoch."""

    @property
    def found(self) -> bool:
        """Whether the key is present."""
        return self.value is not None


@dataclass(frozen=True)
class Entry:
    """One key and its value, in a listing or a :class:`StartOver`."""

    map: str
    key: bytes
    value: bytes
    mod_revision: int
    """Revision of the change that set the value."""


@dataclass(frozen=True)
class Event:
    """One change of one key (or, with source INITIAL, one entry of the initial
    state of a watch from revision 0)."""

    revision: int
    map: str
    op: Op
    key: bytes
    value: Optional[bytes]
    """The new value; None on delete."""
    source: Source
    prev_value: Optional[bytes] = None
    """With ``prev_value=True``: the value before this change, None when the
    key had none (and always None without it)."""


@dataclass(frozen=True)
class InitialStateDone:
    """The initial state of a watch from revision 0 is complete; live changes
    follow from ``revision + 1``."""

    revision: int


@dataclass(frozen=True)
class Progress:
    """Every matching change up to ``revision`` has been delivered."""

    revision: int


@dataclass(frozen=True)
class StartOver:
    """The watch could not resume without a gap (the server restarted, or the
    change log no longer reaches back far enough): here is the complete
    matching state instead. Replace what you hold with ``entries``; live
    changes follow from ``revision + 1``."""

    entries: List[Entry]
    revision: int
    """The revision the entries are as of."""
    epoch: int = 0
    """The server's epoch from now on."""
    reason: str = ""
    """Why: ``"EPOCH_CHANGED"``, ``"COMPACTED"`` or ``"INTERRUPTED"`` (a
    reconnect during the initial state)."""
    oldest: int = 0
    """With COMPACTED: the oldest revision the server still had."""


WatchItem = Union[Event, InitialStateDone, Progress, StartOver]
"""What a watch yields."""


def event_from_pb(e: "pb.Event") -> Event:
    """The typed event for a protobuf one."""
    op = Op.DELETE if e.op == pb.OP_DELETE else Op.PUT
    return Event(
        revision=e.revision,
        map=e.map,
        op=op,
        key=bytes(e.key),
        value=None if op is Op.DELETE else bytes(e.value),
        source=Source.of(e.source),
        prev_value=bytes(e.prev_value) if e.has_prev else None,
    )


def map_info_from_pb(m: "pb.MapDescription") -> MapInfo:
    """The typed description for a protobuf one."""
    return MapInfo(
        name=m.name,
        id=m.id,
        kind=m.kind,
        key_size=m.key_size,
        value_size=m.value_size,
        value_bytes=m.value_bytes,
        max_entries=m.max_entries,
        entries=m.entries,
        kernel_name=m.kernel_name,
        has_btf=m.has_btf,
        switchable=m.switchable,
        version=m.version,
    )

