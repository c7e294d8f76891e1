"""The client against a live `mapsync serve` on real kernel maps, written by
bpftool (a process that is not mapsync's)."""

from __future__ import annotations

import signal
import threading
from typing import Dict, List, Tuple

import grpc
import pytest

from support import BpfMap, Proxy, key, value

from mapsync_client import (
    Client,
    Compacted,
    DeadlineExceeded,
    EpochChanged,
    Event,
    InitialStateDone,
    InvalidArgument,
    Op,
    OutOfRange,
    Progress,
    Source,
    StartOver,
    Unavailable,
    UnknownMap,
    Watch,
)

TIMEOUT = 10.0


def seed(m: BpfMap, n: int) -> None:
    for i in range(1, n + 1):
        m.update(key(i), value(i * 100))


def initial_state(watch: Watch) -> Tuple[Dict[bytes, bytes], int]:
    """Reads the initial state of a watch from 0: (key -> value, revision)."""
    state: Dict[bytes, bytes] = {}
    while True:
        item = watch.get(timeout=TIMEOUT)
        if isinstance(item, InitialStateDone):
            return state, item.revision
        assert isinstance(item, Event), item
        assert item.source is Source.INITIAL and item.op is Op.PUT
        state[item.key] = item.value


def live_events(watch: Watch, n: int) -> List[Event]:
    """The next n items, which must all be live events."""
    items = [watch.get(timeout=TIMEOUT) for _ in range(n)]
    assert all(isinstance(i, Event) for i in items), items
    return items


def assert_nothing_more(watch: Watch, wait: float = 0.3) -> None:
    with pytest.raises(TimeoutError):
        extra = watch.get(timeout=wait)
        pytest.fail(f"unexpected item: {extra}")


def test_list_maps_get_and_list_equal_bpftool_dump(flows, serve):
    seed(flows, 10)
    flows.delete(key(4))
    server = serve([flows])
    kernel = flows.dump()
    assert len(kernel) == 9
    with Client(server.endpoint) as client:
        maps = client.list_maps()
        assert maps.epoch != 0
        info = maps.by_name("flows")
        assert info is not None
        assert (info.kind, info.key_size, info.value_size, info.max_entries, info.entries) == (
            "hash", 4, 8, 64, 9,
        )  # fmt: skip
        assert info.kernel_name == "flows"

        for k, v in kernel.items():
            got = client.get("flows", k)
            assert got.found and got.value == v and got.epoch == maps.epoch
            assert 0 < got.mod_revision <= got.revision
        missing = client.get("flows", key(4))
        assert not missing.found and missing.value is None

        listing = client.list("flows")
        assert {e.key: e.value for e in listing} == kernel
        assert listing.epoch == maps.epoch and listing.revision >= maps.revision
        paged = client.list("flows", page_size=2)
        entries = list(paged)
        assert {e.key: e.value for e in entries} == kernel
        assert len(entries) == len(kernel), "each entry once across pages"
        assert all(e.map == "flows" for e in entries)


def test_watch_from_zero_gives_the_initial_state_then_bpftool_writes_in_order(flows, serve):
    seed(flows, 3)
    server = serve([flows])
    with Client(server.endpoint) as client, client.watch(["flows"]) as watch:
        state, revision = initial_state(watch)
        assert state == flows.dump()
        assert watch.revision == revision

        flows.update(key(7), value(7))
        flows.update(key(1), value(11))
        flows.delete(key(2))
        events = live_events(watch, 3)
        assert [e.revision for e in events] == [revision + 1, revision + 2, revision + 3]
        assert [(e.op, e.key, e.value) for e in events] == [
            (Op.PUT, key(7), value(7)),
            (Op.PUT, key(1), value(11)),
            (Op.DELETE, key(2), None),
        ]
        assert all(e.map == "flows" and e.source is Source.TRACE for e in events)
        assert_nothing_more(watch)
        assert watch.revision == revision + 3


