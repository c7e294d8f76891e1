//! The bidirectional `Watch` stream: one task per stream reads the client's
//! requests (create, cancel, progress) and starts one task per watch
//! (`watcher`). Every watch sends into the stream's one bounded queue, so a
//! client that stops reading holds at most [`super::Limits::stream_buffer`]
//! messages plus one batch per watch; each watch's subscription is a cursor
//! into the shared change log, so a lagging watch costs no more memory and
//! never slows ingest or other streams. It catches up when the client reads
//! again, or is canceled `COMPACTED` once the log has moved past it.
//!
//! Errors about one watch (bad create, unknown id, too many watches, epoch
//! changed, compacted) are `Canceled` responses for that watch id; the stream
//! and its other watches go on. Only a request too large to decode ends the
//! stream (`RESOURCE_EXHAUSTED`), as does shutdown (`UNAVAILABLE`).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use futures::Stream;
use mapsync_core::{KeyRange, Store, SubscribeFilter};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;
use tonic::{Code, Status, Streaming};
use tracing::Instrument;

use super::watcher::{Ended, Watcher};
use super::{Limits, MapSyncService};
use crate::error::RequestError;
use crate::pb;
use crate::pb::watch_request::Request as Req;
use crate::pb::watch_response::Kind;

/// Live counts of the Watch machinery, for tests and metrics.
#[derive(Debug, Default)]
pub struct WatchStats {
    streams: AtomicUsize,
    watches: AtomicUsize,
    queued: AtomicUsize,
}

impl WatchStats {
    /// Open `Watch` streams.
    pub fn streams(&self) -> usize {
        self.streams.load(Ordering::Relaxed)
    }

    /// Open watches, over all streams.
    pub fn watches(&self) -> usize {
        self.watches.load(Ordering::Relaxed)
    }

    /// Messages queued in stream queues and not yet taken by the transport,
    /// over all streams (at most streams x `stream_buffer`).
    pub fn queued_messages(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    pub(super) fn watches_counter(&self) -> &AtomicUsize {
        &self.watches
    }
}

/// The sending side of one stream's queue; counts what it queues.
#[derive(Debug, Clone)]
pub(super) struct Outbound {
    tx: mpsc::Sender<Result<pb::WatchResponse, Status>>,
    stats: Arc<WatchStats>,
    epoch: u64,
}

impl Outbound {
    /// Queues a message about watch `id`; `Err` once the client is gone.
    pub(super) async fn send(&self, id: u64, kind: Kind) -> Result<(), ()> {
        let message = pb::WatchResponse {
            epoch: self.epoch,
            watch_id: id,
            kind: Some(kind),
        };
        let permit = self.tx.reserve().await.map_err(|_| ())?;
        // counted before it can be taken, so the count never goes below zero
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        permit.send(Ok(message));
        Ok(())
    }

    /// Resolves when the client is gone.
    pub(super) async fn closed(&self) {
        self.tx.closed().await
    }

    fn end_with(&self, status: Status) {
        if let Ok(permit) = self.tx.try_reserve() {
            self.stats.queued.fetch_add(1, Ordering::Relaxed);
            permit.send(Err(status));
        }
    }
}

/// The response side of a `Watch` stream.
#[derive(Debug)]
pub struct WatchStream {
    rx: mpsc::Receiver<Result<pb::WatchResponse, Status>>,
    stats: Arc<WatchStats>,
}

impl Stream for WatchStream {
    type Item = Result<pb::WatchResponse, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let item = self.rx.poll_recv(cx);
        if let Poll::Ready(Some(_)) = &item {
            self.stats.queued.fetch_sub(1, Ordering::Relaxed);
        }
        item
    }
}

