"""The client: a channel to one mapsync server and its calls."""

from __future__ import annotations

from typing import Any, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import grpc

from ._proto import mapsync_pb2 as pb
from ._proto import mapsync_pb2_grpc as pb_grpc
from .auth import BearerToken
from .errors import from_rpc_error, from_write_error
from .types import Entry, GetResult, Maps, map_info_from_pb
from .watch import Watch
from .write import (
    Applied,
    Compare,
    TxnDelete,
    TxnPut,
    TxnResult,
    WriteResult,
    apply_messages,
    previous_from_pb,
    put_mode,
)

__all__ = ["Client", "Listing"]


def _target(endpoint: str) -> str:
    """The gRPC target for ``HOST:PORT``, ``http://HOST:PORT`` or ``unix:PATH``."""
    if endpoint.startswith("unix:"):
        if not endpoint[len("unix:") :]:
            raise ValueError(f"invalid endpoint {endpoint!r}: expected HOST:PORT or unix:PATH")
        return endpoint
    for scheme in ("http://", "grpc://"):
        if endpoint.startswith(scheme):
            endpoint = endpoint[len(scheme) :]
    host, sep, port = endpoint.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"invalid endpoint {endpoint!r}: expected HOST:PORT or unix:PATH")
    return endpoint


def _read(path: str) -> bytes:
    """The bytes of a TLS file (an unreadable one is an OSError naming it)."""
    with open(path, "rb") as file:
        return file.read()


class Listing(Iterable[Entry]):
    """The entries of one map at one revision, fetched page by page as you
    iterate. :attr:`revision` and :attr:`epoch` are known once the first page
    is in (reading them fetches it)."""

    def __init__(self, pages: Iterator[pb.ListResponse], map: str) -> None:
        self._pages = pages
        self._map = map
        self._first: Optional[pb.ListResponse] = None
        self._started = False

    def _first_page(self) -> pb.ListResponse:
        if self._first is None:
            try:
                self._first = next(self._pages)
            except StopIteration:
                self._first = pb.ListResponse(last=True)
            except grpc.RpcError as error:
                raise from_rpc_error(error, map=self._map) from None
        return self._first

    @property
    def revision(self) -> int:
        """The revision every page is as of."""
        return self._first_page().header.revision

    @property
    def epoch(self) -> int:
        """The server's epoch."""
        return self._first_page().header.epoch

    def __iter__(self) -> Iterator[Entry]:
        if self._started:
            raise RuntimeError("a Listing can be iterated once")
        self._started = True
        page = self._first_page()
        while True:
            for e in page.entries:
                yield Entry(map=self._map, key=bytes(e.key), value=bytes(e.value), mod_revision=e.mod_revision)
            if page.last:
                return
            try:
                page = next(self._pages)
            except StopIteration:
                return
            except grpc.RpcError as error:
                raise from_rpc_error(error, map=self._map) from None


