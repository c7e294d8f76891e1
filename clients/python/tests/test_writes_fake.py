"""The write calls against an in-process fake server (grpcio) that answers
canned statuses and metadata: what the client sends, and how every refusal
becomes a typed exception. No kernel needed."""

from __future__ import annotations

from concurrent import futures
from typing import Dict, Iterator, List, Optional, Tuple

import grpc
import pytest

from mapsync_client import (
    AlreadyExists,
    Client,
    Compare,
    EntryTooLarge,
    EpochChanged,
    InvalidArgument,
    MapFull,
    ModRevisionMismatch,
    NotFound,
    NotSwitchable,
    PermissionDenied,
    TxnDelete,
    TxnPut,
    UnknownMap,
    VersionMismatch,
)
from mapsync_client._proto import mapsync_pb2 as pb
from mapsync_client._proto import mapsync_pb2_grpc as pb_grpc

EPOCH = 0x6B6C68D7566FD199
CAP = 64 * 1024

# map name -> (status code, message, trailing metadata)
REFUSALS: Dict[str, Tuple[grpc.StatusCode, str, Tuple[Tuple[str, str], ...]]] = {
    "exists": (grpc.StatusCode.ALREADY_EXISTS, "map `exists`: the key is present", ()),
    "absent": (grpc.StatusCode.NOT_FOUND, "map `absent`: the key is absent", ()),
    "nope": (grpc.StatusCode.NOT_FOUND, "unknown map `nope`", ()),
    "cas": (
        grpc.StatusCode.FAILED_PRECONDITION,
        "map `cas`: the key's mod revision changed",
        (("mapsync-current-mod-revision", "17"),),
    ),
    "cas-text": (
        grpc.StatusCode.FAILED_PRECONDITION,
        "map `cas-text`: the key's mod revision is 23, not the expected 5",
        (),
    ),
    "versioned": (
        grpc.StatusCode.FAILED_PRECONDITION,
        "map `versioned`: the live version changed",
        (("mapsync-live-version", "9"),),
    ),
    "plain": (
        grpc.StatusCode.FAILED_PRECONDITION,
        "map `plain` is not switchable (serve it with --switch to use Apply)",
        (),
    ),
    "restarted": (
        grpc.StatusCode.FAILED_PRECONDITION,
        "epoch 1 is not this server's (2): the server restarted; read the key again",
        (),
    ),
    "denied": (grpc.StatusCode.PERMISSION_DENIED, "writes need uid 0 or --write-uid", ()),
    "full": (grpc.StatusCode.RESOURCE_EXHAUSTED, "map `full` is full", ()),
    "small": (grpc.StatusCode.INVALID_ARGUMENT, "key: map `small` takes 4 bytes, got 3", ()),
    "txn-full": (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "map `txn-full`: the kernel refused put (op 2): MapFull (errno 7)",
        (("mapsync-failed-op", "2"), ("mapsync-errno", "7")),
    ),
}


class Fake(pb_grpc.MapSyncServicer):
    def __init__(self) -> None:
        self.put: Optional[pb.PutRequest] = None
        self.delete: Optional[pb.DeleteRequest] = None
        self.txn: Optional[pb.TxnRequest] = None
        self.apply_sizes: List[int] = []
        self.apply_entries: List[pb.ApplyEntry] = []
        self.apply_first: Optional[pb.ApplyRequest] = None

    def _refuse(self, map: str, context: grpc.ServicerContext) -> None:
        if map in REFUSALS:
            code, message, metadata = REFUSALS[map]
            context.set_trailing_metadata(metadata)
            context.abort(code, message)

    def Put(self, request: pb.PutRequest, context: grpc.ServicerContext) -> pb.PutResponse:
        self._refuse(request.map, context)
        self.put = request
        prev = pb.PrevValue(found=True, value=b"\x01\x00", mod_revision=40) if request.prev_value else None
        return pb.PutResponse(header=pb.ResponseHeader(epoch=EPOCH, revision=41), prev=prev)

    def Delete(self, request: pb.DeleteRequest, context: grpc.ServicerContext) -> pb.DeleteResponse:
        self._refuse(request.map, context)
        self.delete = request
        return pb.DeleteResponse(header=pb.ResponseHeader(epoch=EPOCH, revision=50), prev=pb.PrevValue())

    def Txn(self, request: pb.TxnRequest, context: grpc.ServicerContext) -> pb.TxnResponse:
        first = request.success[0] if request.success else None
        if first is not None:
            self._refuse(first.put.map or first.delete.map, context)
        self.txn = request
        return pb.TxnResponse(
            header=pb.ResponseHeader(epoch=EPOCH, revision=60),
            succeeded=False,
            prev=[pb.PrevValue() for _ in request.failure],
        )

    def Apply(self, requests: Iterator[pb.ApplyRequest], context: grpc.ServicerContext) -> pb.ApplyResponse:
        first: Optional[pb.ApplyRequest] = None
        for message in requests:
            self.apply_sizes.append(message.ByteSize())
            if first is None:
                first = message
            self.apply_entries.extend(message.entries)
        assert first is not None
        self._refuse(first.map, context)
        self.apply_first = first
        return pb.ApplyResponse(
            header=pb.ResponseHeader(epoch=EPOCH, revision=70),
            version=first.expect_version + 1,
            entries=len(self.apply_entries),
            changed=len(self.apply_entries),
            switch_ns=15_000_000,
        )


@pytest.fixture
def fake() -> Iterator[Tuple[Client, Fake]]:
    servicer = Fake()
    # the real server's request cap
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), options=[("grpc.max_receive_message_length", CAP)])
    pb_grpc.add_MapSyncServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    client = Client(f"127.0.0.1:{port}")
    yield client, servicer
    client.close()
    server.stop(None)


