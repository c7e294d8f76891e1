//! The `mapsync.v1.MapSync` service over a [`Store`].
//!
//! # Layout
//! - [`read`]: `ListMaps`, `Get` and `List`, at the current revision or a
//!   past one, after an optional wait for `min_revision`.
//! - [`watch`]: the bidirectional `Watch` stream: requests, limits, and
//!   the watches it multiplexes.
//! - `watcher`: one task per watch, from a sync-core subscription to
//!   batched messages, progress and cancellation.
//! - [`wire`]: a Watch stream's messages as sent (events pre-encoded) and
//!   the codec the Watch route is served with; `encoded`: live event
//!   encodings shared between watches of the same form.
//! - `outbound`: a stream's queue and response side; `budget`: the bytes
//!   prepared for clients, per stream and server-wide; `trim`: returning
//!   freed memory after streams close.
//! - [`write`]: `Put`, `Delete`, `Txn` and `Apply`, through the kernel
//!   task's command channel, for permitted callers only;
//!   [`write_status`]: why a write was refused, as a status.
//! - [`auth`]: each RPC's authentication and per-map checks
//!   ([`crate::authz`]).
//! - [`status`]: `Status`, the maps' shapes and counters and the ingest's
//!   health, from a [`StatusSource`] the kernel side fills.
//! - `oversize`: the status of a request too large to decode; `refusals`:
//!   how many refused requests a Watch stream may cause.

use std::sync::Arc;
use std::time::Duration;

use mapsync_core::status::StatusSource;
use mapsync_core::{Snapshot, Store};
use tokio::sync::watch as watch_channel;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::authz::Access;
use crate::error::RequestError;
use crate::pb;
use budget::ServerBudget;

pub mod auth;
mod budget;
mod encoded;
mod outbound;
mod oversize;
pub mod read;
mod refusals;
pub mod status;
mod trim;
pub mod watch;
mod watcher;
pub mod wire;
pub mod write;
pub mod write_status;

pub use outbound::{WatchStats, WatchStream};
pub use oversize::MapSyncRouter;

/// Pages buffered per `List` stream.
pub const LIST_BUFFER: usize = 4;
/// Entries per `List` page when the request does not say.
pub const DEFAULT_PAGE_SIZE: u32 = 1000;
/// Most entries per `List` page.
pub const MAX_PAGE_SIZE: u32 = 10_000;
/// The largest response message the server sends (a `List` page or a
/// `WatchResponse` holding one event at the entry size limits stays far
/// below it); part of the wire contract, so that clients accept it.
pub use mapsync_api::MAX_RESPONSE_BYTES;

/// Bounds of the service; every queue and wait it has is bounded by one of
/// these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most watches open at once on one `Watch` stream; a create beyond it is
    /// refused with `RESOURCE_EXHAUSTED`. Default 1024.
    pub max_watches_per_stream: usize,
    /// Messages queued per `Watch` stream between its watches and the
    /// transport. Default 16.
    pub stream_buffer: usize,
    /// Byte cap of one `EventBatch` message: a larger batch is split. Default
    /// 64 KiB (a single event larger than the cap travels alone). The
    /// transport holds up to about three messages per stream beyond the
    /// budgets below, so this also bounds that.
    pub max_message_bytes: usize,
    /// Most bytes (encoded) of watch messages prepared for one stream's
    /// client and not yet taken by the transport; a watch that would exceed
    /// it waits. Default 1 MiB. A stream with nothing queued may always
    /// queue one message.
    pub stream_budget_bytes: usize,
    /// Most bytes of watch messages prepared for all clients together and
    /// not yet taken by the transport; beyond it each stream may queue one
    /// message at a time. Default 64 MiB.
    pub server_budget_bytes: usize,
    /// How long a watch waits for room for one message before it is
    /// canceled `SLOW_CONSUMER` (the client resumes from the revision it
    /// names). Default 30 s.
    pub slow_consumer_timeout: Duration,
    /// Most watches open at once on the whole server; a create beyond it is
    /// refused with `RESOURCE_EXHAUSTED`. Default 16,384.
    pub max_watches: usize,
    /// Byte cap of one `List` page (keys and values, encoded); a page ends
    /// at whichever of this and its entry count comes first. Default 1 MiB.
    pub max_list_page_bytes: usize,
    /// Largest request message accepted (decoding limit of every call).
    /// Default 64 KiB.
    pub max_request_bytes: usize,
    /// Shortest progress interval a watch may ask for; shorter ones are
    /// raised to it. Default 100 ms.
    pub min_progress_interval: Duration,
    /// Longest a `Get` or `List` waits for `min_revision`, whatever its
    /// deadline. Default 30 s.
    pub max_min_revision_wait: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_watches_per_stream: 1024,
            stream_buffer: 16,
            max_message_bytes: 64 << 10,
            stream_budget_bytes: 1 << 20,
            server_budget_bytes: 64 << 20,
            slow_consumer_timeout: Duration::from_secs(30),
            max_watches: 16_384,
            max_list_page_bytes: 1 << 20,
            max_request_bytes: 64 << 10,
            min_progress_interval: Duration::from_millis(100),
            max_min_revision_wait: Duration::from_secs(30),
        }
    }
}

