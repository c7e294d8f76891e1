//! The resuming watch: one bidirectional `Watch` stream carrying one watch,
//! reopened with backoff when it breaks, from the revision after the last one
//! delivered. What cannot be resumed (history compacted, server restarted)
//! is delivered as an explicit [`WatchItem::StartOver`], never skipped.

use std::time::Duration;

use mapsync_api as pb;
use mapsync_api::MAX_RESPONSE_BYTES;
use mapsync_api::map_sync_client::MapSyncClient;
use mapsync_api::watch_response::Kind;
use tokio::sync::mpsc;
use tonic::{Code, Status, Streaming};

use crate::client::Transport;
use crate::error::ClientError;
use crate::types::{Event, StartOverReason, WatchItem, WatchOptions, events};

/// Items buffered between the watch task and the consumer.
pub const ITEM_BUFFER: usize = 16;
/// First reconnect delay; doubles per failed attempt up to [`MAX_BACKOFF`].
pub const MIN_BACKOFF: Duration = Duration::from_millis(50);
/// Longest reconnect delay.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// An open stream with its watch created.
pub(crate) struct Opened {
    _requests: mpsc::Sender<pb::WatchRequest>,
    responses: Streaming<pb::WatchResponse>,
}

/// Why opening failed.
pub(crate) enum OpenError {
    /// Transient (transport, shutdown): retry after a delay.
    Retry(ClientError),
    /// The server canceled the create: start over, or give up.
    Canceled(pb::WatchCanceled),
    /// Final.
    Fatal(ClientError),
}

/// Whether a failed stream is worth reopening.
fn transient(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::Unknown | Code::Cancelled | Code::Internal | Code::Aborted
    )
}

/// The generated client with the message limits of this client: it accepts
/// responses up to the server's largest ([`MAX_RESPONSE_BYTES`], instead of
/// tonic's 4 MiB default), so a page or batch of large entries never fails
/// to decode.
pub(crate) fn with_message_limits(client: MapSyncClient<Transport>) -> MapSyncClient<Transport> {
    client.max_decoding_message_size(MAX_RESPONSE_BYTES)
}

/// Opens a stream and creates the watch from `start_revision` of `epoch`.
pub(crate) async fn open(
    client: &mut MapSyncClient<Transport>,
    options: &WatchOptions,
    start_revision: u64,
    epoch: u64,
) -> Result<Opened, OpenError> {
    let (requests, rx) = mpsc::channel(4);
    let create = pb::WatchCreateRequest {
        maps: options.maps.clone(),
        key: options.key.clone(),
        range_end: options.range_end.clone(),
        key_prefix: options.key_prefix.clone(),
        start_revision,
        epoch,
        no_put: options.no_put,
        no_delete: options.no_delete,
        prev_value: options.prev_value,
        progress_interval_ms: options.progress_interval.map_or(0, |every| {
            u32::try_from(every.as_millis()).unwrap_or(u32::MAX)
        }),
        watch_id: 1,
        decode: options.decode,
    };
    requests
        .send(pb::WatchRequest {
            request: Some(pb::watch_request::Request::Create(create)),
        })
        .await
        .map_err(|_| OpenError::Fatal(ClientError::Protocol("request channel closed")))?;
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    let mut responses = match client.watch(stream).await {
        Ok(response) => response.into_inner(),
        Err(status) if transient(&status) => return Err(OpenError::Retry(status.into())),
        Err(status) => return Err(OpenError::Fatal(status.into())),
    };
    match responses.message().await {
        Ok(Some(pb::WatchResponse {
            kind: Some(Kind::Created(_)),
            ..
        })) => Ok(Opened {
            _requests: requests,
            responses,
        }),
        Ok(Some(pb::WatchResponse {
            kind: Some(Kind::Canceled(canceled)),
            ..
        })) => Err(OpenError::Canceled(canceled)),
        Ok(_) => Err(OpenError::Retry(ClientError::Protocol(
            "watch stream did not start with Created",
        ))),
        Err(status) if transient(&status) => Err(OpenError::Retry(status.into())),
        Err(status) => Err(OpenError::Fatal(status.into())),
    }
}

