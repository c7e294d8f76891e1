//! One Watch stream's outbound side: the bounded queue its watches send
//! into (messages are charged to the byte budget until the transport takes
//! them), the response stream tonic reads, and the live counters.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::Stream;
use tokio::sync::mpsc;
use tonic::Status;

use super::budget::{Charge, StreamBudget};
use super::wire::{EncodedBatch, Outgoing};
use crate::pb;
use crate::pb::watch_response::Kind;

/// Live counts of the Watch machinery, for tests and metrics.
#[derive(Debug, Default)]
pub struct WatchStats {
    streams: AtomicUsize,
    watches: AtomicUsize,
    queued: AtomicUsize,
    bytes: AtomicUsize,
    refused_writes: std::sync::atomic::AtomicU64,
    /// Mirror publish -> watch message queued, per live event.
    send_propagation: mapsync_core::propagation::Histogram,
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

    /// Encoded bytes of the messages prepared for clients and not yet taken
    /// by the transport, over all streams: what the server-wide budget
    /// (`Limits::server_budget_bytes`) bounds.
    pub fn queued_bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Write requests refused with `PERMISSION_DENIED` since the start.
    pub fn refused_writes(&self) -> u64 {
        self.refused_writes.load(Ordering::Relaxed)
    }

    /// Mirror publish -> queued on a watch stream, one sample per live event
    /// sent (initial state is not counted; nor are events older than the
    /// store's publish clock remembers).
    pub fn send_propagation(&self) -> mapsync_core::propagation::HistogramSnapshot {
        self.send_propagation.snapshot()
    }

    /// Counts the events of a live message just queued: how long ago each
    /// one's revision was published in `store`. `revisions` gives each
    /// revision of the message once, with its number of events: one clock
    /// read and one histogram update per revision, not per event.
    pub(super) fn observe_sent(
        &self,
        store: &mapsync_core::Store,
        revisions: impl IntoIterator<Item = (u64, usize)>,
    ) {
        for (revision, events) in revisions {
            if let Some(ago) = store.since_published(revision) {
                self.send_propagation
                    .observe_ns_times(ago.as_nanos() as u64, events as u64);
            }
        }
    }

    pub(super) fn count_refused_write(&self) {
        self.refused_writes.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn bytes_counter(&self) -> &AtomicUsize {
        &self.bytes
    }

    pub(super) fn streams_counter(&self) -> &AtomicUsize {
        &self.streams
    }

    /// Counts one more watch unless `max` are open; the returned guard
    /// counts it until dropped.
    pub(super) fn admit(self: &Arc<Self>, max: usize) -> Option<Admitted> {
        self.watches
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < max).then_some(open + 1)
            })
            .ok()?;
        Some(Admitted(self.clone()))
    }
}

/// One open watch, counted against the server's limit until dropped.
#[derive(Debug)]
pub(super) struct Admitted(Arc<WatchStats>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.watches.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A queued message, with what it is charged and counted. The queue holds
/// it boxed: tokio's channel allocates its slots in blocks of 32 up front,
/// so an idle stream's queue costs 32 pointers rather than 32 messages.
struct Queued {
    message: Result<Outgoing, Status>,
    _charge: Option<Charge>,
    _counted: CountedMessage,
}

struct CountedMessage(Arc<WatchStats>);

impl Drop for CountedMessage {
    fn drop(&mut self) {
        self.0.queued.fetch_sub(1, Ordering::Relaxed);
    }
}

impl CountedMessage {
    fn new(stats: &Arc<WatchStats>) -> Self {
        stats.queued.fetch_add(1, Ordering::Relaxed);
        Self(stats.clone())
    }
}

/// The sending side of one stream's queue.
#[derive(Debug, Clone)]
pub(super) struct Outbound {
    tx: mpsc::Sender<Box<Queued>>,
    budget: Arc<StreamBudget>,
    stats: Arc<WatchStats>,
    /// The status the stream ends with once every sender is gone and the
    /// queue is drained (none: it ends OK).
    ending: Arc<Mutex<Option<Status>>>,
    epoch: u64,
}

impl std::fmt::Debug for Queued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queued").finish_non_exhaustive()
    }
}

impl Outbound {
    /// A queue of `slots` messages charged to `budget`, and its response
    /// stream.
    pub(super) fn channel(
        slots: usize,
        budget: Arc<StreamBudget>,
        stats: Arc<WatchStats>,
        epoch: u64,
    ) -> (Outbound, WatchStream) {
        let (tx, rx) = mpsc::channel(slots);
        let ending = Arc::new(Mutex::new(None));
        let stream = WatchStream {
            rx,
            ending: ending.clone(),
            ended: false,
        };
        let out = Outbound {
            tx,
            budget,
            stats,
            ending,
            epoch,
        };
        (out, stream)
    }

    /// Queues a message about watch `id` once the budget and the queue have
    /// room; `Err` once the client is gone. Cancel-safe.
    pub(super) async fn send(&self, id: u64, kind: Kind) -> Result<(), ()> {
        self.send_outgoing(self.message(id, kind)).await
    }

    /// The message about watch `id` saying `kind`.
    pub(super) fn message(&self, id: u64, kind: Kind) -> Outgoing {
        Outgoing::Message(pb::WatchResponse {
            epoch: self.epoch,
            watch_id: id,
            kind: Some(kind),
        })
    }

    /// The `EventBatch` message of watch `id` holding `fields` (whole
    /// `EventBatch.events` fields, encoded).
    pub(super) fn events(&self, id: u64, fields: Vec<Bytes>, revision_continues: bool) -> Outgoing {
        Outgoing::Events(EncodedBatch {
            epoch: self.epoch,
            watch_id: id,
            fields,
            revision_continues,
        })
    }

    /// Queues `message` once the budget and the queue have room; `Err` once
    /// the client is gone. Cancel-safe (the message is lost when canceled).
    pub(super) async fn send_outgoing(&self, message: Outgoing) -> Result<(), ()> {
        let charge = self.budget.charge(message.encoded_len()).await;
        let permit = self.tx.reserve().await.map_err(|_| ())?;
        permit.send(Box::new(Queued {
            message: Ok(message),
            _charge: Some(charge),
            _counted: CountedMessage::new(&self.stats),
        }));
        Ok(())
    }

    /// The live counters this queue reports to.
    pub(super) fn stats(&self) -> &WatchStats {
        &self.stats
    }

    /// Resolves when the client is gone.
    pub(super) async fn closed(&self) {
        self.tx.closed().await
    }

    /// Makes the stream end with `status` after what is queued (once every
    /// sender is dropped).
    pub(super) fn end_with(&self, status: Status) {
        let mut ending = self.ending.lock().expect("not poisoned");
        ending.get_or_insert(status);
    }
}

/// The response side of a `Watch` stream: the queued messages, then the
/// ending status if one was set.
#[derive(Debug)]
pub struct WatchStream {
    rx: mpsc::Receiver<Box<Queued>>,
    ending: Arc<Mutex<Option<Status>>>,
    ended: bool,
}

impl Stream for WatchStream {
    type Item = Result<Outgoing, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            // the charge and the count are released as the message is taken
            Poll::Ready(Some(queued)) => Poll::Ready(Some(queued.message)),
            Poll::Ready(None) => {
                self.ended = true;
                let ending = self.ending.lock().expect("not poisoned").take();
                Poll::Ready(ending.map(Err))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}
