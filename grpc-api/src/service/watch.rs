//! The bidirectional `Watch` stream: one task per stream reads the client's
//! requests (create, cancel, progress) and starts one task per watch
//! (`watcher`). Every watch sends into the stream's one bounded queue
//! (`outbound`), charged to the stream's and the server's byte budget
//! (`budget`), so a client that stops reading holds at most
//! [`super::Limits::stream_budget_bytes`] (and `stream_buffer` messages)
//! plus one batch per watch; each watch's subscription is a cursor into the
//! shared change log, so a lagging watch never slows ingest or other
//! streams. It catches up when the client reads again, is canceled
//! `COMPACTED` once the log has moved past it, or `SLOW_CONSUMER` once it
//! has waited for room longer than `slow_consumer_timeout`.
//!
//! Errors about one watch (bad create, unknown id, too many watches, epoch
//! changed, compacted) are `Canceled` responses for that watch id; the stream
//! and its other watches go on. The stream itself ends, after what is
//! queued, with `RESOURCE_EXHAUSTED` for a request too large to decode or a
//! flood of refused requests, `INVALID_ARGUMENT` for a request that does not
//! decode, and `UNAVAILABLE` at shutdown.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use mapsync_core::Store;
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;
use tonic::{Code, Status, Streaming};
use tracing::Instrument;

use super::auth::Authed;
use super::budget::StreamBudget;
use super::outbound::{Outbound, WatchStats, WatchStream};
use super::refusals::{REFUSAL_BURST, REFUSALS_PER_SECOND, RefusalBucket};
use super::watcher::{Ended, Watcher};
use super::{Limits, MapSyncService};
use crate::authz::{Access, AuthError};
use crate::convert;
use crate::error::RequestError;
use crate::pb;
use crate::pb::watch_request::Request as Req;
use crate::pb::watch_response::Kind;

/// Opens a stream: spawns its request reader and returns the response side.
pub(super) fn open(
    service: &MapSyncService,
    inbound: Streaming<pb::WatchRequest>,
    auth: Authed,
) -> WatchStream {
    let budget = StreamBudget::new(service.budget.clone(), service.limits.stream_budget_bytes);
    let (out, responses) = Outbound::channel(
        service.limits.stream_buffer,
        budget,
        service.stats.clone(),
        service.store.epoch().0,
    );
    let stream = StreamState {
        store: service.store.clone(),
        encodings: service.encodings.clone(),
        limits: service.limits,
        stats: service.stats.clone(),
        out,
        watches: HashMap::new(),
        next_id: 1,
        refusals: RefusalBucket::new(),
        auth,
    };
    let stopping = service.stopping.clone();
    service
        .stats
        .streams_counter()
        .fetch_add(1, Ordering::Relaxed);
    tokio::spawn(
        stream
            .run(inbound, stopping)
            .instrument(tracing::info_span!("watch_stream")),
    );
    responses
}

/// Why a stream stops reading requests.
enum Gone {
    /// The client is gone.
    Client,
    /// The client keeps sending requests that are refused.
    Flooding,
}

/// The status that ends a stream whose inbound side failed: a request too
/// large to decode is `RESOURCE_EXHAUSTED`, one that does not decode is
/// `INVALID_ARGUMENT`; a transport error (the client reset the stream) keeps
/// its status, which nobody reads.
fn inbound_error(status: Status, max_request_bytes: usize) -> Status {
    match status.code() {
        Code::OutOfRange => Status::from(RequestError::RequestTooLarge {
            max: max_request_bytes,
            detail: status.message().to_owned(),
        }),
        Code::Internal => Status::from(RequestError::UndecodableRequest {
            detail: status.message().to_owned(),
        }),
        _ => status,
    }
}

struct WatchHandle {
    cancel: oneshot::Sender<()>,
    progress: Arc<Notify>,
    task: JoinHandle<Ended>,
}

struct StreamState {
    store: Store,
    encodings: Arc<super::encoded::SharedEncodings>,
    limits: Limits,
    stats: Arc<WatchStats>,
    out: Outbound,
    watches: HashMap<u64, WatchHandle>,
    next_id: u64,
    refusals: RefusalBucket,
    /// The stream's caller: each create is checked against the policy in
    /// force when it arrives.
    auth: Authed,
}