def test_watch_resumes_across_a_disconnect_within_one_epoch_without_loss_or_duplicate(flows, serve):
    seed(flows, 2)
    server = serve([flows])
    proxy = Proxy(server.socket)
    try:
        with Client(proxy.endpoint, reconnect_backoff_max=0.2) as client:
            with client.watch(["flows"], backoff_initial=0.05, backoff_max=0.2) as watch:
                _, revision = initial_state(watch)
                epoch = watch.epoch
                flows.update(key(3), value(3))
                assert live_events(watch, 1)[0].revision == revision + 1

                # the transport breaks; the server lives on (same epoch) and
                # the map changes while the client cannot see it
                proxy.refusing = True
                proxy.cut()
                flows.update(key(4), value(4))
                flows.update(key(1), value(111))
                flows.delete(key(3))
                proxy.refusing = False

                events = live_events(watch, 3)
                assert [e.revision for e in events] == [revision + 2, revision + 3, revision + 4]
                assert [(e.op, e.key) for e in events] == [(Op.PUT, key(4)), (Op.PUT, key(1)), (Op.DELETE, key(3))]
                flows.update(key(5), value(5))
                assert live_events(watch, 1)[0].revision == revision + 5
                assert_nothing_more(watch)
                assert (watch.epoch, watch.revision) == (epoch, revision + 5)
        assert proxy.accepted >= 2, "the client reconnected"
    finally:
        proxy.stop()


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM], ids=["killed", "graceful"])
def test_watch_across_a_server_restart_delivers_a_start_over_with_the_kernel_state_then_live_events(flows, serve, stop):
    seed(flows, 3)
    server = serve([flows])
    with Client(server.endpoint, reconnect_backoff_max=0.2) as client:
        with client.watch(["flows"], backoff_initial=0.05, backoff_max=0.2) as watch:
            _, revision = initial_state(watch)
            old_epoch = watch.epoch
            flows.update(key(9), value(9))
            assert live_events(watch, 1)[0].key == key(9)

            server.kill(stop)
            flows.update(key(10), value(10))
            flows.delete(key(1))
            server.start()

            start_over = watch.get(timeout=TIMEOUT)
            assert isinstance(start_over, StartOver), start_over
            assert start_over.reason == "EPOCH_CHANGED"
            assert start_over.epoch != old_epoch and start_over.epoch == client.list_maps().epoch
            assert {e.key: e.value for e in start_over.entries} == flows.dump()
            assert (watch.epoch, watch.revision) == (start_over.epoch, start_over.revision)

            flows.update(key(11), value(11))
            event = live_events(watch, 1)[0]
            assert (event.revision, event.key, event.op) == (start_over.revision + 1, key(11), Op.PUT)
            assert_nothing_more(watch)


def test_a_new_client_resumes_from_a_saved_epoch_and_revision_without_loss_or_duplicate(flows, serve):
    seed(flows, 2)
    server = serve([flows])
    with Client(server.endpoint) as client, client.watch(["flows"]) as watch:
        _, revision = initial_state(watch)
        flows.update(key(3), value(3))
        live_events(watch, 1)
        saved = (watch.epoch, watch.revision)
    assert saved[1] == revision + 1

    # while no client runs
    flows.update(key(4), value(4))
    flows.delete(key(3))

    with Client(server.endpoint) as client:
        with client.watch(["flows"], start_revision=saved[1] + 1, epoch=saved[0]) as watch:
            events = live_events(watch, 2)
            assert [(e.revision, e.op, e.key) for e in events] == [
                (saved[1] + 1, Op.PUT, key(4)),
                (saved[1] + 2, Op.DELETE, key(3)),
            ]
            assert_nothing_more(watch)


def test_a_resume_with_another_epoch_gets_a_start_over_and_reads_with_it_fail_typed(flows, serve):
    seed(flows, 2)
    server = serve([flows])
    with Client(server.endpoint) as client:
        epoch = client.list_maps().epoch
        stale = epoch ^ 0x2  # the server's epochs are odd; this is another one
        with client.watch(["flows"], start_revision=5, epoch=stale) as watch:
            start_over = watch.get(timeout=TIMEOUT)
            assert isinstance(start_over, StartOver) and start_over.reason == "EPOCH_CHANGED"
            assert start_over.epoch == epoch
            assert {e.key: e.value for e in start_over.entries} == flows.dump()
        with pytest.raises(EpochChanged) as error:
            client.get("flows", key(1), min_revision=1, epoch=stale)
        assert error.value.code == grpc.StatusCode.FAILED_PRECONDITION


def test_a_compacted_resume_gets_a_start_over_and_compacted_reads_name_the_oldest_revision(flows, serve):
    server = serve([flows], ["--log-events", "4"])
    for i in range(1, 11):
        flows.update(key(1), value(i))
    with Client(server.endpoint) as client:
        current = client.get("flows", key(1), min_revision=10, timeout=TIMEOUT)
        assert current.value == value(10)
        with pytest.raises(Compacted) as error:
            client.get("flows", key(1), revision=1, epoch=current.epoch)
        oldest_read = error.value.oldest
        assert 1 < oldest_read <= current.revision
        # the revision it names can be read
        assert client.get("flows", key(1), revision=oldest_read).value == value(oldest_read)

        with client.watch(["flows"], start_revision=1, epoch=current.epoch) as watch:
            start_over = watch.get(timeout=TIMEOUT)
            assert isinstance(start_over, StartOver) and start_over.reason == "COMPACTED"
            assert start_over.revision == current.revision
            assert 1 < start_over.oldest <= current.revision
            assert [(e.key, e.value) for e in start_over.entries] == [(key(1), value(10))]

            # the oldest revision a watch may start from is there, whole
            with client.watch(["flows"], start_revision=start_over.oldest, epoch=current.epoch) as from_oldest:
                events = live_events(from_oldest, current.revision + 1 - start_over.oldest)
                assert [e.revision for e in events] == list(range(start_over.oldest, current.revision + 1))
                assert_nothing_more(from_oldest)

            flows.update(key(2), value(2))
            assert live_events(watch, 1)[0].revision == current.revision + 1


