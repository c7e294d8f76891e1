from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Op(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OP_UNSPECIFIED: _ClassVar[Op]
    OP_PUT: _ClassVar[Op]
    OP_DELETE: _ClassVar[Op]

class Source(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SOURCE_UNSPECIFIED: _ClassVar[Source]
    SOURCE_INITIAL: _ClassVar[Source]
    SOURCE_EMIT: _ClassVar[Source]
    SOURCE_TRACE: _ClassVar[Source]
    SOURCE_RESYNC: _ClassVar[Source]
    SOURCE_POLL: _ClassVar[Source]
    SOURCE_API: _ClassVar[Source]

class CancelReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CANCEL_REASON_UNSPECIFIED: _ClassVar[CancelReason]
    CANCEL_REASON_COMPACTED: _ClassVar[CancelReason]
    CANCEL_REASON_EPOCH_CHANGED: _ClassVar[CancelReason]
    CANCEL_REASON_SLOW_CONSUMER: _ClassVar[CancelReason]
    CANCEL_REASON_MAP_REMOVED: _ClassVar[CancelReason]
    CANCEL_REASON_CLIENT_REQUESTED: _ClassVar[CancelReason]
    CANCEL_REASON_REJECTED: _ClassVar[CancelReason]

class PutMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PUT_MODE_ANY: _ClassVar[PutMode]
    PUT_MODE_NO_EXIST: _ClassVar[PutMode]
    PUT_MODE_EXIST: _ClassVar[PutMode]

class ApplyMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    APPLY_MODE_REPLACE: _ClassVar[ApplyMode]
    APPLY_MODE_MERGE: _ClassVar[ApplyMode]
OP_UNSPECIFIED: Op
OP_PUT: Op
OP_DELETE: Op
SOURCE_UNSPECIFIED: Source
SOURCE_INITIAL: Source
SOURCE_EMIT: Source
SOURCE_TRACE: Source
SOURCE_RESYNC: Source
SOURCE_POLL: Source
SOURCE_API: Source
CANCEL_REASON_UNSPECIFIED: CancelReason
CANCEL_REASON_COMPACTED: CancelReason
CANCEL_REASON_EPOCH_CHANGED: CancelReason
CANCEL_REASON_SLOW_CONSUMER: CancelReason
CANCEL_REASON_MAP_REMOVED: CancelReason
CANCEL_REASON_CLIENT_REQUESTED: CancelReason
CANCEL_REASON_REJECTED: CancelReason
PUT_MODE_ANY: PutMode
PUT_MODE_NO_EXIST: PutMode
PUT_MODE_EXIST: PutMode
APPLY_MODE_REPLACE: ApplyMode
APPLY_MODE_MERGE: ApplyMode

class ResponseHeader(_message.Message):
    __slots__ = ("epoch", "revision")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    revision: int
    def __init__(self, epoch: _Optional[int] = ..., revision: _Optional[int] = ...) -> None: ...

class ListMapsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class MapDescription(_message.Message):
    __slots__ = ("name", "id", "kind", "key_size", "value_size", "value_bytes", "max_entries", "entries", "kernel_name", "has_btf", "switchable", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    KEY_SIZE_FIELD_NUMBER: _ClassVar[int]
    VALUE_SIZE_FIELD_NUMBER: _ClassVar[int]
    VALUE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_ENTRIES_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    KERNEL_NAME_FIELD_NUMBER: _ClassVar[int]
    HAS_BTF_FIELD_NUMBER: _ClassVar[int]
    SWITCHABLE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    id: int
    kind: str
    key_size: int
    value_size: int
    value_bytes: int
    max_entries: int
    entries: int
    kernel_name: str
    has_btf: bool
    switchable: bool
    version: int
    def __init__(self, name: _Optional[str] = ..., id: _Optional[int] = ..., kind: _Optional[str] = ..., key_size: _Optional[int] = ..., value_size: _Optional[int] = ..., value_bytes: _Optional[int] = ..., max_entries: _Optional[int] = ..., entries: _Optional[int] = ..., kernel_name: _Optional[str] = ..., has_btf: _Optional[bool] = ..., switchable: _Optional[bool] = ..., version: _Optional[int] = ...) -> None: ...

class ListMapsResponse(_message.Message):
    __slots__ = ("header", "maps")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    MAPS_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    maps: _containers.RepeatedCompositeFieldContainer[MapDescription]
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., maps: _Optional[_Iterable[_Union[MapDescription, _Mapping]]] = ...) -> None: ...

class GetRequest(_message.Message):
    __slots__ = ("map", "key", "revision", "min_revision", "epoch", "decode")
    MAP_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    MIN_REVISION_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    DECODE_FIELD_NUMBER: _ClassVar[int]
    map: str
    key: bytes
    revision: int
    min_revision: int
    epoch: int
    decode: bool
    def __init__(self, map: _Optional[str] = ..., key: _Optional[bytes] = ..., revision: _Optional[int] = ..., min_revision: _Optional[int] = ..., epoch: _Optional[int] = ..., decode: _Optional[bool] = ...) -> None: ...

class GetResponse(_message.Message):
    __slots__ = ("header", "found", "value", "mod_revision", "value_json")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    FOUND_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    MOD_REVISION_FIELD_NUMBER: _ClassVar[int]
    VALUE_JSON_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    found: bool
    value: bytes
    mod_revision: int
    value_json: str
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., found: _Optional[bool] = ..., value: _Optional[bytes] = ..., mod_revision: _Optional[int] = ..., value_json: _Optional[str] = ...) -> None: ...

class ListRequest(_message.Message):
    __slots__ = ("map", "page_size", "revision", "min_revision", "epoch", "decode")
    MAP_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    MIN_REVISION_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    DECODE_FIELD_NUMBER: _ClassVar[int]
    map: str
    page_size: int
    revision: int
    min_revision: int
    epoch: int
    decode: bool
    def __init__(self, map: _Optional[str] = ..., page_size: _Optional[int] = ..., revision: _Optional[int] = ..., min_revision: _Optional[int] = ..., epoch: _Optional[int] = ..., decode: _Optional[bool] = ...) -> None: ...

class Entry(_message.Message):
    __slots__ = ("key", "value", "mod_revision", "key_json", "value_json")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    MOD_REVISION_FIELD_NUMBER: _ClassVar[int]
    KEY_JSON_FIELD_NUMBER: _ClassVar[int]
    VALUE_JSON_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    value: bytes
    mod_revision: int
    key_json: str
    value_json: str
    def __init__(self, key: _Optional[bytes] = ..., value: _Optional[bytes] = ..., mod_revision: _Optional[int] = ..., key_json: _Optional[str] = ..., value_json: _Optional[str] = ...) -> None: ...

class ListResponse(_message.Message):
    __slots__ = ("header", "entries", "last")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    entries: _containers.RepeatedCompositeFieldContainer[Entry]
    last: bool
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., entries: _Optional[_Iterable[_Union[Entry, _Mapping]]] = ..., last: _Optional[bool] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("create", "cancel", "progress")
    CREATE_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    create: WatchCreateRequest
    cancel: WatchCancelRequest
    progress: WatchProgressRequest
    def __init__(self, create: _Optional[_Union[WatchCreateRequest, _Mapping]] = ..., cancel: _Optional[_Union[WatchCancelRequest, _Mapping]] = ..., progress: _Optional[_Union[WatchProgressRequest, _Mapping]] = ...) -> None: ...

class WatchCreateRequest(_message.Message):
    __slots__ = ("maps", "key", "range_end", "key_prefix", "start_revision", "epoch", "no_put", "no_delete", "prev_value", "progress_interval_ms", "watch_id", "decode")
    MAPS_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    RANGE_END_FIELD_NUMBER: _ClassVar[int]
    KEY_PREFIX_FIELD_NUMBER: _ClassVar[int]
    START_REVISION_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    NO_PUT_FIELD_NUMBER: _ClassVar[int]
    NO_DELETE_FIELD_NUMBER: _ClassVar[int]
    PREV_VALUE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    WATCH_ID_FIELD_NUMBER: _ClassVar[int]
    DECODE_FIELD_NUMBER: _ClassVar[int]
    maps: _containers.RepeatedScalarFieldContainer[str]
    key: bytes
    range_end: bytes
    key_prefix: bytes
    start_revision: int
    epoch: int
    no_put: bool
    no_delete: bool
    prev_value: bool
    progress_interval_ms: int
    watch_id: int
    decode: bool
    def __init__(self, maps: _Optional[_Iterable[str]] = ..., key: _Optional[bytes] = ..., range_end: _Optional[bytes] = ..., key_prefix: _Optional[bytes] = ..., start_revision: _Optional[int] = ..., epoch: _Optional[int] = ..., no_put: _Optional[bool] = ..., no_delete: _Optional[bool] = ..., prev_value: _Optional[bool] = ..., progress_interval_ms: _Optional[int] = ..., watch_id: _Optional[int] = ..., decode: _Optional[bool] = ...) -> None: ...

class WatchCancelRequest(_message.Message):
    __slots__ = ("watch_id",)
    WATCH_ID_FIELD_NUMBER: _ClassVar[int]
    watch_id: int
    def __init__(self, watch_id: _Optional[int] = ...) -> None: ...

class WatchProgressRequest(_message.Message):
    __slots__ = ("watch_id",)
    WATCH_ID_FIELD_NUMBER: _ClassVar[int]
    watch_id: int
    def __init__(self, watch_id: _Optional[int] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("revision", "map", "op", "key", "value", "source", "prev_value", "has_prev", "key_json", "value_json")
    REVISION_FIELD_NUMBER: _ClassVar[int]
    MAP_FIELD_NUMBER: _ClassVar[int]
    OP_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    PREV_VALUE_FIELD_NUMBER: _ClassVar[int]
    HAS_PREV_FIELD_NUMBER: _ClassVar[int]
    KEY_JSON_FIELD_NUMBER: _ClassVar[int]
    VALUE_JSON_FIELD_NUMBER: _ClassVar[int]
    revision: int
    map: str
    op: Op
    key: bytes
    value: bytes
    source: Source
    prev_value: bytes
    has_prev: bool
    key_json: str
    value_json: str
    def __init__(self, revision: _Optional[int] = ..., map: _Optional[str] = ..., op: _Optional[_Union[Op, str]] = ..., key: _Optional[bytes] = ..., value: _Optional[bytes] = ..., source: _Optional[_Union[Source, str]] = ..., prev_value: _Optional[bytes] = ..., has_prev: _Optional[bool] = ..., key_json: _Optional[str] = ..., value_json: _Optional[str] = ...) -> None: ...

class EventBatch(_message.Message):
    __slots__ = ("events", "revision_continues")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    REVISION_CONTINUES_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[Event]
    revision_continues: bool
    def __init__(self, events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ..., revision_continues: _Optional[bool] = ...) -> None: ...

class WatchCreated(_message.Message):
    __slots__ = ("revision",)
    REVISION_FIELD_NUMBER: _ClassVar[int]
    revision: int
    def __init__(self, revision: _Optional[int] = ...) -> None: ...

class InitialStateDone(_message.Message):
    __slots__ = ("revision",)
    REVISION_FIELD_NUMBER: _ClassVar[int]
    revision: int
    def __init__(self, revision: _Optional[int] = ...) -> None: ...

class WatchProgress(_message.Message):
    __slots__ = ("revision",)
    REVISION_FIELD_NUMBER: _ClassVar[int]
    revision: int
    def __init__(self, revision: _Optional[int] = ...) -> None: ...

class WatchCanceled(_message.Message):
    __slots__ = ("reason", "oldest_revision", "message", "revision", "code")
    REASON_FIELD_NUMBER: _ClassVar[int]
    OLDEST_REVISION_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    reason: CancelReason
    oldest_revision: int
    message: str
    revision: int
    code: int
    def __init__(self, reason: _Optional[_Union[CancelReason, str]] = ..., oldest_revision: _Optional[int] = ..., message: _Optional[str] = ..., revision: _Optional[int] = ..., code: _Optional[int] = ...) -> None: ...

class WatchResponse(_message.Message):
    __slots__ = ("epoch", "watch_id", "created", "events", "initial_state_done", "progress", "canceled")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    WATCH_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    INITIAL_STATE_DONE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    CANCELED_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    watch_id: int
    created: WatchCreated
    events: EventBatch
    initial_state_done: InitialStateDone
    progress: WatchProgress
    canceled: WatchCanceled
    def __init__(self, epoch: _Optional[int] = ..., watch_id: _Optional[int] = ..., created: _Optional[_Union[WatchCreated, _Mapping]] = ..., events: _Optional[_Union[EventBatch, _Mapping]] = ..., initial_state_done: _Optional[_Union[InitialStateDone, _Mapping]] = ..., progress: _Optional[_Union[WatchProgress, _Mapping]] = ..., canceled: _Optional[_Union[WatchCanceled, _Mapping]] = ...) -> None: ...

class PutRequest(_message.Message):
    __slots__ = ("map", "key", "value", "mode", "expect_mod_revision", "epoch", "prev_value")
    MAP_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    EXPECT_MOD_REVISION_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    PREV_VALUE_FIELD_NUMBER: _ClassVar[int]
    map: str
    key: bytes
    value: bytes
    mode: PutMode
    expect_mod_revision: int
    epoch: int
    prev_value: bool
    def __init__(self, map: _Optional[str] = ..., key: _Optional[bytes] = ..., value: _Optional[bytes] = ..., mode: _Optional[_Union[PutMode, str]] = ..., expect_mod_revision: _Optional[int] = ..., epoch: _Optional[int] = ..., prev_value: _Optional[bool] = ...) -> None: ...

class PrevValue(_message.Message):
    __slots__ = ("found", "value", "mod_revision")
    FOUND_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    MOD_REVISION_FIELD_NUMBER: _ClassVar[int]
    found: bool
    value: bytes
    mod_revision: int
    def __init__(self, found: _Optional[bool] = ..., value: _Optional[bytes] = ..., mod_revision: _Optional[int] = ...) -> None: ...

class PutResponse(_message.Message):
    __slots__ = ("header", "prev")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    PREV_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    prev: PrevValue
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., prev: _Optional[_Union[PrevValue, _Mapping]] = ...) -> None: ...

class DeleteRequest(_message.Message):
    __slots__ = ("map", "key", "expect_mod_revision", "epoch", "prev_value")
    MAP_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    EXPECT_MOD_REVISION_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    PREV_VALUE_FIELD_NUMBER: _ClassVar[int]
    map: str
    key: bytes
    expect_mod_revision: int
    epoch: int
    prev_value: bool
    def __init__(self, map: _Optional[str] = ..., key: _Optional[bytes] = ..., expect_mod_revision: _Optional[int] = ..., epoch: _Optional[int] = ..., prev_value: _Optional[bool] = ...) -> None: ...

class DeleteResponse(_message.Message):
    __slots__ = ("header", "prev")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    PREV_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    prev: PrevValue
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., prev: _Optional[_Union[PrevValue, _Mapping]] = ...) -> None: ...