impl StreamState {
    async fn run(
        mut self,
        mut inbound: Streaming<pb::WatchRequest>,
        mut stopping: tokio::sync::watch::Receiver<bool>,
    ) {
        tracing::debug!("watch stream opened");
        let mut half_closed = false;
        loop {
            tokio::select! {
                _ = async { let _ = stopping.wait_for(|stop| *stop).await; } => {
                    self.abort_all();
                    // replaces nothing: the first ending set wins
                    self.out.end_with(Status::unavailable(
                        "mapsync is shutting down: reconnect and resume from the last revision you saw",
                    ));
                    break;
                }
                _ = self.out.closed() => break,
                request = inbound.message(), if !half_closed => match request {
                    Ok(Some(request)) => {
                        match self.handle(request).await {
                            Ok(()) => {}
                            Err(Gone::Client) => break,
                            Err(Gone::Flooding) => {
                                self.abort_all();
                                self.out.end_with(Status::from(RequestError::RefusalFlood {
                                    burst: REFUSAL_BURST as u32,
                                    per_second: REFUSALS_PER_SECOND as u32,
                                }));
                                break;
                            }
                        }
                    }
                    // the client sends no more requests; its watches go on
                    Ok(None) => half_closed = true,
                    Err(status) => {
                        self.abort_all();
                        self.out.end_with(inbound_error(status, self.limits.max_request_bytes));
                        break;
                    }
                },
            }
        }
        self.abort_all();
        self.stats.streams_counter().fetch_sub(1, Ordering::Relaxed);
        super::trim::after_stream_closed();
        tracing::debug!("watch stream closed");
    }

    fn abort_all(&mut self) {
        for (_, handle) in self.watches.drain() {
            handle.task.abort();
        }
    }

    /// Handles one request; `Err` when the client is gone.
    async fn handle(&mut self, request: pb::WatchRequest) -> Result<(), Gone> {
        match request.request {
            Some(Req::Create(create)) => self.create(create).await,
            Some(Req::Cancel(cancel)) => self.cancel(cancel.watch_id).await,
            Some(Req::Progress(progress)) => self.progress(progress.watch_id).await,
            None => self.refuse(0, RequestError::EmptyWatchRequest).await,
        }
    }

    async fn refuse(&mut self, id: u64, error: RequestError) -> Result<(), Gone> {
        tracing::debug!(id, %error, "watch refused");
        if !self.refusals.take() {
            return Err(Gone::Flooding);
        }
        let canceled = error.watch_canceled(0);
        self.send(id, Kind::Canceled(canceled)).await
    }

    async fn send(&self, id: u64, kind: Kind) -> Result<(), Gone> {
        self.out.send(id, kind).await.map_err(|()| Gone::Client)
    }

    /// Forgets watches whose task has ended on its own (they sent their
    /// `Canceled`).
    fn prune(&mut self) {
        self.watches.retain(|_, handle| !handle.task.is_finished());
    }

    fn is_open(&self, id: u64) -> bool {
        self.watches
            .get(&id)
            .is_some_and(|handle| !handle.task.is_finished())
    }