impl Drop for WatchStream {
    fn drop(&mut self) {
        // what is still queued is dropped with the receiver
        self.rx.close();
        while self.rx.try_recv().is_ok() {
            self.stats.queued.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Opens a stream: spawns its request reader and returns the response side.
pub(super) fn open(service: &MapSyncService, inbound: Streaming<pb::WatchRequest>) -> WatchStream {
    let (tx, rx) = mpsc::channel(service.limits.stream_buffer);
    let out = Outbound {
        tx,
        stats: service.stats.clone(),
        epoch: service.store.epoch().0,
    };
    let stream = StreamState {
        store: service.store.clone(),
        limits: service.limits,
        stats: service.stats.clone(),
        out,
        watches: HashMap::new(),
        next_id: 1,
    };
    let stopping = service.stopping.clone();
    service.stats.streams.fetch_add(1, Ordering::Relaxed);
    tokio::spawn(
        stream
            .run(inbound, stopping)
            .instrument(tracing::info_span!("watch_stream")),
    );
    WatchStream {
        rx,
        stats: service.stats.clone(),
    }
}

struct WatchHandle {
    cancel: oneshot::Sender<()>,
    progress: Arc<Notify>,
    task: JoinHandle<Ended>,
}

struct StreamState {
    store: Store,
    limits: Limits,
    stats: Arc<WatchStats>,
    out: Outbound,
    watches: HashMap<u64, WatchHandle>,
    next_id: u64,
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
                    self.out.end_with(Status::unavailable(
                        "mapsync is shutting down: reconnect and resume from the last revision you saw",
                    ));
                    break;
                }
                _ = self.out.closed() => break,
                request = inbound.message(), if !half_closed => match request {
                    Ok(Some(request)) => {
                        if self.handle(request).await.is_err() {
                            break;
                        }
                    }
                    // the client sends no more requests; its watches go on
                    Ok(None) => half_closed = true,
                    Err(status) => {
                        if status.code() == Code::OutOfRange {
                            self.abort_all();
                            self.out.end_with(Status::from(RequestError::RequestTooLarge {
                                max: self.limits.max_request_bytes,
                                detail: status.message().to_owned(),
                            }));
                        }
                        break;
                    }
                },
            }
        }
        self.abort_all();
        self.stats.streams.fetch_sub(1, Ordering::Relaxed);
        tracing::debug!("watch stream closed");
    }

    fn abort_all(&mut self) {
        for (_, handle) in self.watches.drain() {
            handle.task.abort();
        }
    }

    /// Handles one request; `Err` when the client is gone.
    async fn handle(&mut self, request: pb::WatchRequest) -> Result<(), ()> {
        match request.request {
            Some(Req::Create(create)) => self.create(create).await,
            Some(Req::Cancel(cancel)) => self.cancel(cancel.watch_id).await,
            Some(Req::Progress(progress)) => self.progress(progress.watch_id).await,
            None => self.refuse(0, RequestError::EmptyWatchRequest).await,
        }
    }

    async fn refuse(&self, id: u64, error: RequestError) -> Result<(), ()> {
        tracing::debug!(id, %error, "watch refused");
        let canceled = error.watch_canceled(0);
        self.out.send(id, Kind::Canceled(canceled)).await
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

    async fn create(&mut self, create: pb::WatchCreateRequest) -> Result<(), ()> {
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
        if self.watches.len() >= self.limits.max_watches_per_stream {
            self.prune();
            if self.watches.len() >= self.limits.max_watches_per_stream {
                let error = RequestError::TooManyWatches {
                    max: self.limits.max_watches_per_stream,
                };
                return self.refuse(id, error).await;
            }
        }
        let subscription = match self.subscribe(&create) {
            Ok(subscription) => subscription,
            Err(error) => return self.refuse(id, error).await,
        };
        let revision = self.store.revision();
        self.out
            .send(id, Kind::Created(pb::WatchCreated { revision }))
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
            progress_interval: interval,
            progress: progress.clone(),
            canceled,
            out: self.out.clone(),
            max_message_bytes: self.limits.max_message_bytes,
            stats: self.stats.clone(),
        };
        let span = tracing::debug_span!("watch", id, maps = ?create.maps, start_revision = create.start_revision);
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

    fn subscribe(
        &self,
        create: &pb::WatchCreateRequest,
    ) -> Result<mapsync_core::Subscription, RequestError> {
        if !self.store.is_ready() {
            return Err(RequestError::NotReady);
        }
        let key_range = key_selection(create)?;
        RequestError::check_epoch(create.epoch, self.store.epoch())?;
        let filter = SubscribeFilter {
            maps: create.maps.clone(),
            key_prefix: (!create.key_prefix.is_empty()).then(|| create.key_prefix.clone()),
            key_range,
            no_put: create.no_put,
            no_delete: create.no_delete,
        };
        Ok(self.store.subscribe(create.start_revision, filter)?)
    }

    async fn cancel(&mut self, id: u64) -> Result<(), ()> {
        let Some(handle) = self.watches.remove(&id) else {
            return self.refuse(id, RequestError::UnknownWatch { id }).await;
        };
        let _ = handle.cancel.send(());
        match handle.task.await {
            Ok(Ended::Canceled { complete }) => {
                let canceled = pb::WatchCanceled {
                    reason: pb::CancelReason::ClientRequested as i32,
                    message: "canceled by the client".into(),
                    revision: complete,
                    ..Default::default()
                };
                self.out.send(id, Kind::Canceled(canceled)).await
            }
            // it had already ended on its own and said so
            Ok(Ended::Finished) | Err(_) => {
                self.refuse(id, RequestError::UnknownWatch { id }).await
            }
        }
    }

    async fn progress(&mut self, id: u64) -> Result<(), ()> {
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

/// The key range of a create request, checked.
fn key_selection(create: &pb::WatchCreateRequest) -> Result<Option<KeyRange>, RequestError> {
    let has_key = !create.key.is_empty();
    let has_end = !create.range_end.is_empty();
    if !create.key_prefix.is_empty() && (has_key || has_end) {
        return Err(RequestError::BadKeySelection {
            reason: "key_prefix excludes key and range_end",
        });
    }
    if has_end && create.range_end <= create.key {
        return Err(RequestError::BadKeySelection {
            reason: "range_end must be greater than key",
        });
    }
    Ok(match (has_key, has_end) {
        (false, false) => None,
        (true, false) => Some(KeyRange {
            start: create.key.clone(),
            end: None,
        }),
        (_, true) => Some(KeyRange {
            start: create.key.clone(),
            end: Some(create.range_end.clone()),
        }),
    })
}