class Compare(_message.Message):
    __slots__ = ("map", "key", "result", "mod_revision", "value", "exists")
    class Result(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        EQUAL: _ClassVar[Compare.Result]
        NOT_EQUAL: _ClassVar[Compare.Result]
        GREATER: _ClassVar[Compare.Result]
        LESS: _ClassVar[Compare.Result]
    EQUAL: Compare.Result
    NOT_EQUAL: Compare.Result
    GREATER: Compare.Result
    LESS: Compare.Result
    MAP_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    MOD_REVISION_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    EXISTS_FIELD_NUMBER: _ClassVar[int]
    map: str
    key: bytes
    result: Compare.Result
    mod_revision: int
    value: bytes
    exists: bool
    def __init__(self, map: _Optional[str] = ..., key: _Optional[bytes] = ..., result: _Optional[_Union[Compare.Result, str]] = ..., mod_revision: _Optional[int] = ..., value: _Optional[bytes] = ..., exists: _Optional[bool] = ...) -> None: ...

class TxnOp(_message.Message):
    __slots__ = ("put", "delete")
    PUT_FIELD_NUMBER: _ClassVar[int]
    DELETE_FIELD_NUMBER: _ClassVar[int]
    put: TxnPut
    delete: TxnDelete
    def __init__(self, put: _Optional[_Union[TxnPut, _Mapping]] = ..., delete: _Optional[_Union[TxnDelete, _Mapping]] = ...) -> None: ...

class TxnPut(_message.Message):
    __slots__ = ("map", "key", "value", "mode")
    MAP_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    map: str
    key: bytes
    value: bytes
    mode: PutMode
    def __init__(self, map: _Optional[str] = ..., key: _Optional[bytes] = ..., value: _Optional[bytes] = ..., mode: _Optional[_Union[PutMode, str]] = ...) -> None: ...

class TxnDelete(_message.Message):
    __slots__ = ("map", "key")
    MAP_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    map: str
    key: bytes
    def __init__(self, map: _Optional[str] = ..., key: _Optional[bytes] = ...) -> None: ...

class TxnRequest(_message.Message):
    __slots__ = ("compare", "success", "failure", "epoch", "prev_value")
    COMPARE_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    PREV_VALUE_FIELD_NUMBER: _ClassVar[int]
    compare: _containers.RepeatedCompositeFieldContainer[Compare]
    success: _containers.RepeatedCompositeFieldContainer[TxnOp]
    failure: _containers.RepeatedCompositeFieldContainer[TxnOp]
    epoch: int
    prev_value: bool
    def __init__(self, compare: _Optional[_Iterable[_Union[Compare, _Mapping]]] = ..., success: _Optional[_Iterable[_Union[TxnOp, _Mapping]]] = ..., failure: _Optional[_Iterable[_Union[TxnOp, _Mapping]]] = ..., epoch: _Optional[int] = ..., prev_value: _Optional[bool] = ...) -> None: ...

class TxnResponse(_message.Message):
    __slots__ = ("header", "succeeded", "prev")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    SUCCEEDED_FIELD_NUMBER: _ClassVar[int]
    PREV_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    succeeded: bool
    prev: _containers.RepeatedCompositeFieldContainer[PrevValue]
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., succeeded: _Optional[bool] = ..., prev: _Optional[_Iterable[_Union[PrevValue, _Mapping]]] = ...) -> None: ...

