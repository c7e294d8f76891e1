//! The status of a request too large to decode, on every call.
//!
//! tonic refuses a request over the decoding limit with `OUT_OF_RANGE`
//! before the handler runs, but `OUT_OF_RANGE` is what this API answers for
//! a compacted or future revision, which clients read as "start over from a
//! snapshot". This wrapper turns that one refusal into `RESOURCE_EXHAUSTED`,
//! naming the limit. (Watch streams, whose requests arrive after the call has started,
//! do the same in `watch`.)
//!
//! The router also serves the `Watch` route itself, beside the generated
//! server, through [`super::wire::WatchCodec`]: the same method, limits and
//! statuses, but its events travel as shared pre-encoded bytes and its
//! stream's buffers start small.

use std::convert::Infallible;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::codegen::{BoxFuture, Service, StdError, http};
use tonic::server::{Grpc, NamedService, StreamingService};
use tonic::{Code, Request, Response, Status, Streaming};

use super::wire::{Outgoing, WatchCodec};
use super::{MAX_RESPONSE_BYTES, MapSyncService, WatchStream};
use crate::error::RequestError;
use crate::pb;
use crate::pb::map_sync_server::MapSyncServer;

/// The `Watch` method's path.
const WATCH_PATH: &str = "/mapsync.v1.MapSync/Watch";

/// How tonic words its decode-limit refusal.
const TONIC_TOO_LARGE: &str = "Error, decoded message length too large";

/// The `mapsync.v1.MapSync` server with the request-size status fixed; add
/// it to a tonic router like the generated server.
#[derive(Debug, Clone)]
pub struct MapSyncRouter {
    inner: MapSyncServer<MapSyncService>,
    /// Serves `Watch`.
    service: MapSyncService,
    max_request_bytes: usize,
}

impl MapSyncRouter {
    pub(super) fn new(
        inner: MapSyncServer<MapSyncService>,
        service: MapSyncService,
        max_request_bytes: usize,
    ) -> Self {
        Self {
            inner,
            service,
            max_request_bytes,
        }
    }
}

/// The `Watch` method as tonic calls it.
struct WatchRoute(MapSyncService);

impl StreamingService<pb::WatchRequest> for WatchRoute {
    type Response = Outgoing;
    type ResponseStream = WatchStream;
    type Future = BoxFuture<Response<WatchStream>, Status>;

    fn call(&mut self, request: Request<Streaming<pb::WatchRequest>>) -> Self::Future {
        let opened = self.0.open_watch(request).map(Response::new);
        Box::pin(std::future::ready(opened))
    }
}

impl NamedService for MapSyncRouter {
    const NAME: &'static str = crate::pb::SERVICE_NAME;
}

impl<B> Service<http::Request<B>> for MapSyncRouter
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
    MapSyncServer<MapSyncService>: Service<
            http::Request<B>,
            Response = http::Response<Body>,
            Error = Infallible,
            Future = BoxFuture<http::Response<Body>, Infallible>,
        >,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let max = self.max_request_bytes;
        let response: Self::Future = if request.uri().path() == WATCH_PATH {
            // what the generated server does for this route, with our codec
            let route = WatchRoute(self.service.clone());
            Box::pin(async move {
                let mut grpc = Grpc::new(WatchCodec)
                    .apply_max_message_size_config(Some(max), Some(MAX_RESPONSE_BYTES));
                Ok(grpc.streaming(route, request).await)
            })
        } else {
            self.inner.call(request)
        };
        Box::pin(async move {
            let response = response.await?;
            Ok(match too_large(&response) {
                Some(status) => Status::from(RequestError::RequestTooLarge {
                    max,
                    detail: status.message().to_owned(),
                })
                .into_http(),
                None => response,
            })
        })
    }
}

/// tonic's decode-limit refusal, if `response` is one (a trailers-only
/// response whose status is `OUT_OF_RANGE` with tonic's wording; this
/// service's own `OUT_OF_RANGE` statuses name revisions).
fn too_large(response: &http::Response<Body>) -> Option<Status> {
    let status = Status::from_header_map(response.headers())?;
    (status.code() == Code::OutOfRange && status.message().starts_with(TONIC_TOO_LARGE))
        .then_some(status)
}