    async fn create(&mut self, create: pb::WatchCreateRequest) -> Result<(), Gone> {
        let id = if create.watch_id != 0 {
            if self.is_open(create.watch_id) {
                let error = RequestError::WatchIdInUse {
                    id: create.watch_id,
                };
                return self.refuse(create.watch_id, error).await;
            }
            create.watch_id
        } else {
            while self.is_open(self.next_id) || self.next_id == 0 {
                self.next_id = self.next_id.wrapping_add(1);
            }
            self.next_id
        };
        if let Err(error) = self.authorize(&create) {
            return self.refuse(id, error.into()).await;
        }
        if self.watches.len() >= self.limits.max_watches_per_stream {
            self.prune();
            if self.watches.len() >= self.limits.max_watches_per_stream {
                let error = RequestError::TooManyWatches {
                    max: self.limits.max_watches_per_stream,
                };
                return self.refuse(id, error).await;
            }
        }
        let Some(admitted) = self.stats.admit(self.limits.max_watches) else {
            let error = RequestError::TooManyWatchesOnServer {
                max: self.limits.max_watches,
            };
            return self.refuse(id, error).await;
        };
        let subscription = match self.subscribe(&create) {
            Ok(subscription) => subscription,
            Err(error) => return self.refuse(id, error).await,
        };
        let revision = self.store.revision();
        self.send(id, Kind::Created(pb::WatchCreated { revision }))
            .await?;
        let (cancel, canceled) = oneshot::channel();
        let progress = Arc::new(Notify::new());
        let interval = (create.progress_interval_ms > 0).then(|| {
            std::time::Duration::from_millis(create.progress_interval_ms.into())
                .max(self.limits.min_progress_interval)
        });
        let watcher = Watcher {
            id,
            subscription,
            prev_value: create.prev_value,
            decoder: convert::Decoder::new(create.decode, &self.store.snapshot()),
            progress_interval: interval,
            progress: progress.clone(),
            canceled,
            out: self.out.clone(),
            max_message_bytes: self.limits.max_message_bytes,
            slow_consumer_timeout: self.limits.slow_consumer_timeout,
            admitted,
            store: self.store.clone(),
            shared: self.encodings.clone(),
        };
        let span = tracing::info_span!("watch", id, maps = ?create.maps, start_revision = create.start_revision);
        let task = tokio::spawn(watcher.run().instrument(span));
        self.next_id = self.next_id.max(id).wrapping_add(1);
        self.watches.insert(
            id,
            WatchHandle {
                cancel,
                progress,
                task,
            },
        );
        Ok(())
    }

    /// Whether the caller may read every map of `create` (all mirrored maps
    /// when it names none): refused as a whole otherwise.
    fn authorize(&self, create: &pb::WatchCreateRequest) -> Result<(), AuthError> {
        let auth = self.auth.refreshed()?;
        if create.maps.is_empty() {
            let snapshot = self.store.snapshot();
            if !snapshot.maps().all(|(name, _)| auth.may_read(name)) {
                let error = AuthError::NotEveryMap {
                    caller: auth.caller.name(),
                };
                return Err(auth.authorizer().refused(error, &auth.credentials, "watch"));
            }
        }
        auth.check(Access::Read, create.maps.iter().map(String::as_str))
    }

    fn subscribe(
        &self,
        create: &pb::WatchCreateRequest,
    ) -> Result<mapsync_core::Subscription, RequestError> {
        if !self.store.is_ready() {
            return Err(RequestError::NotReady);
        }
        let filter = convert::subscribe_filter(create)?;
        if create.start_revision > 0 && create.epoch == 0 {
            return Err(RequestError::ResumeWithoutEpoch {
                start_revision: create.start_revision,
            });
        }
        RequestError::check_epoch(create.epoch, self.store.epoch())?;
        let current = self.store.revision();
        if create.start_revision > current.saturating_add(1) {
            return Err(RequestError::FutureRevision {
                requested: create.start_revision,
                current,
            });
        }
        Ok(self.store.subscribe(create.start_revision, filter)?)
    }

    async fn cancel(&mut self, id: u64) -> Result<(), Gone> {
        let Some(handle) = self.watches.remove(&id) else {
            return self.refuse(id, RequestError::UnknownWatch { id }).await;
        };
        let _ = handle.cancel.send(());
        match handle.task.await {
            Ok(Ended::Canceled { complete }) => {
                let canceled = convert::canceled_by_client(complete);
                self.send(id, Kind::Canceled(canceled)).await
            }
            // it had already ended on its own and said so
            Ok(Ended::Finished | Ended::Slow { .. }) | Err(_) => {
                self.refuse(id, RequestError::UnknownWatch { id }).await
            }
        }
    }

    async fn progress(&mut self, id: u64) -> Result<(), Gone> {
        if id == 0 {
            for handle in self.watches.values() {
                handle.progress.notify_one();
            }
            return Ok(());
        }
        match self.watches.get(&id) {
            Some(handle) if !handle.task.is_finished() => {
                handle.progress.notify_one();
                Ok(())
            }
            _ => self.refuse(id, RequestError::UnknownWatch { id }).await,
        }
    }
}