class ApplyEntry(_message.Message):
    __slots__ = ("key", "value", "delete")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    DELETE_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    value: bytes
    delete: bool
    def __init__(self, key: _Optional[bytes] = ..., value: _Optional[bytes] = ..., delete: _Optional[bool] = ...) -> None: ...

class ApplyRequest(_message.Message):
    __slots__ = ("map", "mode", "expect_version", "entries")
    MAP_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    EXPECT_VERSION_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    map: str
    mode: ApplyMode
    expect_version: int
    entries: _containers.RepeatedCompositeFieldContainer[ApplyEntry]
    def __init__(self, map: _Optional[str] = ..., mode: _Optional[_Union[ApplyMode, str]] = ..., expect_version: _Optional[int] = ..., entries: _Optional[_Iterable[_Union[ApplyEntry, _Mapping]]] = ...) -> None: ...

class ApplyResponse(_message.Message):
    __slots__ = ("header", "version", "entries", "changed", "switch_ns")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    SWITCH_NS_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    version: int
    entries: int
    changed: int
    switch_ns: int
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., version: _Optional[int] = ..., entries: _Optional[int] = ..., changed: _Optional[int] = ..., switch_ns: _Optional[int] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SourceCount(_message.Message):
    __slots__ = ("source", "events")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    source: str
    events: int
    def __init__(self, source: _Optional[str] = ..., events: _Optional[int] = ...) -> None: ...

