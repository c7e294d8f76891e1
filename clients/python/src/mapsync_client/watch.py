"""A watch that survives disconnects and restarts: :class:`Watch`.

One background thread owns the gRPC stream. It remembers the epoch and the
last revision it handed over and, when the stream breaks, reconnects with
backoff and resumes from that revision + 1 in the same epoch, dropping
anything at or below it, so nothing is lost or repeated. When the server
cannot resume (it restarted: another epoch; or its change log no longer
reaches back: compacted) the thread reads a fresh snapshot (a watch from
revision 0) and hands it over as one :class:`~mapsync_client.StartOver` item,
never silently.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
from typing import Any, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import grpc

from ._proto import mapsync_pb2 as pb
from ._proto import mapsync_pb2_grpc as pb_grpc
from .errors import Compacted, MapsyncError, Unavailable, WatchCanceled, from_rpc_error, from_status
from .types import Entry, Event, InitialStateDone, Progress, StartOver, WatchItem, event_from_pb

__all__ = ["Watch"]

log = logging.getLogger("mapsync_client")

# Stream statuses after which a resume is attempted (the transport broke,
# the server went away or is shutting down).
_RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.CANCELLED,
    }
)

_CODES = {code.value[0]: code for code in grpc.StatusCode}

_INITIAL, _SNAPSHOT, _LIVE = "initial", "snapshot", "live"


class _End:
    """The watch ended normally (closed, or canceled on request)."""


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


# (item, epoch, the resume point after it or None when it does not move it)
_Queued = Union[Tuple[WatchItem, int, Optional[int]], _End, _Failure]


class _Restart(Exception):
    """Leave the current stream and open another at once (no backoff)."""


class _Broken(Exception):
    """The current stream ended without the watch being canceled."""


class _Done(Exception):
    """The server canceled the watch as the client asked."""


class Watch(Iterator[WatchItem]):
    """An iterator of watch items: :class:`~mapsync_client.Event`,
    :class:`~mapsync_client.InitialStateDone`, :class:`~mapsync_client.Progress`
    and :class:`~mapsync_client.StartOver`.

    Made by :meth:`mapsync_client.Client.watch`; see there for the options.
    Iterate it (``for item in watch``) or call :meth:`get` with a timeout;
    :meth:`close` it (or use it as a context manager) when done.

    Attributes :attr:`epoch` and :attr:`revision` are the resume point of what
    has been *returned to you*: save them, and a later
    ``client.watch(..., start_revision=revision + 1, epoch=epoch)`` continues
    exactly after it.
    """

    def __init__(
        self,
        stub: pb_grpc.MapSyncStub,
        create: pb.WatchCreateRequest,
        *,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
        max_retries: Optional[int] = None,
        buffer: int = 1024,
    ) -> None:
        self._stub = stub
        self._template = create
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._max_retries = max_retries
        self._out: "queue.Queue[_Queued]" = queue.Queue(maxsize=max(1, buffer))
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._call: Optional[Any] = None  # the grpc call (a Call and an iterator)
        self._requests: Optional["queue.Queue[Optional[pb.WatchRequest]]"] = None
        self._watch_id = 0
        # producer side (the thread): where the stream stands
        self._stream_epoch = create.epoch
        self._last = create.start_revision - 1 if create.start_revision > 0 else 0
        self._phase = _LIVE if create.start_revision > 0 else _INITIAL
        self._handed_initial = False
        self._received = False
        # a revision too large for one message arrives in several
        # (revision_continues): how many of its events were handed over, and
        # how many this stream has carried (a resume from it skips those)
        self._partial_revision = 0
        self._partial_handed = 0
        self._partial_seen = 0
        self._snapshot: List[Entry] = []
        self._snapshot_reason = ""
        self._snapshot_oldest = 0
        # consumer side: what the caller has received
        self._epoch = create.epoch
        self._revision = self._last
        self._finished = False
        self._thread = threading.Thread(target=self._run, name="mapsync-watch", daemon=True)
        self._thread.start()

    # consumer side

    @property
    def epoch(self) -> int:
        """The epoch of the last item returned (before any: the one asked for,
        or 0)."""
        return self._epoch

    @property
    def revision(self) -> int:
        """The revision up to which every matching change has been returned
        (0 before the initial state is complete)."""
        return self._revision

    def __iter__(self) -> "Watch":
        return self

    def __next__(self) -> WatchItem:
        return self._take(None)

    def get(self, timeout: Optional[float] = None) -> WatchItem:
        """The next item, waiting at most ``timeout`` seconds (None: forever).

        Raises:
            TimeoutError: nothing arrived in time.
            StopIteration: the watch was closed.
            MapsyncError: the watch failed (see the subclasses).
        """
        return self._take(timeout)

    def _take(self, timeout: Optional[float]) -> WatchItem:
        if self._finished:
            raise StopIteration
        try:
            queued = self._out.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no watch item within {timeout} s") from None
        if isinstance(queued, _End):
            self._finished = True
            raise StopIteration
        if isinstance(queued, _Failure):
            self._finished = True
            raise queued.error
        item, epoch, revision = queued
        self._epoch = epoch
        if revision is not None:
            self._revision = revision
        return item

    def request_progress(self) -> None:
        """Ask the server for a :class:`~mapsync_client.Progress` now (it
        arrives in order with the events)."""
        with self._lock:
            if self._requests is not None and self._watch_id:
                self._requests.put(
                    pb.WatchRequest(progress=pb.WatchProgressRequest(watch_id=self._watch_id))
                )

    def close(self) -> None:
        """Stop the watch and its thread. Iteration then ends."""
        self._closed.set()
        with self._lock:
            if self._call is not None:
                self._call.cancel()
        self._thread.join(timeout=5)
        self._finished = True

    def __enter__(self) -> "Watch":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # producer side (the thread)

    def _hand(self, item: WatchItem, moves_revision: bool = True) -> None:
        self._put((item, self._stream_epoch, self._last if moves_revision else None))

    def _put(self, queued: _Queued) -> None:
        # a full buffer holds the stream back (the server's per-watch buffer
        # then decides), but never blocks close()
        while not self._closed.is_set():
            try:
                self._out.put(queued, timeout=0.1)
                return
            except queue.Full:
                continue

    def _create_request(self) -> pb.WatchCreateRequest:
        create = pb.WatchCreateRequest()
        create.CopyFrom(self._template)
        create.watch_id = 0
        if self._phase == _LIVE:
            create.start_revision = self._last + 1
            create.epoch = self._stream_epoch
        else:
            create.start_revision = 0
            create.epoch = 0
        return create

    def _run(self) -> None:
        delay = self._backoff_initial
        failures = 0
        try:
            while not self._closed.is_set():
                try:
                    self._stream_once()
                    return  # canceled on request, or closed
                except _Restart:
                    delay, failures = self._backoff_initial, 0
                    continue
                except _Broken as broken:
                    if self._closed.is_set():
                        return
                    if self._received:
                        # the stream worked before it broke: a fresh start
                        delay, failures = self._backoff_initial, 0
                    failures += 1
                    if self._max_retries is not None and failures > self._max_retries:
                        raise Unavailable(f"watch stream broke and retries are exhausted: {broken}") from None
                    log.info("watch stream broke (%s); resuming in %.2f s", broken, delay)
                    self._interrupted()
                    if self._closed.wait(delay * random.uniform(0.8, 1.2)):
                        return
                    delay = min(delay * 2, self._backoff_max)
        except MapsyncError as error:
            self._put(_Failure(error))
        except Exception as error:  # a bug here must reach the caller, not vanish with the thread
            self._put(_Failure(error))
        finally:
            self._put_end()

    def _put_end(self) -> None:
        try:
            self._out.put_nowait(_End())
        except queue.Full:
            pass  # the consumer is gone or close() ends it

    def _interrupted(self) -> None:
        """The stream broke: decide where the next one starts."""
        if self._phase == _INITIAL and self._handed_initial:
            # part of the initial state is out: the rest cannot be told apart
            # from a new one, so the next complete one comes as a StartOver
            self._enter_snapshot("INTERRUPTED", 0)
        elif self._phase == _SNAPSHOT:
            self._snapshot = []

    def _enter_snapshot(self, reason: str, oldest: int) -> None:
        self._phase = _SNAPSHOT
        self._snapshot = []
        self._snapshot_reason = reason
        self._snapshot_oldest = oldest

    def _stream_once(self) -> None:
        """Runs one stream to its end. Returns when the watch is over; raises
        _Restart, _Broken, or the watch's error."""
        requests: "queue.Queue[Optional[pb.WatchRequest]]" = queue.Queue()
        requests.put(pb.WatchRequest(create=self._create_request()))
        self._received = False
        self._partial_seen = 0
        try:
            call = self._stub.Watch(iter(requests.get, None))
        except ValueError:  # grpc: "Cannot invoke RPC: Channel closed!"
            self._closed.set()  # the client was closed: the watch ends with it
            return
        with self._lock:
            self._call, self._requests, self._watch_id = call, requests, 0
        if self._closed.is_set():
            call.cancel()
        try:
            for response in call:
                self._handle(response)
            raise _Broken("the server ended the stream")
        except _Done:
            return
        except grpc.RpcError as error:
            if self._closed.is_set():
                return
            code = error.code() if isinstance(error, grpc.Call) else grpc.StatusCode.UNKNOWN
            if code in _RETRYABLE:
                detail = error.details() if isinstance(error, grpc.Call) else error
                raise _Broken(f"{code.name}: {detail}") from None
            typed = from_rpc_error(error)
            # servers that fail the stream rather than cancel the watch
            if self._phase == _LIVE and code == grpc.StatusCode.FAILED_PRECONDITION:
                self._enter_snapshot("EPOCH_CHANGED", 0)
                raise _Restart() from None
            if self._phase == _LIVE and isinstance(typed, Compacted):
                self._enter_snapshot("COMPACTED", typed.oldest)
                raise _Restart() from None
            raise typed from None
        finally:
            with self._lock:
                self._call, self._requests, self._watch_id = None, None, 0
            requests.put(None)  # ends gRPC's request-reading thread
            call.cancel()

    def _handle(self, response: pb.WatchResponse) -> None:
        self._received = True
        kind = response.WhichOneof("kind")
        if response.epoch:
            if self._phase == _LIVE and self._stream_epoch and response.epoch != self._stream_epoch:
                # a server that did not check the epoch we sent
                self._enter_snapshot("EPOCH_CHANGED", 0)
                raise _Restart()
            self._stream_epoch = response.epoch
        if kind == "created":
            with self._lock:
                self._watch_id = response.watch_id
        elif kind == "events":
            self._on_events(response.events.events, response.events.revision_continues)
        elif kind == "initial_state_done":
            self._on_initial_state_done(response.initial_state_done.revision)
        elif kind == "progress":
            if self._phase == _LIVE:
                if response.progress.revision >= self._partial_revision:
                    self._partial_revision = self._partial_handed = 0
                self._last = max(self._last, response.progress.revision)
                self._hand(Progress(self._last))
        elif kind == "canceled":
            self._on_canceled(response.canceled)

    def _on_events(self, events: "Sequence[pb.Event]", continues: bool = False) -> None:
        if self._phase == _LIVE:
            self._on_live_events([event_from_pb(e) for e in events], continues)
            return
        for e in events:
            event = event_from_pb(e)
            if self._phase == _INITIAL:
                self._handed_initial = True
                self._hand(event, moves_revision=False)
            else:
                self._snapshot.append(
                    Entry(map=event.map, key=event.key, value=event.value or b"", mod_revision=event.revision)
                )

    def _on_live_events(self, events: List[Event], continues: bool) -> None:
        """Hands over live events; a revision counts as delivered (the resume
        point moves past it) once all its events are: the events of one
        revision (one write request) share it, and only a revision marked
        ``continues`` goes on in the next message."""
        for i, event in enumerate(events):
            if event.revision <= self._last:
                continue  # already handed over before a reconnect
            if event.revision == self._partial_revision:
                self._partial_seen += 1
                if self._partial_seen <= self._partial_handed:
                    continue  # part of a split revision handed over before
                self._partial_handed = self._partial_seen
            elif continues and event.revision == events[-1].revision:
                # the revision that goes on in the next message
                self._partial_revision = event.revision
                self._partial_handed = self._partial_seen = 1
            later = events[i + 1].revision if i + 1 < len(events) else None
            complete = (later is not None and later > event.revision) or (later is None and not continues)
            if complete:
                self._last = event.revision
                if event.revision == self._partial_revision:
                    self._partial_revision = self._partial_handed = self._partial_seen = 0
            self._put((event, self._stream_epoch, self._last))

    def _on_initial_state_done(self, revision: int) -> None:
        phase = self._phase
        self._phase = _LIVE
        self._last = revision
        if phase == _SNAPSHOT:
            entries, self._snapshot = self._snapshot, []
            self._hand(
                StartOver(
                    entries=entries,
                    revision=revision,
                    epoch=self._stream_epoch,
                    reason=self._snapshot_reason,
                    oldest=self._snapshot_oldest,
                )
            )
        elif phase == _INITIAL:
            self._hand(InitialStateDone(revision))

    def _on_canceled(self, canceled: "pb.WatchCanceled") -> None:
        reason = pb.CancelReason.Name(canceled.reason).removeprefix("CANCEL_REASON_")
        if canceled.reason in (pb.CANCEL_REASON_COMPACTED, pb.CANCEL_REASON_EPOCH_CHANGED):
            log.info("watch canceled (%s: %s); reading a fresh snapshot", reason, canceled.message)
            self._enter_snapshot(reason, canceled.oldest_revision)
            raise _Restart()
        if canceled.reason == pb.CANCEL_REASON_SLOW_CONSUMER:
            log.info("watch canceled as a slow consumer at %d; resuming", canceled.revision)
            if self._phase == _LIVE:
                self._last = max(self._last, canceled.revision)
            else:
                self._interrupted()
            raise _Restart()
        if canceled.reason == pb.CANCEL_REASON_CLIENT_REQUESTED:
            raise _Done()
        if canceled.reason == pb.CANCEL_REASON_REJECTED:
            code = _CODES.get(canceled.code, grpc.StatusCode.UNKNOWN)
            maps = list(self._template.maps)
            raise from_status(code, canceled.message, map=maps[0] if len(maps) == 1 else None)
        raise WatchCanceled(canceled.message, reason, canceled.revision)