def test_put_and_delete_send_their_options(fake: Tuple[Client, Fake]) -> None:
    client, servicer = fake
    result = client.put("cfg", b"\x01\x00\x00\x00", b"\x2a\x00", mode="exist", expect_mod_revision=40, epoch=EPOCH, prev_value=True)
    assert (result.revision, result.epoch) == (41, EPOCH)
    assert result.prev is not None and (result.prev.value, result.prev.mod_revision) == (b"\x01\x00", 40)
    sent = servicer.put
    assert sent is not None
    assert (sent.map, sent.key, sent.value, sent.mode) == ("cfg", b"\x01\x00\x00\x00", b"\x2a\x00", pb.PUT_MODE_EXIST)
    assert sent.HasField("expect_mod_revision") and sent.expect_mod_revision == 40
    assert sent.epoch == EPOCH and sent.prev_value

    plain = client.put("cfg", b"\x02\x00\x00\x00", b"\x00\x00")
    assert plain.prev is None
    assert servicer.put is not None and not servicer.put.HasField("expect_mod_revision")

    # 0: "only if absent", which must not read as "no check"
    client.delete("cfg", b"\x01\x00\x00\x00", expect_mod_revision=0)
    assert servicer.delete is not None and servicer.delete.HasField("expect_mod_revision")
    with pytest.raises(ValueError, match="put mode 'sometimes'"):
        client.put("cfg", b"k", b"v", mode="sometimes")


def test_every_refusal_is_a_typed_exception(fake: Tuple[Client, Fake]) -> None:
    client, _ = fake

    def refused(map: str) -> Exception:
        with pytest.raises(Exception) as caught:
            client.put(map, b"\x00" * 4, b"\x00\x00")
        return caught.value

    assert isinstance(refused("exists"), AlreadyExists)
    assert isinstance(refused("absent"), NotFound)
    unknown = refused("nope")
    assert isinstance(unknown, UnknownMap) and unknown.map == "nope"
    cas = refused("cas")
    assert isinstance(cas, ModRevisionMismatch) and cas.current == 17
    cas_text = refused("cas-text")
    assert isinstance(cas_text, ModRevisionMismatch) and cas_text.current == 23
    assert isinstance(refused("restarted"), EpochChanged)
    assert isinstance(refused("denied"), PermissionDenied)
    assert isinstance(refused("full"), MapFull)
    small = refused("small")
    assert isinstance(small, InvalidArgument)
    assert str(small) == "key: map `small` takes 4 bytes, got 3 (INVALID_ARGUMENT)"
    with pytest.raises(NotFound):
        client.delete("absent", b"\x00" * 4)
    with pytest.raises(VersionMismatch) as version:
        client.apply("versioned", [], expect_version=3)
    assert version.value.live == 9
    with pytest.raises(NotSwitchable):
        client.apply("plain", [])


def test_a_txn_sends_both_branches_and_a_refusal_names_its_op(fake: Tuple[Client, Fake]) -> None:
    client, servicer = fake
    result = client.txn(
        [
            Compare.mod_revision("cfg", b"\x01", ">", 5),
            Compare.value("cfg", b"\x02", "!=", b"\x00"),
            Compare.exists("cfg", b"\x03", False),
        ],
        [TxnPut("cfg", b"\x01", b"\x09"), TxnDelete("cfg", b"\x02")],
        [TxnPut("cfg", b"\x04", b"\x08", mode="no_exist")],
        epoch=EPOCH,
        prev_value=True,
    )
    assert not result.succeeded, "a failed compare is no error"
    assert (result.revision, len(result.prev)) == (60, 1)
    sent = servicer.txn
    assert sent is not None
    assert [c.result for c in sent.compare] == [pb.Compare.GREATER, pb.Compare.NOT_EQUAL, pb.Compare.EQUAL]
    assert sent.compare[0].mod_revision == 5 and sent.compare[2].WhichOneof("target") == "exists"
    assert sent.success[1].WhichOneof("op") == "delete"
    assert sent.failure[0].put.mode == pb.PUT_MODE_NO_EXIST
    with pytest.raises(MapFull) as full:
        client.txn([], [TxnPut("txn-full", b"\x00", b"\x00")] * 3)
    assert full.value.failed_op == 2
    with pytest.raises(ValueError, match="compare result '='"):
        client.txn([Compare.mod_revision("cfg", b"\x01", "=", 5)])


def test_a_large_apply_travels_in_messages_under_the_request_cap(fake: Tuple[Client, Fake]) -> None:
    client, servicer = fake
    entries: List[Tuple[bytes, Optional[bytes]]] = [(i.to_bytes(4, "little"), b"\xab" * 32) for i in range(20_000)]
    entries.append((b"\xff" * 4, None))
    applied = client.apply("rules", entries, merge=True, expect_version=6)
    assert (applied.revision, applied.version, applied.entries, applied.switch_ns) == (70, 7, 20_001, 15_000_000)
    assert len(servicer.apply_sizes) > 10 and max(servicer.apply_sizes) <= CAP
    first = servicer.apply_first
    assert first is not None and (first.map, first.mode, first.expect_version) == ("rules", pb.APPLY_MODE_MERGE, 6)
    assert [(e.key, e.value, e.delete) for e in servicer.apply_entries] == [
        (k, v or b"", v is None) for k, v in entries
    ]
    with pytest.raises(EntryTooLarge):
        client.apply("rules", [(b"\x00" * 4, b"\x00" * CAP)])