/// The state of a resuming watch.
pub(crate) struct Resumer {
    pub(crate) client: MapSyncClient<Transport>,
    pub(crate) options: WatchOptions,
    /// The epoch of what was delivered (0: none yet).
    pub(crate) epoch: u64,
    /// The next revision to ask for; 0 while the initial state is incomplete.
    pub(crate) next: u64,
    /// Initial-state events delivered since the last InitialStateDone.
    pub(crate) initial_delivered: bool,
    /// Events of revision `next` already delivered: a revision too large
    /// for one message arrives in several (`revision_continues`), and a
    /// resume from it skips what was delivered.
    pub(crate) partial: usize,
    pub(crate) items: mpsc::Sender<Result<WatchItem, ClientError>>,
}

/// What ended one stream.
enum Broke {
    /// Reopen after a delay.
    Retry,
    /// Start again from a snapshot.
    StartOver(StartOverReason),
    /// Stop (error delivered, or the consumer is gone).
    Stop,
}

impl Resumer {
    /// Runs until the consumer drops the watch or an error no resume fixes.
    pub(crate) async fn run(
        mut self,
        mut opened: Option<Opened>,
        mut start_over: Option<StartOverReason>,
    ) {
        let mut backoff = MIN_BACKOFF;
        loop {
            if let Some(reason) = start_over.take() {
                match self.start_over(reason).await {
                    Ok(stream) => opened = Some(stream),
                    Err(Broke::Stop) => return,
                    Err(Broke::StartOver(reason)) => {
                        start_over = Some(reason);
                        continue;
                    }
                    Err(Broke::Retry) => {
                        start_over = Some(reason);
                        if self.pause(backoff).await.is_err() {
                            return;
                        }
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        continue;
                    }
                }
            }
            let stream = match opened.take() {
                Some(stream) => stream,
                None => {
                    if self.next == 0 && self.initial_delivered {
                        start_over = Some(StartOverReason::InitialStateInterrupted);
                        continue;
                    }
                    match open(&mut self.client, &self.options, self.next, self.epoch).await {
                        Ok(stream) => stream,
                        Err(error) => match self.open_failed(error).await {
                            Broke::Retry => {
                                if self.pause(backoff).await.is_err() {
                                    return;
                                }
                                backoff = (backoff * 2).min(MAX_BACKOFF);
                                continue;
                            }
                            Broke::StartOver(reason) => {
                                start_over = Some(reason);
                                continue;
                            }
                            Broke::Stop => return,
                        },
                    }
                }
            };
            backoff = MIN_BACKOFF;
            match self.follow(stream).await {
                Broke::Retry => {
                    if self.pause(backoff).await.is_err() {
                        return;
                    }
                }
                Broke::StartOver(reason) => start_over = Some(reason),
                Broke::Stop => return,
            }
        }
    }

    /// Waits `delay`; `Err` if the consumer dropped the watch meanwhile.
    async fn pause(&self, delay: Duration) -> Result<(), Broke> {
        tokio::select! {
            _ = tokio::time::sleep(delay) => Ok(()),
            _ = self.items.closed() => Err(Broke::Stop),
        }
    }

    /// The next message of a stream, or `Err` once the consumer dropped the
    /// watch (then the stream is closed with it).
    async fn receive(
        &self,
        stream: &mut Opened,
    ) -> Result<Result<Option<pb::WatchResponse>, Status>, Broke> {
        tokio::select! {
            message = stream.responses.message() => Ok(message),
            _ = self.items.closed() => Err(Broke::Stop),
        }
    }

    async fn deliver(&self, item: Result<WatchItem, ClientError>) -> Result<(), Broke> {
        self.items.send(item).await.map_err(|_| Broke::Stop)
    }