/// The service: the store it reads, its limits and its watch counters.
#[derive(Debug, Clone)]
pub struct MapSyncService {
    store: Store,
    stopping: watch_channel::Receiver<bool>,
    limits: Limits,
    stats: Arc<WatchStats>,
    budget: Arc<ServerBudget>,
    /// Where writes go and who may send them; `None`: writes are
    /// `UNIMPLEMENTED`.
    writes: Option<Arc<write::Writes>>,
    /// The capture side's counters for `Status`; `None`: only what the
    /// snapshot and the watch counts say.
    status: Option<Arc<dyn StatusSource>>,
    /// Who may read and write which map.
    authz: Arc<crate::authz::Authorizer>,
    /// Live watch events encoded once, shared between watches.
    encodings: Arc<encoded::SharedEncodings>,
}

impl MapSyncService {
    /// A service over `store` whose streams end when `stopping` turns true
    /// (graceful shutdown: open watch streams end with `UNAVAILABLE`, so the
    /// server's drain does not wait on them forever).
    pub fn new(store: Store, stopping: watch_channel::Receiver<bool>) -> Self {
        Self::with_limits(store, stopping, Limits::default(), Arc::default())
    }

    /// The same with explicit limits, counting watches in `stats`.
    pub fn with_limits(
        store: Store,
        stopping: watch_channel::Receiver<bool>,
        limits: Limits,
        stats: Arc<WatchStats>,
    ) -> Self {
        let budget = Arc::new(ServerBudget::new(limits.server_budget_bytes, stats.clone()));
        Self {
            store,
            stopping,
            limits,
            stats,
            budget,
            writes: None,
            status: None,
            authz: crate::authz::Authorizer::open(),
            encodings: Arc::default(),
        }
    }

    /// The same service accepting writes: `Put`, `Delete`, `Txn` and `Apply`
    /// from callers `policy` allows become commands on `commands`. Without
    /// this, every write is `UNIMPLEMENTED` ("this server does not accept
    /// writes"): a read-only server, whatever the caller.
    pub fn with_writes(
        mut self,
        commands: mapsync_core::CommandHandle,
        policy: crate::peer::WritePolicy,
    ) -> Self {
        self.writes = Some(write::Writes::new(commands, policy));
        self
    }

    /// The same service reporting `source`'s counters in `Status`.
    pub fn with_status(mut self, source: Arc<dyn StatusSource>) -> Self {
        self.status = Some(source);
        self
    }

    /// The same service deciding who may read and write with `authz`
    /// (without: everyone who connects reads, the write policy decides
    /// writes).
    pub fn with_authz(mut self, authz: Arc<crate::authz::Authorizer>) -> Self {
        self.authz = authz;
        self
    }

