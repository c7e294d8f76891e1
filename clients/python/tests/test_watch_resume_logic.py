"""The watch's resume logic against a scripted in-process server: each
connection plays a script (what a real server may do, byte for byte), so the
cases a live server produces only by accident (a break in the middle of a
batch, a duplicate after a resume, a break during the initial state) are
tested exactly. No kernel needed; the live-server tests are in
test_live_server.py.
"""

from __future__ import annotations

import threading
from concurrent import futures
from typing import Callable, Iterator, List

import grpc
import pytest

from mapsync_client import (
    Client,
    Event,
    InitialStateDone,
    Op,
    Progress,
    Source,
    StartOver,
    Unavailable,
    UnknownMap,
)
from mapsync_client._proto import mapsync_pb2 as pb
from mapsync_client._proto import mapsync_pb2_grpc as pb_grpc

E1, E2 = 0x1111, 0x2223

Script = Callable[[pb.WatchCreateRequest, grpc.ServicerContext], Iterator[pb.WatchResponse]]


class ScriptedServer(pb_grpc.MapSyncServicer):
    """Plays one script per Watch connection, in order, and records each
    connection's create request."""

    def __init__(self, scripts: List[Script]) -> None:
        self.scripts = list(scripts)
        self.creates: List[pb.WatchCreateRequest] = []
        self.lock = threading.Lock()

    def Watch(self, request_iterator, context):  # noqa: N802 (gRPC's name)
        first = next(request_iterator)
        with self.lock:
            self.creates.append(first.create)
            if not self.scripts:
                context.abort(grpc.StatusCode.UNAVAILABLE, "script over")
            script = self.scripts.pop(0)
        yield from script(first.create, context)
        # a script that returns keeps the stream open (as a live watch does)
        while context.is_active():
            threading.Event().wait(0.05)


@pytest.fixture
def scripted(tmp_path):
    """Starts a scripted server; yields (start(scripts) -> (server, client))."""
    servers = []
    clients = []

    def start(scripts: List[Script]):
        servicer = ScriptedServer(scripts)
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        pb_grpc.add_MapSyncServicer_to_server(servicer, server)
        socket = tmp_path / f"scripted{len(servers)}.sock"
        server.add_insecure_port(f"unix:{socket}")
        server.start()
        servers.append(server)
        client = Client(f"unix:{socket}")
        clients.append(client)
        return servicer, client

    yield start
    for client in clients:
        client.close()
    for server in servers:
        server.stop(grace=None)


def created(epoch: int, revision: int = 0, watch_id: int = 1) -> pb.WatchResponse:
    return pb.WatchResponse(epoch=epoch, watch_id=watch_id, created=pb.WatchCreated(revision=revision))


def events(epoch: int, *evs: pb.Event) -> pb.WatchResponse:
    return pb.WatchResponse(epoch=epoch, watch_id=1, events=pb.EventBatch(events=list(evs)))


def put(revision: int, key: int, value: int, source: int = pb.SOURCE_TRACE) -> pb.Event:
    return pb.Event(
        revision=revision,
        map="flows",
        op=pb.OP_PUT,
        key=bytes([key, 0, 0, 0]),
        value=bytes([value] * 8),
        source=source,
    )


def done(epoch: int, revision: int) -> pb.WatchResponse:
    return pb.WatchResponse(
        epoch=epoch, watch_id=1, initial_state_done=pb.InitialStateDone(revision=revision)
    )


def canceled(epoch: int, reason: int, **fields) -> pb.WatchResponse:
    return pb.WatchResponse(epoch=epoch, watch_id=1, canceled=pb.WatchCanceled(reason=reason, **fields))


def then_break(context: grpc.ServicerContext) -> None:
    context.abort(grpc.StatusCode.UNAVAILABLE, "connection lost")


def take(watch, n: int) -> list:
    return [watch.get(timeout=10) for _ in range(n)]


