//! The reference the fan-out figures are compared with: a bare tonic 0.14
//! broadcast hub serving the same `Watch` method (so the same generated
//! client reads it), with no revisions, filters, budget or change log.
//!
//! One `tokio::sync::broadcast` of `HUB_SLOTS` events; each stream takes
//! what is queued for it, up to `HUB_EVENTS_PER_MESSAGE` events per
//! message, and sends it as one `EventBatch` (a receiver that falls more
//! than the ring behind skips ahead, counted). This is the hub
//! `notes/anchors.md` measured as "bare tonic, up to 256 events/msg,
//! 4,096-slot ring".

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use futures::{Stream, StreamExt};
use mapsync_grpc::pb::{self, watch_response::Kind};
use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};
use tonic::codegen::{BoxFuture, http};
use tonic::{Request, Response, Status, Streaming};

/// Events the broadcast ring holds.
pub const HUB_SLOTS: usize = 4096;
/// Most events per message.
const HUB_EVENTS_PER_MESSAGE: usize = 256;

type Responses = Pin<Box<dyn Stream<Item = Result<pb::WatchResponse, Status>> + Send>>;

/// The hub: a clone per connection, all sharing one broadcast.
#[derive(Clone)]
pub struct Hub {
    events: broadcast::Sender<Arc<pb::Event>>,
    /// Events skipped by receivers that fell behind the ring.
    pub skipped: Arc<AtomicU64>,
}

impl Hub {
    /// A hub with no subscriber yet.
    pub fn new() -> Self {
        Self {
            events: broadcast::channel(HUB_SLOTS).0,
            skipped: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Sends one event to every stream.
    pub fn publish(&self, event: pb::Event) {
        // no receiver yet is fine
        let _ = self.events.send(Arc::new(event));
    }

    /// One stream: `Created`, then batches of what the ring holds, until
    /// `ended` resolves (the client closed its side).
    fn responses(&self, ended: impl Future<Output = ()> + Send + 'static) -> Responses {
        let created = pb::WatchResponse {
            epoch: 1,
            watch_id: 1,
            kind: Some(Kind::Created(pb::WatchCreated::default())),
        };
        let batches = futures::stream::unfold(
            (self.events.subscribe(), self.skipped.clone()),
            |(mut rx, skipped)| async move {
                let first = loop {
                    match rx.recv().await {
                        Ok(event) => break event,
                        Err(RecvError::Lagged(n)) => {
                            skipped.fetch_add(n, Ordering::Relaxed);
                        }
                        Err(RecvError::Closed) => return None,
                    }
                };
                let mut events = vec![(*first).clone()];
                while events.len() < HUB_EVENTS_PER_MESSAGE {
                    match rx.try_recv() {
                        Ok(event) => events.push((*event).clone()),
                        Err(TryRecvError::Lagged(n)) => {
                            skipped.fetch_add(n, Ordering::Relaxed);
                        }
                        Err(_) => break,
                    }
                }
                let message = pb::WatchResponse {
                    epoch: 1,
                    watch_id: 1,
                    kind: Some(Kind::Events(pb::EventBatch {
                        events,
                        revision_continues: false,
                    })),
                };
                Some((Ok(message), (rx, skipped)))
            },
        );
        futures::stream::once(async { Ok(created) })
            .chain(batches)
            .take_until(ended)
            .boxed()
    }
}

impl tonic::server::NamedService for Hub {
    const NAME: &'static str = "mapsync.v1.MapSync";
}

/// The hub's `Watch` handler (requests after the first are ignored).
struct HubWatch(Hub);

impl tonic::server::StreamingService<pb::WatchRequest> for HubWatch {
    type Response = pb::WatchResponse;
    type ResponseStream = Responses;
    type Future = BoxFuture<Response<Responses>, Status>;

    fn call(&mut self, request: Request<Streaming<pb::WatchRequest>>) -> Self::Future {
        let hub = self.0.clone();
        Box::pin(async move {
            let mut requests = request.into_inner();
            // the create request; what it asks is ignored
            let _ = requests.message().await?;
            // the stream ends when the client closes its side
            let (closed, ended) = tokio::sync::oneshot::channel::<()>();
            tokio::spawn(async move {
                while let Ok(Some(_)) = requests.message().await {}
                drop(closed);
            });
            Ok(Response::new(hub.responses(async {
                let _ = ended.await;
            })))
        })
    }
}

impl tower::Service<http::Request<tonic::body::Body>> for Hub {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let hub = self.clone();
        Box::pin(async move {
            let codec = tonic_prost::ProstCodec::<pb::WatchResponse, pb::WatchRequest>::default();
            let mut grpc = tonic::server::Grpc::new(codec);
            Ok(grpc.streaming(HubWatch(hub), request).await)
        })
    }
}

/// Serves `hub` on `listener` until `shutdown` resolves.
pub async fn serve_hub(
    hub: Hub,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) {
    tonic::transport::Server::builder()
        .add_service(hub)
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            shutdown,
        )
        .await
        .expect("the hub serves");
}
