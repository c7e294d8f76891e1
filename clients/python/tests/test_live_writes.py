"""The write calls against a live `mapsync serve` on real kernel maps: each
write checked in the kernel with bpftool, read back at its revision, seen
by a watch; every refusal typed and the map untouched."""

from __future__ import annotations

import pytest

from support import BpfMap, key, value

from mapsync_client import (
    AlreadyExists,
    Client,
    Compare,
    Event,
    InitialStateDone,
    MapFull,
    ModRevisionMismatch,
    NotFound,
    NotSwitchable,
    Source,
    TxnDelete,
    TxnPut,
    UnknownMap,
    VersionMismatch,
)

TIMEOUT = 10.0


def test_put_delete_read_your_writes_and_refusals(flows: BpfMap, serve) -> None:
    server = serve([flows])
    with Client(server.endpoint) as client, client.watch(["flows"]) as watch:
        assert isinstance(watch.get(timeout=TIMEOUT), InitialStateDone)
        written = client.put("flows", key(1), value(7))
        assert flows.dump() == {key(1): value(7)}
        got = client.get("flows", key(1), min_revision=written.revision, epoch=written.epoch, timeout=TIMEOUT)
        assert (got.value, got.mod_revision) == (value(7), written.revision)
        event = watch.get(timeout=TIMEOUT)
        assert isinstance(event, Event)
        assert (event.revision, event.source, event.value) == (written.revision, Source.API, value(7))

        before = flows.dump()
        with pytest.raises(AlreadyExists):
            client.put("flows", key(1), value(8), mode="no_exist")
        with pytest.raises(NotFound):
            client.put("flows", key(2), value(8), mode="exist")
        with pytest.raises(ModRevisionMismatch) as stale:
            client.put("flows", key(1), value(8), expect_mod_revision=written.revision - 1, epoch=written.epoch)
        assert stale.value.current == written.revision
        with pytest.raises(UnknownMap):
            client.put("nope", key(1), value(8))
        assert flows.dump() == before, "refused writes change nothing"

        cas = client.put("flows", key(1), value(9), expect_mod_revision=written.revision, prev_value=True)
        assert cas.prev is not None and cas.prev.value == value(7)
        deleted = client.delete("flows", key(1), expect_mod_revision=cas.revision, prev_value=True)
        assert deleted.prev is not None and deleted.prev.value == value(9)
        assert flows.dump() == {}
        with pytest.raises(NotFound):
            client.delete("flows", key(1))


def test_txn_compares_then_writes_and_a_full_map_undoes_it(pins, serve) -> None:
    small = BpfMap(pins.join("small"), "small", entries=2)
    server = serve([small])
    with Client(server.endpoint) as client:
        failed = client.txn(
            [Compare.exists("small", key(1))],
            [TxnPut("small", key(1), value(1))],
            [TxnPut("small", key(2), value(2))],
        )
        assert not failed.succeeded
        assert small.dump() == {key(2): value(2)}
        held = client.txn(
            [Compare.value("small", key(2), "==", value(2))],
            [TxnDelete("small", key(2)), TxnPut("small", key(3), value(3))],
        )
        assert held.succeeded and small.dump() == {key(3): value(3)}
        before = small.dump()
        with pytest.raises(MapFull) as full:
            client.txn([], [TxnPut("small", key(4), value(4)), TxnPut("small", key(5), value(5))])
        assert full.value.failed_op == 1
        assert small.dump() == before, "the applied op was undone"


def test_apply_switches_the_whole_set(pins, serve) -> None:
    plain = BpfMap(pins.join("plain"), "plain")
    rules = pins.join("rules")
    server = serve([plain], ["--switch-create", f"rules={rules}:hash:4:8:1000"])
    with Client(server.endpoint) as client:
        info = client.list_maps().by_name("rules")
        assert info is not None and info.switchable
        applied = client.apply("rules", [(key(i), value(i)) for i in range(500)], expect_version=info.version)
        assert (applied.version, applied.entries) == (info.version + 1, 500)
        listed = {e.key: e.value for e in client.list("rules", min_revision=applied.revision)}
        assert listed == {key(i): value(i) for i in range(500)}
        merged = client.apply("rules", [(key(0), None), (key(600), value(6))], merge=True)
        assert merged.entries == 500
        with pytest.raises(VersionMismatch) as stale:
            client.apply("rules", [], expect_version=applied.version)
        assert stale.value.live == merged.version
        with pytest.raises(NotSwitchable):
            client.apply("plain", [(key(1), value(1))])
