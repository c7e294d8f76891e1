//! One watch: its subscription turned into batched messages on the stream's
//! queue, progress on interval and on request, and its end.
//!
//! A watch holds at most one subscription batch (up to
//! [`mapsync_core::subscribe::MAX_BATCH`] events) while it waits for room in
//! the stream's queue; it reads nothing more from the change log until then.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use mapsync_core::{Revision, Subscription, WatchBatch};
use prost::Message;
use tokio::sync::{Notify, oneshot};
use tokio::time::MissedTickBehavior;

use super::outbound::{Admitted, Outbound};
use crate::convert;
use crate::error::RequestError;
use crate::pb;
use crate::pb::watch_response::Kind;

/// How a watch task ended.
#[derive(Debug)]
pub(super) enum Ended {
    /// The client canceled it; it was complete up to `complete`. The stream
    /// task sends the `Canceled` reply.
    Canceled {
        /// Every selected change up to this revision was queued.
        complete: Revision,
    },
    /// It ended on its own (and said why), or the client is gone.
    Finished,
    /// It waited for room longer than the slow-consumer timeout; it was
    /// complete up to `complete`.
    Slow {
        /// Every selected change up to this revision was queued.
        complete: Revision,
    },
}

/// The state of one watch task.
pub(super) struct Watcher {
    pub(super) id: u64,
    pub(super) subscription: Subscription,
    pub(super) prev_value: bool,
    /// Fills decoded (BTF) keys and values when the watch asked for them.
    pub(super) decoder: convert::Decoder,
    pub(super) progress_interval: Option<Duration>,
    pub(super) progress: Arc<Notify>,
    pub(super) canceled: oneshot::Receiver<()>,
    pub(super) out: Outbound,
    pub(super) max_message_bytes: usize,
    /// How long one message may wait for room before the watch is canceled
    /// `SLOW_CONSUMER`.
    pub(super) slow_consumer_timeout: Duration,
    /// Counts the watch against the server's limit while it lives.
    pub(super) admitted: Admitted,
}

impl Watcher {
    /// Runs the watch until it is canceled, ends, or the client goes away.
    /// A watch that waited too long for room first gives up its
    /// subscription (and the snapshot or batch it holds), then queues its
    /// `Canceled{SLOW_CONSUMER}`.
    pub(super) async fn run(mut self) -> Ended {
        let complete = match self.watch().await {
            Ended::Slow { complete } => complete,
            ended => return ended,
        };
        let Watcher {
            id,
            out,
            mut canceled,
            admitted,
            slow_consumer_timeout,
            ..
        } = self;
        tracing::debug!(complete, "watch canceled: slow consumer");
        let message = Kind::Canceled(pb::WatchCanceled {
            reason: pb::CancelReason::SlowConsumer as i32,
            message: format!(
                "the client took nothing for {} ms while this watch had messages to send; {}",
                slow_consumer_timeout.as_millis(),
                match complete {
                    0 => "start again from revision 0".to_owned(),
                    complete => format!("resume from revision {}", complete + 1),
                }
            ),
            revision: complete,
            ..Default::default()
        });
        let ended = tokio::select! {
            biased;
            _ = &mut canceled => Ended::Canceled { complete },
            _ = out.send(id, message) => Ended::Finished,
        };
        drop(admitted);
        ended
    }

    async fn watch(&mut self) -> Ended {
        let mut interval = self.progress_interval.map(|every| {
            let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
            interval
        });
        loop {
            let tick = async {
                match interval.as_mut() {
                    Some(interval) => {
                        interval.tick().await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = &mut self.canceled => {
                    return Ended::Canceled { complete: self.subscription.position() };
                }
                _ = self.out.closed() => return Ended::Finished,
                _ = self.progress.notified() => {
                    if let Err(ended) = self.send_progress().await {
                        return ended;
                    }
                }
                _ = tick => {
                    if let Err(ended) = self.send_progress().await {
                        return ended;
                    }
                }
                item = self.subscription.next() => {
                    let result = match item {
                        Some(Ok(batch)) => self.send_batch(batch).await,
                        Some(Err(error)) => {
                            let complete = self.subscription.position();
                            let canceled = RequestError::from(error).watch_canceled(complete);
                            tracing::debug!(?canceled, "watch ended");
                            let _ = self.send(Kind::Canceled(canceled), complete).await;
                            Err(Ended::Finished)
                        }
                        None => Err(Ended::Finished),
                    };
                    if let Err(ended) = result {
                        return ended;
                    }
                }
            }
        }
    }

    async fn send_progress(&mut self) -> Result<(), Ended> {
        let revision = self.subscription.position();
        let progress = Kind::Progress(pb::WatchProgress { revision });
        self.send(progress, revision).await
    }

    /// Queues one message, giving up if the client cancels meanwhile or
    /// if there is no room for longer than the slow-consumer timeout (then
    /// the watch was complete up to `complete`).
    async fn send(&mut self, kind: Kind, complete: Revision) -> Result<(), Ended> {
        let timeout = tokio::time::sleep(self.slow_consumer_timeout);
        tokio::select! {
            biased;
            _ = &mut self.canceled => Err(Ended::Canceled { complete }),
            sent = self.out.send(self.id, kind) => sent.map_err(|()| Ended::Finished),
            _ = timeout => Err(Ended::Slow { complete }),
        }
    }

    async fn send_batch(&mut self, batch: WatchBatch) -> Result<(), Ended> {
        // what the watch was complete up to before this batch
        let before = match &batch {
            WatchBatch::Events(events) => {
                events.first().map_or(0, |e| e.revision).saturating_sub(1)
            }
            WatchBatch::InitialStateDone { .. } => 0,
        };
        let live = self.subscription.position() != 0;
        let mut complete = if live { before } else { 0 };
        for kind in self.messages(batch) {
            let last = match &kind {
                Kind::Events(batch) if live => batch.events.last().map(|e| e.revision),
                _ => None,
            };
            self.send(kind, complete).await?;
            complete = last.unwrap_or(complete);
        }
        Ok(())
    }

    /// A batch as messages of at most `max_message_bytes` (a single larger
    /// event travels alone).
    fn messages(&self, batch: WatchBatch) -> Vec<Kind> {
        let events = match batch {
            WatchBatch::InitialStateDone { revision } => {
                return vec![Kind::InitialStateDone(pb::InitialStateDone { revision })];
            }
            WatchBatch::Events(events) => events,
        };
        let mut messages = Vec::new();
        let mut current = Vec::new();
        let mut bytes = 0;
        for event in events.iter() {
            let event = self.decoder.event(event, self.prev_value);
            let size = event.encoded_len() + 8;
            if !current.is_empty() && bytes + size > self.max_message_bytes {
                messages.push(Kind::Events(pb::EventBatch {
                    events: std::mem::take(&mut current),
                }));
                bytes = 0;
            }
            bytes += size;
            current.push(event);
        }
        if !current.is_empty() {
            messages.push(Kind::Events(pb::EventBatch { events: current }));
        }
        messages
    }
}
