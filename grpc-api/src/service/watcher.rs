//! One watch: its subscription turned into batched messages on the stream's
//! queue, progress on interval and on request, and its end.
//!
//! A watch holds at most one subscription batch (up to
//! [`mapsync_core::subscribe::MAX_BATCH`] events) while it waits for room in
//! the stream's queue; it reads nothing more from the change log until then.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use mapsync_core::{Revision, SharedEvent, Subscription, WatchBatch};
use tokio::sync::{Notify, oneshot};
use tokio::time::MissedTickBehavior;

use super::encoded::{self, Chunk, SharedEncodings};
use super::outbound::{Admitted, Outbound};
use super::wire::Outgoing;
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
    /// The mirror, for when each sent revision was published.
    pub(super) store: mapsync_core::Store,
    /// Live event encodings shared between watches.
    pub(super) shared: Arc<SharedEncodings>,
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
                    if let Err(ended) = Box::pin(self.send_progress()).await {
                        return ended;
                    }
                }
                _ = tick => {
                    if let Err(ended) = Box::pin(self.send_progress()).await {
                        return ended;
                    }
                }
                item = self.subscription.next() => {
                    let result = match item {
                        // boxed: the sending state is large and short-lived, and an
                        // idle watch should not carry its room in its task
                        Some(Ok(batch)) => Box::pin(self.send_batch(batch)).await,
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
        let message = self.out.message(self.id, kind);
        self.send_outgoing(message, complete).await
    }

    async fn send_outgoing(&mut self, message: Outgoing, complete: Revision) -> Result<(), Ended> {
        let timeout = tokio::time::sleep(self.slow_consumer_timeout);
        tokio::select! {
            biased;
            _ = &mut self.canceled => Err(Ended::Canceled { complete }),
            sent = self.out.send_outgoing(message) => sent.map_err(|()| Ended::Finished),
            _ = timeout => Err(Ended::Slow { complete }),
        }
    }

    /// Each event's encoding: live events of a watch that decodes nothing
    /// are shared with every other such watch (`encoded`); initial state
    /// (this watch's own) and decoded events are encoded here.
    fn encode(&self, events: &[SharedEvent], live: bool) -> Vec<Chunk> {
        let mut chunks = Vec::new();
        let cap = self.max_message_bytes;
        for group in events.chunk_by(|a, b| a.revision == b.revision) {
            let revision = group[0].revision;
            if live && self.decoder.fills_nothing() {
                self.shared
                    .encode_revision(group, self.prev_value, cap, &mut chunks);
                continue;
            }
            let events = group
                .iter()
                .map(|event| self.decoder.event(event, self.prev_value));
            let (fields, ranges) = encoded::frame_all(events);
            if live {
                encoded::push_ranges(revision, &fields, ranges, cap, &mut chunks);
            } else {
                // initial state: one state, any boundary will do, so one
                // chunk per event
                for range in ranges {
                    encoded::push_ranges(revision, &fields, [range], 0, &mut chunks);
                }
            }
        }
        chunks
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
        let events = match batch {
            WatchBatch::InitialStateDone { revision } => {
                let done = Kind::InitialStateDone(pb::InitialStateDone { revision });
                return self.send(done, complete).await;
            }
            WatchBatch::Events(events) => events,
        };
        let events = self.encode(&events, live);
        let messages = if live {
            live_messages(events, self.max_message_bytes)
        } else {
            initial_messages(events, self.max_message_bytes)
        };
        let mut revisions: Vec<(Revision, usize)> = Vec::new();
        for message in messages {
            revisions.clear();
            let mut fields = Vec::with_capacity(message.events.len());
            for chunk in message.events {
                if live {
                    // chunks of one revision are adjacent: counted together
                    match revisions.last_mut() {
                        Some((revision, events)) if *revision == chunk.revision => {
                            *events += chunk.events;
                        }
                        _ => revisions.push((chunk.revision, chunk.events)),
                    }
                }
                fields.push(chunk.fields);
            }
            let outgoing = self.out.events(self.id, fields, message.continues);
            self.send_outgoing(outgoing, complete).await?;
            if live {
                self.out
                    .stats()
                    .observe_sent(&self.store, revisions.iter().copied());
                complete = message.through;
            }
        }
        Ok(())
    }
}

/// The bytes a chunk adds to a message.
fn event_size(chunk: &Chunk) -> usize {
    chunk.fields.len()
}

/// One message's chunks of events, whether its last revision continues in the next
/// message, and the revision the watch is complete up to once it is sent.
#[derive(Debug)]
struct Piece {
    events: Vec<Chunk>,
    continues: bool,
    through: Revision,
}

fn piece(events: Vec<Chunk>, continues: bool, through: Revision) -> Piece {
    Piece {
        events,
        continues,
        through,
    }
}

/// Initial-state events as messages of at most `max_bytes` (a single larger
/// event travels alone): they are one state, not revisions, so any boundary
/// will do. The revision is 0 (nothing is complete before the end).
fn initial_messages(events: Vec<Chunk>, max_bytes: usize) -> Vec<Piece> {
    let mut messages = Vec::new();
    let mut current = Vec::new();
    let mut bytes = 0;
    for event in events {
        let size = event_size(&event);
        if !current.is_empty() && bytes + size > max_bytes {
            messages.push(piece(std::mem::take(&mut current), false, 0));
            bytes = 0;
        }
        bytes += size;
        current.push(event);
    }
    if !current.is_empty() {
        messages.push(piece(current, false, 0));
    }
    messages
}