class MapStatus(_message.Message):
    __slots__ = ("map", "pressure", "capture_sources", "last_change_revision", "events", "resyncs", "reconcile_repairs", "poll_interval_seconds")
    MAP_FIELD_NUMBER: _ClassVar[int]
    PRESSURE_FIELD_NUMBER: _ClassVar[int]
    CAPTURE_SOURCES_FIELD_NUMBER: _ClassVar[int]
    LAST_CHANGE_REVISION_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    RESYNCS_FIELD_NUMBER: _ClassVar[int]
    RECONCILE_REPAIRS_FIELD_NUMBER: _ClassVar[int]
    POLL_INTERVAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    map: MapDescription
    pressure: float
    capture_sources: _containers.RepeatedScalarFieldContainer[str]
    last_change_revision: int
    events: _containers.RepeatedCompositeFieldContainer[SourceCount]
    resyncs: int
    reconcile_repairs: int
    poll_interval_seconds: float
    def __init__(self, map: _Optional[_Union[MapDescription, _Mapping]] = ..., pressure: _Optional[float] = ..., capture_sources: _Optional[_Iterable[str]] = ..., last_change_revision: _Optional[int] = ..., events: _Optional[_Iterable[_Union[SourceCount, _Mapping]]] = ..., resyncs: _Optional[int] = ..., reconcile_repairs: _Optional[int] = ..., poll_interval_seconds: _Optional[float] = ...) -> None: ...