class Client:
    """A connection to one mapsync server.

    Args:
        endpoint: ``HOST:PORT`` or ``unix:PATH`` (``http://HOST:PORT`` works too).
        reconnect_backoff_max: the most seconds the channel waits between
            attempts to reach a server that went away.
        tls_ca: path of PEM CA certificates: speak TLS to a ``HOST:PORT``
            endpoint whose certificate chains to them (and names its host).
        tls_cert, tls_key: paths of a PEM client certificate and its key, for
            mTLS (with ``tls_ca``).
        token: a bearer token sent with every call (``authorization: Bearer
            TOKEN``), for a server with a policy file; white space around it
            is dropped. ``None``: none (``$MAPSYNC_TOKEN`` is read only by the
            ``mapsync`` CLI; pass ``os.environ.get("MAPSYNC_TOKEN")`` for it).

    Every call raises a :class:`~mapsync_client.MapsyncError` subclass on
    failure. The client is thread-safe; close it (or use it as a context
    manager) when done.

    Example::

        from mapsync_client import Client, Event, StartOver

        with Client("unix:/run/mapsync/mapsync.sock") as client:
            print(client.get("flows", bytes([1, 0, 0, 0])).value)
            with client.watch(["flows"]) as watch:
                for item in watch:
                    print(item)
    """

    def __init__(
        self,
        endpoint: str,
        *,
        reconnect_backoff_max: float = 2.0,
        tls_ca: Optional[str] = None,
        tls_cert: Optional[str] = None,
        tls_key: Optional[str] = None,
        token: Optional[str] = None,
    ) -> None:
        self.endpoint = endpoint
        backoff_ms = max(100, int(reconnect_backoff_max * 1000))
        target = _target(endpoint)
        options: List[Tuple[str, Any]] = [
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", backoff_ms),
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
        ]
        if target.startswith("unix:"):
            # gRPC core would send the socket path as :authority, which
            # HTTP/2 servers (hyper, under tonic) refuse with PROTOCOL_ERROR
            options.append(("grpc.default_authority", "localhost"))
        if tls_ca is None and (tls_cert is not None or tls_key is not None):
            raise ValueError("tls_cert and tls_key need tls_ca")
        if (tls_cert is None) != (tls_key is None):
            raise ValueError("give tls_cert and tls_key together")
        if tls_ca is not None:
            if target.startswith("unix:"):
                raise ValueError(f"TLS applies to HOST:PORT endpoints, not {endpoint!r}")
            credentials = grpc.ssl_channel_credentials(
                root_certificates=_read(tls_ca),
                private_key=_read(tls_key) if tls_key is not None else None,
                certificate_chain=_read(tls_cert) if tls_cert is not None else None,
            )
            self._channel = grpc.secure_channel(target, credentials, options=options)
        else:
            self._channel = grpc.insecure_channel(target, options=options)
        if token is not None:
            self._channel = grpc.intercept_channel(self._channel, BearerToken(token))
        self._stub = pb_grpc.MapSyncStub(self._channel)  # type: ignore[no-untyped-call]

    def close(self) -> None:
        """Closes the channel (open watches end with it)."""
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def list_maps(self, *, timeout: Optional[float] = None) -> Maps:
        """The mirrored maps, with the server's epoch and current revision."""
        try:
            reply = self._stub.ListMaps(pb.ListMapsRequest(), timeout=timeout)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        return Maps(
            epoch=reply.header.epoch,
            revision=reply.header.revision,
            maps=[map_info_from_pb(m) for m in reply.maps],
        )

    def get(
        self,
        map: str,
        key: bytes,
        *,
        revision: int = 0,
        min_revision: int = 0,
        epoch: int = 0,
        timeout: Optional[float] = None,
    ) -> GetResult:
        """One key's value.

        Args:
            map: the map's name.
            key: the key bytes (the map's key size, memory order).
            revision: read as of this past revision (0: the current one); it
                must still be in the change log (else :class:`Compacted`).
            min_revision: first wait until the mirror reached this revision
                (0: do not wait); bounded by ``timeout``
                (:class:`DeadlineExceeded`) and the server's maximum wait
                (:class:`Unavailable`).
            epoch: the epoch ``revision`` / ``min_revision`` belong to (0:
                unknown); another one raises :class:`EpochChanged`.
            timeout: seconds before the call gives up.

        Raises:
            UnknownMap, InvalidArgument (wrong key size), Compacted,
            OutOfRange, EpochChanged, DeadlineExceeded, Unavailable.
        """
        request = pb.GetRequest(map=map, key=bytes(key), revision=revision, min_revision=min_revision, epoch=epoch)
        try:
            reply = self._stub.Get(request, timeout=timeout)
        except grpc.RpcError as error:
            raise from_rpc_error(error, map=map) from None
        return GetResult(
            value=bytes(reply.value) if reply.found else None,
            mod_revision=reply.mod_revision,
            revision=reply.header.revision,
            epoch=reply.header.epoch,
        )

    def list(
        self,
        map: str,
        *,
        page_size: int = 0,
        revision: int = 0,
        min_revision: int = 0,
        epoch: int = 0,
        timeout: Optional[float] = None,
    ) -> Listing:
        """Every entry of a map at one revision, read in pages as you iterate.

        Args:
            map: the map's name.
            page_size: entries per page (0: the server's default).
            revision, min_revision, epoch: as for :meth:`get`.
            timeout: seconds before the whole listing gives up.

        Raises:
            UnknownMap, InvalidArgument, Compacted, OutOfRange, EpochChanged,
            DeadlineExceeded, Unavailable.

        Example::

            listing = client.list("flows")
            table = {e.key: e.value for e in listing}
            print(f"{len(table)} entries at revision {listing.revision}")
        """
        request = pb.ListRequest(
            map=map, page_size=page_size, revision=revision, min_revision=min_revision, epoch=epoch
        )
        listing = Listing(self._stub.List(request, timeout=timeout), map)
        listing._first_page()  # now, so that errors surface here
        return listing

    def watch(
        self,
        maps: Optional[Sequence[str]] = None,
        *,
        key: bytes = b"",
        range_end: bytes = b"",
        key_prefix: bytes = b"",
        start_revision: int = 0,
        epoch: int = 0,
        no_put: bool = False,
        no_delete: bool = False,
        prev_value: bool = False,
        progress_interval_ms: int = 0,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
        max_retries: Optional[int] = None,
        buffer: int = 1024,
    ) -> Watch:
        """Watches maps: an iterator of :class:`Event`, :class:`InitialStateDone`,
        :class:`Progress` and :class:`StartOver` that resumes by itself.

        With ``start_revision=0`` (the default) the matching entries come
        first as events with source INITIAL, then :class:`InitialStateDone`,
        then every matching change in revision order. With
        ``start_revision=N`` (and the ``epoch`` N belongs to) the changes from
        N come, e.g. ``N = saved_revision + 1`` to continue after a client
        restart.

        When the stream breaks, the watch reconnects (backoff from
        ``backoff_initial`` doubling up to ``backoff_max`` seconds; at most
        ``max_retries`` consecutive attempts, None: forever) and resumes after
        the last revision it delivered: no change is lost or repeated. When the
        server cannot resume it (it restarted, or the revision is compacted),
        the watch reads the current state and delivers it as one
        :class:`StartOver`; live changes follow.

        Args:
            maps: map names (None or empty: every map).
            key: one key; or with ``range_end`` the range ``[key, range_end)``.
            key_prefix: only keys starting with these bytes.
            no_put, no_delete: leave out puts / deletes.
            prev_value: fill :attr:`Event.prev_value`.
            progress_interval_ms: a :class:`Progress` this often (0: only on
                :meth:`Watch.request_progress`).
            buffer: items held for you before the stream is held back.

        Raises (when iterating): UnknownMap, InvalidArgument, WatchCanceled,
        Unavailable (retries exhausted).
        """
        create = pb.WatchCreateRequest(
            maps=list(maps or []),
            key=key,
            range_end=range_end,
            key_prefix=key_prefix,
            start_revision=start_revision,
            epoch=epoch,
            no_put=no_put,
            no_delete=no_delete,
            prev_value=prev_value,
            progress_interval_ms=progress_interval_ms,
        )
        return Watch(
            self._stub,
            create,
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
            max_retries=max_retries,
            buffer=buffer,
        )

    def put(
        self,
        map: str,
        key: bytes,
        value: bytes,
        *,
        mode: str = "any",
        expect_mod_revision: Optional[int] = None,
        epoch: int = 0,
        prev_value: bool = False,
        timeout: Optional[float] = None,
    ) -> WriteResult:
        """Writes one key; the result's ``revision`` is where the write is
        visible (``get(..., min_revision=result.revision)`` reads it).

        Args:
            map: the map's name.
            key, value: bytes in memory order (per-CPU maps: one 8-byte
                aligned slot per possible CPU).
            mode: ``"any"`` (create or replace), ``"no_exist"`` (only create),
                ``"exist"`` (only replace).
            expect_mod_revision: compare-and-swap: write only if the key's mod
                revision is this (0: only if absent).
            epoch: the epoch ``expect_mod_revision`` belongs to (0: any).
            prev_value: also return the key's state before the write.

        Raises:
            AlreadyExists, NotFound, ModRevisionMismatch (``.current``),
            MapFull, InvalidArgument, PermissionDenied, UnknownMap,
            EpochChanged, Unavailable.
        """
        request = pb.PutRequest(
            map=map, key=bytes(key), value=bytes(value), mode=put_mode(mode), epoch=epoch, prev_value=prev_value
        )
        if expect_mod_revision is not None:
            request.expect_mod_revision = expect_mod_revision
        try:
            reply = self._stub.Put(request, timeout=timeout)
        except grpc.RpcError as error:
            raise from_write_error(error, map=map) from None
        return WriteResult(
            revision=reply.header.revision,
            epoch=reply.header.epoch,
            prev=previous_from_pb(reply.prev) if prev_value else None,
        )

    def delete(
        self,
        map: str,
        key: bytes,
        *,
        expect_mod_revision: Optional[int] = None,
        epoch: int = 0,
        prev_value: bool = False,
        timeout: Optional[float] = None,
    ) -> WriteResult:
        """Removes one key (absent: :class:`NotFound`); arguments as for
        :meth:`put`."""
        request = pb.DeleteRequest(map=map, key=bytes(key), epoch=epoch, prev_value=prev_value)
        if expect_mod_revision is not None:
            request.expect_mod_revision = expect_mod_revision
        try:
            reply = self._stub.Delete(request, timeout=timeout)
        except grpc.RpcError as error:
            raise from_write_error(error, map=map) from None
        return WriteResult(
            revision=reply.header.revision,
            epoch=reply.header.epoch,
            prev=previous_from_pb(reply.prev) if prev_value else None,
        )

    def txn(
        self,
        compares: Sequence[Compare] = (),
        success: Sequence[Union[TxnPut, TxnDelete]] = (),
        failure: Sequence[Union[TxnPut, TxnDelete]] = (),
        *,
        epoch: int = 0,
        prev_value: bool = False,
        timeout: Optional[float] = None,
    ) -> TxnResult:
        """A transaction, like etcd's: if every compare holds the ``success``
        ops run in order, otherwise the ``failure`` ops. A failed compare is
        no error (``succeeded`` is False). If the kernel refuses an op, the
        ops before it are undone and the error's ``failed_op`` names it.

        Example::

            result = client.txn(
                [Compare.mod_revision("cfg", key, "==", seen)],
                [TxnPut("cfg", key, new_value)],
            )
        """
        request = pb.TxnRequest(
            compare=[c.to_pb() for c in compares],
            success=[op.to_pb() for op in success],
            failure=[op.to_pb() for op in failure],
            epoch=epoch,
            prev_value=prev_value,
        )
        try:
            reply = self._stub.Txn(request, timeout=timeout)
        except grpc.RpcError as error:
            raise from_write_error(error) from None
        return TxnResult(
            succeeded=reply.succeeded,
            revision=reply.header.revision,
            epoch=reply.header.epoch,
            prev=[previous_from_pb(p) for p in reply.prev],
        )

    def apply(
        self,
        map: str,
        entries: Iterable[Tuple[bytes, Optional[bytes]]],
        *,
        merge: bool = False,
        expect_version: Optional[int] = None,
        timeout: Optional[float] = None,
    ) -> Applied:
        """Replaces a switchable map's whole set (or, with ``merge``, puts and
        deletes on top of it) in one atomic switch: BPF programs see the old
        set or the new one, never a mix.

        Args:
            map: the switchable map's name.
            entries: ``(key, value)`` pairs; a value of None deletes the key
                (merge only). Streamed in messages under the 64 KiB request
                cap; every entry is checked to fit before anything is sent.
            expect_version: switch only if this is the live version.

        Raises:
            VersionMismatch (``.live``), NotSwitchable, MapFull (more entries
            than the map holds), InvalidArgument, PermissionDenied,
            UnknownMap, EntryTooLarge.
        """
        messages = apply_messages(map, entries, merge=merge, expect_version=expect_version)
        try:
            reply = self._stub.Apply(iter(messages), timeout=timeout)
        except grpc.RpcError as error:
            raise from_write_error(error, map=map) from None
        return Applied(
            version=reply.version,
            revision=reply.header.revision,
            epoch=reply.header.epoch,
            entries=reply.entries,
            changed=reply.changed,
            switch_ns=reply.switch_ns,
        )