def test_a_break_mid_stream_resumes_after_the_last_delivered_revision_without_loss_or_duplicate(scripted):
    def first(create, context):
        assert create.start_revision == 0
        yield created(E1, 0)
        yield events(E1, put(1, 1, 1, pb.SOURCE_INITIAL))
        yield done(E1, 1)
        yield events(E1, put(2, 2, 2), put(3, 3, 3))
        then_break(context)

    def second(create, context):
        yield created(E1, 5)
        # a server may repeat what it sent before the break: the client drops it
        yield events(E1, put(3, 3, 3), put(4, 4, 4), put(5, 5, 5))

    server, client = scripted([first, second])
    with client.watch(["flows"], backoff_initial=0.01) as watch:
        items = take(watch, 6)
        assert watch.revision == 5 and watch.epoch == E1
    assert isinstance(items[0], Event) and items[0].source is Source.INITIAL
    assert items[1] == InitialStateDone(1)
    assert [i.revision for i in items[2:]] == [2, 3, 4, 5]
    assert all(i.op is Op.PUT and i.source is Source.TRACE for i in items[2:])
    assert (server.creates[1].start_revision, server.creates[1].epoch) == (4, E1)


def test_an_epoch_change_on_resume_delivers_one_start_over_with_the_new_state_then_live_changes(scripted):
    def first(create, context):
        yield created(E1, 0)
        yield done(E1, 0)
        yield events(E1, put(1, 1, 1))
        then_break(context)

    def second(create, context):
        assert (create.start_revision, create.epoch) == (2, E1)
        yield canceled(E2, pb.CANCEL_REASON_EPOCH_CHANGED, message="epoch changed")

    def third(create, context):
        assert (create.start_revision, create.epoch) == (0, 0)
        yield created(E2, 2)
        yield events(E2, put(1, 7, 7, pb.SOURCE_INITIAL), put(2, 8, 8, pb.SOURCE_INITIAL))
        yield done(E2, 2)
        yield events(E2, put(3, 9, 9))

    server, client = scripted([first, second, third])
    with client.watch(["flows"], backoff_initial=0.01) as watch:
        items = take(watch, 4)
        assert (watch.epoch, watch.revision) == (E2, 3)
    assert items[0] == InitialStateDone(0)
    assert items[1].revision == 1
    start_over = items[2]
    assert isinstance(start_over, StartOver)
    assert (start_over.revision, start_over.epoch, start_over.reason) == (2, E2, "EPOCH_CHANGED")
    assert [(e.key[0], e.value[0]) for e in start_over.entries] == [(7, 7), (8, 8)]
    assert isinstance(items[3], Event) and items[3].revision == 3


def test_a_compacted_start_revision_delivers_a_start_over_naming_the_oldest_revision(scripted):
    def first(create, context):
        assert (create.start_revision, create.epoch) == (2, E1)
        yield canceled(E1, pb.CANCEL_REASON_COMPACTED, oldest_revision=10, message="compacted")

    def second(create, context):
        assert create.start_revision == 0
        yield created(E1, 12)
        yield events(E1, put(11, 1, 1, pb.SOURCE_INITIAL))
        yield done(E1, 12)

    _, client = scripted([first, second])
    with client.watch(["flows"], start_revision=2, epoch=E1) as watch:
        start_over = watch.get(timeout=10)
    assert isinstance(start_over, StartOver)
    assert (start_over.reason, start_over.oldest, start_over.revision, len(start_over.entries)) == ("COMPACTED", 10, 12, 1)


def test_a_break_during_the_initial_state_ends_in_a_start_over_not_in_duplicates(scripted):
    def first(create, context):
        yield created(E1, 2)
        yield events(E1, put(1, 1, 1, pb.SOURCE_INITIAL))
        then_break(context)

    def second(create, context):
        assert create.start_revision == 0
        yield created(E1, 2)
        yield events(E1, put(1, 1, 1, pb.SOURCE_INITIAL), put(2, 2, 2, pb.SOURCE_INITIAL))
        yield done(E1, 2)

    _, client = scripted([first, second])
    with client.watch(["flows"], backoff_initial=0.01) as watch:
        items = take(watch, 2)
    assert isinstance(items[0], Event) and items[0].source is Source.INITIAL
    assert isinstance(items[1], StartOver) and items[1].reason == "INTERRUPTED"
    assert len(items[1].entries) == 2