class InstanceStatus(_message.Message):
    __slots__ = ("epoch", "revision", "uptime_seconds", "ring_bytes", "ring_used_bytes", "records_read", "records_lost", "records_undecodable", "change_log_oldest", "change_log_newest", "change_log_events", "change_log_bytes", "watch_streams", "watches", "ingest_lag_p50_seconds", "ingest_lag_p99_seconds", "ingest_lag_samples", "kernel")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    UPTIME_SECONDS_FIELD_NUMBER: _ClassVar[int]
    RING_BYTES_FIELD_NUMBER: _ClassVar[int]
    RING_USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    RECORDS_READ_FIELD_NUMBER: _ClassVar[int]
    RECORDS_LOST_FIELD_NUMBER: _ClassVar[int]
    RECORDS_UNDECODABLE_FIELD_NUMBER: _ClassVar[int]
    CHANGE_LOG_OLDEST_FIELD_NUMBER: _ClassVar[int]
    CHANGE_LOG_NEWEST_FIELD_NUMBER: _ClassVar[int]
    CHANGE_LOG_EVENTS_FIELD_NUMBER: _ClassVar[int]
    CHANGE_LOG_BYTES_FIELD_NUMBER: _ClassVar[int]
    WATCH_STREAMS_FIELD_NUMBER: _ClassVar[int]
    WATCHES_FIELD_NUMBER: _ClassVar[int]
    INGEST_LAG_P50_SECONDS_FIELD_NUMBER: _ClassVar[int]
    INGEST_LAG_P99_SECONDS_FIELD_NUMBER: _ClassVar[int]
    INGEST_LAG_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    KERNEL_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    revision: int
    uptime_seconds: float
    ring_bytes: int
    ring_used_bytes: int
    records_read: int
    records_lost: int
    records_undecodable: int
    change_log_oldest: int
    change_log_newest: int
    change_log_events: int
    change_log_bytes: int
    watch_streams: int
    watches: int
    ingest_lag_p50_seconds: float
    ingest_lag_p99_seconds: float
    ingest_lag_samples: int
    kernel: bool
    def __init__(self, epoch: _Optional[int] = ..., revision: _Optional[int] = ..., uptime_seconds: _Optional[float] = ..., ring_bytes: _Optional[int] = ..., ring_used_bytes: _Optional[int] = ..., records_read: _Optional[int] = ..., records_lost: _Optional[int] = ..., records_undecodable: _Optional[int] = ..., change_log_oldest: _Optional[int] = ..., change_log_newest: _Optional[int] = ..., change_log_events: _Optional[int] = ..., change_log_bytes: _Optional[int] = ..., watch_streams: _Optional[int] = ..., watches: _Optional[int] = ..., ingest_lag_p50_seconds: _Optional[float] = ..., ingest_lag_p99_seconds: _Optional[float] = ..., ingest_lag_samples: _Optional[int] = ..., kernel: _Optional[bool] = ...) -> None: ...

class StatusResponse(_message.Message):
    __slots__ = ("header", "instance", "maps")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    MAPS_FIELD_NUMBER: _ClassVar[int]
    header: ResponseHeader
    instance: InstanceStatus
    maps: _containers.RepeatedCompositeFieldContainer[MapStatus]
    def __init__(self, header: _Optional[_Union[ResponseHeader, _Mapping]] = ..., instance: _Optional[_Union[InstanceStatus, _Mapping]] = ..., maps: _Optional[_Iterable[_Union[MapStatus, _Mapping]]] = ...) -> None: ...