    async fn open_failed(&self, error: OpenError) -> Broke {
        match error {
            OpenError::Retry(error) => {
                tracing::debug!(%error, "watch: reconnecting");
                Broke::Retry
            }
            OpenError::Canceled(canceled) => self.canceled(canceled).await,
            OpenError::Fatal(error) => {
                let _ = self.deliver(Err(error)).await;
                Broke::Stop
            }
        }
    }

    /// What a `Canceled` from the server means for this watch.
    async fn canceled(&self, canceled: pb::WatchCanceled) -> Broke {
        match pb::CancelReason::try_from(canceled.reason) {
            Ok(pb::CancelReason::Compacted) => Broke::StartOver(StartOverReason::Compacted {
                oldest: canceled.oldest_revision,
            }),
            Ok(pb::CancelReason::EpochChanged) => Broke::StartOver(StartOverReason::EpochChanged),
            Ok(pb::CancelReason::SlowConsumer) => Broke::Retry,
            _ => {
                let error = ClientError::WatchRefused {
                    code: Code::from_i32(canceled.code),
                    message: canceled.message,
                };
                let _ = self.deliver(Err(error)).await;
                Broke::Stop
            }
        }
    }

    /// Delivers what one stream carries until it breaks.
    async fn follow(&mut self, mut stream: Opened) -> Broke {
        // events of revision `next` seen on this stream
        let mut seen = 0;
        loop {
            let Ok(message) = self.receive(&mut stream).await else {
                return Broke::Stop;
            };
            let message = match message {
                Ok(Some(message)) => message,
                Ok(None) => {
                    tracing::info!("watch: the server ended the stream; reconnecting to resume");
                    return Broke::Retry;
                }
                Err(status) if transient(&status) => {
                    tracing::info!(error = %ClientError::from(status), "watch: connection lost; reconnecting to resume");
                    return Broke::Retry;
                }
                Err(status) => {
                    let _ = self.deliver(Err(status.into())).await;
                    return Broke::Stop;
                }
            };
            if self.epoch == 0 {
                self.epoch = message.epoch;
            }
            let item = match message.kind {
                Some(Kind::Events(batch)) => {
                    let continues = batch.revision_continues;
                    match events(batch) {
                        Ok(events) if self.next == 0 => {
                            self.initial_delivered = true;
                            WatchItem::Events(events)
                        }
                        Ok(events) => {
                            let kept = track(
                                &mut self.next,
                                &mut self.partial,
                                &mut seen,
                                events,
                                continues,
                            );
                            if kept.is_empty() {
                                continue;
                            }
                            WatchItem::Events(kept)
                        }
                        Err(error) => {
                            let _ = self.deliver(Err(error)).await;
                            return Broke::Stop;
                        }
                    }
                }
                Some(Kind::InitialStateDone(done)) => {
                    self.next = done.revision + 1;
                    self.partial = 0;
                    self.initial_delivered = false;
                    WatchItem::InitialStateDone {
                        epoch: message.epoch,
                        revision: done.revision,
                    }
                }
                Some(Kind::Progress(progress)) => {
                    if self.next != 0 && progress.revision >= self.next {
                        self.next = progress.revision + 1;
                        self.partial = 0;
                    }
                    WatchItem::Progress {
                        revision: progress.revision,
                    }
                }
                Some(Kind::Canceled(canceled)) => return self.canceled(canceled).await,
                Some(Kind::Created(_)) | None => continue,
            };
            if let Err(broke) = self.deliver(Ok(item)).await {
                return broke;
            }
        }
    }