    /// The tonic server of this service, with the request size limit (a
    /// request over it is `RESOURCE_EXHAUSTED` on every call).
    pub fn into_server(self) -> MapSyncRouter {
        let max = self.limits.max_request_bytes;
        let watch = self.clone();
        let server = pb::map_sync_server::MapSyncServer::new(self)
            .max_decoding_message_size(max)
            .max_encoding_message_size(MAX_RESPONSE_BYTES);
        MapSyncRouter::new(server, watch, max)
    }

    fn ready_snapshot(&self) -> Result<Arc<Snapshot>, RequestError> {
        if !self.store.is_ready() {
            return Err(RequestError::NotReady);
        }
        Ok(self.store.snapshot())
    }
}

/// A Watch stream as the generated service's messages.
pub type DecodedWatchStream = futures::stream::Map<
    WatchStream,
    fn(Result<wire::Outgoing, Status>) -> Result<pb::WatchResponse, Status>,
>;

impl MapSyncService {
    /// Opens a `Watch` stream for an authenticated caller (authentication
    /// refused: its status).
    fn open_watch(
        &self,
        request: Request<Streaming<pb::WatchRequest>>,
    ) -> Result<WatchStream, Status> {
        let auth = self.authenticate(&request, "watch")?;
        Ok(watch::open(self, request.into_inner(), auth))
    }
}

fn header(snapshot: &Snapshot, revision: u64) -> Option<pb::ResponseHeader> {
    Some(pb::ResponseHeader {
        epoch: snapshot.epoch().0,
        revision,
    })
}

#[tonic::async_trait]
impl pb::map_sync_server::MapSync for MapSyncService {
    async fn list_maps(
        &self,
        request: Request<pb::ListMapsRequest>,
    ) -> Result<Response<pb::ListMapsResponse>, Status> {
        let auth = self.authenticate(&request, "list_maps")?;
        Ok(Response::new(read::list_maps(self, &auth)?))
    }

    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::GetResponse>, Status> {
        let auth = self.authenticate(&request, "get")?;
        auth.check(Access::Read, [request.get_ref().map.as_str()])?;
        Ok(Response::new(read::get(self, request).await?))
    }

    type ListStream = ReceiverStream<Result<pb::ListResponse, Status>>;

    async fn list(
        &self,
        request: Request<pb::ListRequest>,
    ) -> Result<Response<Self::ListStream>, Status> {
        let auth = self.authenticate(&request, "list")?;
        auth.check(Access::Read, [request.get_ref().map.as_str()])?;
        Ok(Response::new(read::list(self, request).await?))
    }

    type WatchStream = DecodedWatchStream;

    /// Only for callers that serve the generated server themselves:
    /// [`MapSyncService::into_server`] serves `Watch` through its own codec
    /// ([`wire`]), which sends the shared event encodings as they are.
    async fn watch(
        &self,
        request: Request<Streaming<pb::WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let stream = self.open_watch(request)?;
        let decode: fn(_) -> _ = |item: Result<wire::Outgoing, Status>| item?.into_message();
        Ok(Response::new(futures::StreamExt::map(stream, decode)))
    }

    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        let auth = self.authenticate(&request, "put")?;
        write::put(self, request, auth).await.map(Response::new)
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let auth = self.authenticate(&request, "delete")?;
        write::delete(self, request, auth).await.map(Response::new)
    }

    async fn txn(
        &self,
        request: Request<pb::TxnRequest>,
    ) -> Result<Response<pb::TxnResponse>, Status> {
        let auth = self.authenticate(&request, "txn")?;
        write::txn(self, request, auth).await.map(Response::new)
    }

    async fn apply(
        &self,
        request: Request<Streaming<pb::ApplyRequest>>,
    ) -> Result<Response<pb::ApplyResponse>, Status> {
        let auth = self.authenticate(&request, "apply")?;
        write::apply(self, request, auth).await.map(Response::new)
    }

    async fn status(
        &self,
        request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let auth = self.authenticate(&request, "status")?;
        Ok(Response::new(status::status(self, &auth)?))
    }
}