def test_get_and_list_at_a_past_revision_and_with_min_revision(flows, serve):
    server = serve([flows])
    with Client(server.endpoint) as client, client.watch(["flows"]) as watch:
        _, base = initial_state(watch)
        flows.update(key(1), value(1))
        flows.update(key(1), value(2))
        flows.update(key(2), value(3))
        live_events(watch, 3)
        epoch = watch.epoch

        assert client.get("flows", key(1), revision=base + 1, epoch=epoch).value == value(1)
        assert client.get("flows", key(1), revision=base + 2).value == value(2)
        assert client.get("flows", key(2), revision=base + 2).value is None
        past = client.list("flows", revision=base + 1)
        assert past.revision == base + 1
        assert {e.key: e.value for e in past} == {key(1): value(1)}

        with pytest.raises(OutOfRange) as future:
            client.get("flows", key(1), revision=base + 100)
        assert not isinstance(future.value, Compacted)
        with pytest.raises(DeadlineExceeded):
            client.get("flows", key(1), min_revision=base + 4, timeout=0.3)

        # a read that waits for a write made while it waits
        result = {}
        reader = threading.Thread(
            target=lambda: result.update(got=client.get("flows", key(1), min_revision=base + 4, timeout=TIMEOUT))
        )
        reader.start()
        flows.update(key(1), value(4))
        reader.join(TIMEOUT)
        assert result["got"].value == value(4) and result["got"].revision >= base + 4


def test_filters_prev_value_and_progress(flows, serve):
    server = serve([flows])
    with Client(server.endpoint) as client:
        with client.watch(["flows"], key_prefix=b"\x01", no_delete=True, prev_value=True) as watch:
            _, base = initial_state(watch)
            flows.update(key(1), value(1))
            flows.update(key(2), value(2))  # another prefix
            flows.update(key(1), value(5))
            flows.delete(key(1))  # a delete
            flows.update(key(1), value(6))
            events = live_events(watch, 3)
            assert [(e.revision, e.value, e.prev_value) for e in events] == [
                (base + 1, value(1), None),
                (base + 3, value(5), value(1)),
                (base + 5, value(6), None),
            ]
            flows.update(key(2), value(7))
            watch.request_progress()
            progress = watch.get(timeout=TIMEOUT)
            assert isinstance(progress, Progress) and progress.revision >= base + 5
            assert watch.revision == progress.revision


def test_a_key_range_and_no_put(flows, serve):
    server = serve([flows])
    with Client(server.endpoint) as client:
        # [01000000, 03000000) in bytewise order: keys 1 and 2 (little-endian)
        ranged = client.watch(["flows"], key=key(1), range_end=key(3))
        deletes = client.watch(["flows"], no_put=True)
        with ranged, deletes:
            _, base = initial_state(ranged)
            initial_state(deletes)
            for i in (1, 2, 3, 0x0101):
                flows.update(key(i), value(i))
            flows.delete(key(2))
            flows.delete(key(3))
            assert [(e.key, e.op) for e in live_events(ranged, 4)] == [
                (key(1), Op.PUT),
                (key(2), Op.PUT),
                (key(0x0101), Op.PUT),  # 01010000 is inside the range too
                (key(2), Op.DELETE),
            ]
            assert [(e.revision, e.key) for e in live_events(deletes, 2)] == [
                (base + 5, key(2)),
                (base + 6, key(3)),
            ]
            assert_nothing_more(ranged)
            assert_nothing_more(deletes, 0.05)


def test_errors_are_typed(flows, serve):
    server = serve([flows])
    with Client(server.endpoint) as client:
        with pytest.raises(UnknownMap) as unknown:
            client.get("nope", key(1))
        assert unknown.value.map == "nope" and "nope" in str(unknown.value)
        with pytest.raises(UnknownMap):
            client.list("nope")
        with client.watch(["nope"]) as watch, pytest.raises(UnknownMap):
            watch.get(timeout=TIMEOUT)
        with client.watch(["flows"], key=key(3), range_end=key(1)) as bad_range, pytest.raises(InvalidArgument):
            bad_range.get(timeout=TIMEOUT)
        with pytest.raises(InvalidArgument) as wrong_size:
            client.get("flows", b"\x01\x02")
        assert wrong_size.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert client.list_maps().by_name("flows") is not None, "still serving"

    with Client("unix:/nonexistent/mapsync.sock") as nowhere, pytest.raises(Unavailable):
        nowhere.list_maps(timeout=2)
    with pytest.raises(ValueError):
        Client("not an endpoint")