    /// Reads the complete selected state from revision 0 and delivers it as
    /// one [`WatchItem::StartOver`]; returns the stream, now live.
    async fn start_over(&mut self, reason: StartOverReason) -> Result<Opened, Broke> {
        let mut stream = match open(&mut self.client, &self.options, 0, 0).await {
            Ok(stream) => stream,
            Err(error) => return Err(self.open_failed(error).await),
        };
        let mut entries: Vec<Event> = Vec::new();
        loop {
            let message = match self.receive(&mut stream).await? {
                Ok(Some(message)) => message,
                Ok(None) => return Err(Broke::Retry),
                Err(status) if transient(&status) => return Err(Broke::Retry),
                Err(status) => {
                    let _ = self.deliver(Err(status.into())).await;
                    return Err(Broke::Stop);
                }
            };
            match message.kind {
                Some(Kind::Events(batch)) => match events(batch) {
                    Ok(batch) => entries.extend(batch),
                    Err(error) => {
                        let _ = self.deliver(Err(error)).await;
                        return Err(Broke::Stop);
                    }
                },
                Some(Kind::InitialStateDone(done)) => {
                    self.epoch = message.epoch;
                    self.next = done.revision + 1;
                    self.partial = 0;
                    self.initial_delivered = false;
                    self.deliver(Ok(WatchItem::StartOver {
                        reason,
                        epoch: message.epoch,
                        revision: done.revision,
                        entries,
                    }))
                    .await?;
                    return Ok(stream);
                }
                Some(Kind::Canceled(canceled)) => return Err(self.canceled(canceled).await),
                Some(Kind::Progress(_) | Kind::Created(_)) | None => {}
            }
        }
    }
}

/// Follows the position of a live watch through one batch: `next` is the
/// revision a resume asks for, `partial` how many of its events were
/// delivered (a revision split across messages, `continues`), `seen` how
/// many of them this stream has carried. Returns the events not delivered
/// before.
fn track(
    next: &mut u64,
    partial: &mut usize,
    seen: &mut usize,
    events: Vec<Event>,
    continues: bool,
) -> Vec<Event> {
    let Some(last) = events.last().map(|e| e.revision) else {
        return events;
    };
    let mut kept = Vec::with_capacity(events.len());
    for event in events {
        if event.revision == *next {
            *seen += 1;
            if *seen <= *partial {
                continue;
            }
        }
        kept.push(event);
    }
    if !continues {
        *next = last + 1;
        *partial = 0;
        *seen = 0;
    } else if last == *next {
        *partial = (*partial).max(*seen);
    } else {
        *next = last;
        *seen = kept.iter().filter(|e| e.revision == last).count();
        *partial = *seen;
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Op;

    fn event(revision: u64, key: u8) -> Event {
        Event {
            revision,
            map: "m".into(),
            op: Op::Put,
            key: vec![key].into(),
            value: Some(vec![key].into()),
            source: "api",
            key_json: None,
            value_json: None,
            prev_value: None,
        }
    }

    #[test]
    fn a_revision_split_across_messages_resumes_without_loss_or_duplicate() {
        let (mut next, mut partial, mut seen) = (5, 0, 0);
        // revision 5 whole, then revision 6 split: 3 events, then the stream breaks
        let kept = track(
            &mut next,
            &mut partial,
            &mut seen,
            vec![event(5, 0), event(6, 1), event(6, 2)],
            true,
        );
        assert_eq!(kept.len(), 3);
        assert_eq!(
            (next, partial),
            (6, 2),
            "resume from 6, two of its events delivered"
        );
        let kept = track(&mut next, &mut partial, &mut seen, vec![event(6, 3)], true);
        assert_eq!(kept, vec![event(6, 3)]);
        assert_eq!((next, partial), (6, 3));
        // a new stream from revision 6 carries the whole revision again
        let mut seen = 0;
        let again = vec![event(6, 1), event(6, 2)];
        assert!(track(&mut next, &mut partial, &mut seen, again, true).is_empty());
        let rest = vec![event(6, 3), event(6, 4), event(7, 5)];
        let kept = track(&mut next, &mut partial, &mut seen, rest, false);
        assert_eq!(kept, vec![event(6, 4), event(7, 5)]);
        assert_eq!((next, partial), (8, 0));
    }
}