def test_a_slow_consumer_cancel_resumes_after_the_revision_reached(scripted):
    def first(create, context):
        yield created(E1, 0)
        yield done(E1, 0)
        yield events(E1, put(1, 1, 1))
        yield canceled(E1, pb.CANCEL_REASON_SLOW_CONSUMER, revision=1)

    def second(create, context):
        assert (create.start_revision, create.epoch) == (2, E1)
        yield created(E1, 2)
        yield events(E1, put(2, 2, 2))
        yield pb.WatchResponse(epoch=E1, watch_id=1, progress=pb.WatchProgress(revision=4))

    _, client = scripted([first, second])
    with client.watch(["flows"]) as watch:
        items = take(watch, 4)
        assert watch.revision == 4
    assert [type(i) for i in items] == [InitialStateDone, Event, Event, Progress]
    assert items[3] == Progress(4)


def test_a_rejected_create_raises_the_typed_error(scripted):
    def first(create, context):
        yield canceled(E1, pb.CANCEL_REASON_REJECTED, code=5, message="unknown map `nope`")

    _, client = scripted([first])
    with client.watch(["nope"]) as watch:
        with pytest.raises(UnknownMap) as error:
            watch.get(timeout=10)
    assert error.value.map == "nope"
    assert error.value.code == grpc.StatusCode.NOT_FOUND


def test_retries_exhausted_raise_unavailable(scripted):
    def first(create, context):
        then_break(context)
        yield  # a generator

    _, client = scripted([first])
    with client.watch(["flows"], max_retries=0) as watch:
        with pytest.raises(Unavailable):
            watch.get(timeout=10)
        with pytest.raises(StopIteration):
            watch.get(timeout=1)


def test_close_ends_iteration(scripted):
    def first(create, context):
        yield created(E1, 0)
        yield done(E1, 0)

    _, client = scripted([first])
    watch = client.watch(["flows"])
    assert watch.get(timeout=10) == InitialStateDone(0)
    watch.close()
    assert list(watch) == []


def test_closing_the_client_ends_its_watches(scripted):
    def first(create, context):
        yield created(E1, 0)
        yield done(E1, 0)

    _, client = scripted([first])
    watch = client.watch(["flows"], backoff_initial=0.01)
    assert watch.get(timeout=10) == InitialStateDone(0)
    client.close()
    with pytest.raises(StopIteration):
        watch.get(timeout=10)


def test_the_events_of_one_revision_all_arrive_and_a_split_revision_resumes_exactly(scripted):
    """One write request is one revision of many events; a revision larger
    than a message is split (revision_continues) and a break inside it
    resumes from it, skipping exactly what was handed over."""

    def split(epoch: int, *evs: pb.Event) -> pb.WatchResponse:
        return pb.WatchResponse(
            epoch=epoch, watch_id=1, events=pb.EventBatch(events=list(evs), revision_continues=True)
        )

    def first(create, context):
        yield created(E1, 0)
        yield done(E1, 0)
        yield events(E1, put(1, 1, 1, pb.SOURCE_API), put(1, 2, 2, pb.SOURCE_API), put(1, 3, 3, pb.SOURCE_API))
        yield split(E1, put(2, 4, 4, pb.SOURCE_API), put(2, 5, 5, pb.SOURCE_API))
        then_break(context)

    def second(create, context):
        assert (create.start_revision, create.epoch) == (2, E1)
        yield created(E1, 2)
        yield split(E1, put(2, 4, 4, pb.SOURCE_API), put(2, 5, 5, pb.SOURCE_API), put(2, 6, 6, pb.SOURCE_API))
        yield events(E1, put(2, 7, 7, pb.SOURCE_API), put(3, 8, 8))

    server, client = scripted([first, second])
    with client.watch(["flows"], backoff_initial=0.01) as watch:
        items = take(watch, 1 + 8)
        assert watch.revision == 3
    got = [(i.revision, i.key[0]) for i in items[1:]]
    assert got == [(1, 1), (1, 2), (1, 3), (2, 4), (2, 5), (2, 6), (2, 7), (3, 8)]
    assert len(server.creates) == 2