/// Live events (whole revisions, in order) as messages of at most
/// `max_bytes`, each with the revision the watch is complete up to once it
/// is sent. A message boundary falls only between revisions, except inside
/// a revision that alone exceeds the cap: that one is split across
/// consecutive messages of its own, each but the last marked
/// `revision_continues` (and complete only up to the revision before).
fn live_messages(events: Vec<Chunk>, max_bytes: usize) -> Vec<Piece> {
    let mut messages = Vec::new();
    let mut current: Vec<Chunk> = Vec::new();
    let mut bytes = 0;
    let mut events = events.into_iter().peekable();
    while let Some(first) = events.next() {
        let revision = first.revision;
        let mut group = vec![first];
        while let Some(event) = events.next_if(|e| e.revision == revision) {
            group.push(event);
        }
        let size: usize = group.iter().map(event_size).sum();
        if !current.is_empty() && bytes + size > max_bytes {
            let through = current.last().map_or(0, |e| e.revision);
            messages.push(piece(std::mem::take(&mut current), false, through));
            bytes = 0;
        }
        if size <= max_bytes || group.len() == 1 {
            bytes += size;
            current.extend(group);
            continue;
        }
        // one revision larger than a message: split it, marked
        let mut chunk = Vec::new();
        let mut chunk_bytes = 0;
        for event in group {
            let size = event_size(&event);
            if !chunk.is_empty() && chunk_bytes + size > max_bytes {
                let chunk = std::mem::take(&mut chunk);
                messages.push(piece(chunk, true, revision - 1));
                chunk_bytes = 0;
            }
            chunk_bytes += size;
            chunk.push(event);
        }
        messages.push(piece(chunk, false, revision));
    }
    if !current.is_empty() {
        let through = current.last().map_or(0, |e| e.revision);
        messages.push(piece(current, false, through));
    }
    messages
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn event(revision: Revision, key: u8) -> Chunk {
        let event = pb::Event {
            revision,
            map: "m".into(),
            op: pb::Op::Put as i32,
            key: vec![key; 4].into(),
            value: vec![0; 40].into(),
            ..Default::default()
        };
        let (fields, _) = encoded::frame_all([event]);
        Chunk {
            revision,
            events: 1,
            fields,
        }
    }

    /// (revisions, continues, complete) per message.
    fn shape(messages: &[Piece]) -> Vec<(Vec<Revision>, bool, Revision)> {
        messages
            .iter()
            .map(|piece| {
                let revisions = decoded(piece).events.iter().map(|e| e.revision).collect();
                (revisions, piece.continues, piece.through)
            })
            .collect()
    }

    /// The message as the client decodes it.
    fn decoded(piece: &Piece) -> pb::EventBatch {
        let fields = piece.events.iter().map(|e| e.fields.clone()).collect();
        let outgoing = super::super::wire::Outgoing::Events(super::super::wire::EncodedBatch {
            epoch: 1,
            watch_id: 1,
            fields,
            revision_continues: piece.continues,
        });
        match outgoing.into_message().expect("decodes").kind {
            Some(Kind::Events(batch)) => batch,
            other => panic!("expected events, got {other:?}"),
        }
    }

    #[test]
    fn live_messages_never_cut_a_revision_that_fits() {
        let size = event_size(&event(1, 0));
        // room for three events per message
        let cap = 3 * size;
        let events = vec![
            event(1, 0),
            event(2, 1),
            event(2, 2),
            event(3, 3),
            event(3, 4),
            event(3, 5),
            event(4, 6),
        ];
        let messages = live_messages(events, cap);
        assert_eq!(
            shape(&messages),
            vec![
                (vec![1, 2, 2], false, 2),
                (vec![3, 3, 3], false, 3),
                (vec![4], false, 4),
            ]
        );
        for piece in &messages {
            let batch = decoded(piece);
            assert!(batch.encoded_len() <= cap + 8 * batch.events.len());
        }
    }

    #[test]
    fn a_revision_larger_than_a_message_is_split_and_marked() {
        let size = event_size(&event(1, 0));
        let cap = 2 * size;
        let mut events = vec![event(1, 0)];
        events.extend((0..5).map(|k| event(2, k)));
        events.push(event(3, 9));
        let messages = live_messages(events, cap);
        assert_eq!(
            shape(&messages),
            vec![
                (vec![1], false, 1),
                (vec![2, 2], true, 1),
                (vec![2, 2], true, 1),
                (vec![2], false, 2),
                (vec![3], false, 3),
            ]
        );
    }

    #[test]
    fn initial_state_splits_anywhere_unmarked() {
        let size = event_size(&event(1, 0));
        let events = (0..5).map(|k| event(7, k)).collect();
        let messages = initial_messages(events, 2 * size);
        assert_eq!(messages.len(), 3);
        assert!(messages.iter().all(|piece| !piece.continues));
    }
}
