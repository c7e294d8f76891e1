//! Every bad request gets its precise status: oversized requests are
//! `RESOURCE_EXHAUSTED` on every call (never `OUT_OF_RANGE`, which means
//! "compacted: resync"), an undecodable Watch request ends the stream with
//! `INVALID_ARGUMENT` (never OK), a future `start_revision` is `OUT_OF_RANGE`
//! naming the current revision, a resume without an epoch is
//! `INVALID_ARGUMENT`, the server-wide watch limit refuses like the
//! per-stream one, and a flood of refused creates ends only its stream.

mod common;

use std::time::Duration;

use bytes::{Buf, BufMut};
use common::{Session, key, start, start_with, watch_map};
use mapsync_core::LogLimits;
use mapsync_grpc::pb::map_sync_client::MapSyncClient;
use mapsync_grpc::pb::{self, watch_request::Request as Req, watch_response::Kind};
use mapsync_grpc::service::Limits;
use prost::Message;
use tonic::Code;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;

#[tokio::test]
async fn oversized_requests_are_resource_exhausted_on_every_call() {
    let mut running = start(LogLimits::default(), 3, true).await;
    let status = running
        .client
        .get(pb::GetRequest {
            map: "flows".into(),
            key: vec![7u8; 100_000].into(),
            ..Default::default()
        })
        .await
        .expect_err("too large");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("65536-byte limit"), "{status:?}");
    let status = running
        .client
        .list(pb::ListRequest {
            map: "m".repeat(70_000),
            ..Default::default()
        })
        .await
        .expect_err("too large");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    // a Watch request over the limit ends its stream, with the same code
    let mut session = running.session().await;
    session
        .create(pb::WatchCreateRequest {
            maps: vec!["m".repeat(70_000)],
            ..Default::default()
        })
        .await;
    let status = next_status(&mut session).await;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    // the server's own OUT_OF_RANGE (a future revision) is left alone
    let status = running
        .client
        .get(pb::GetRequest {
            map: "flows".into(),
            key: key(1),
            revision: 1_000,
            ..Default::default()
        })
        .await
        .expect_err("future");
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    running.shutdown().await;
}

/// The status a stream ends with, skipping messages before it (5 s at most).
async fn next_status(session: &mut Session) -> tonic::Status {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), session.responses.message())
            .await
            .expect("in time")
        {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the stream ended OK"),
            Err(status) => return status,
        }
    }
}

/// Sends raw bytes as Watch request messages, decodes the responses.
#[derive(Clone, Copy)]
struct RawRequests;

struct RawEncoder;
struct ResponseDecoder;

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        buf.put_slice(&item);
        Ok(())
    }
}

impl Decoder for ResponseDecoder {
    type Item = pb::WatchResponse;
    type Error = tonic::Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Self::Error> {
        let bytes = buf.copy_to_bytes(buf.remaining());
        pb::WatchResponse::decode(bytes)
            .map(Some)
            .map_err(|error| tonic::Status::internal(error.to_string()))
    }
}

impl Codec for RawRequests {
    type Encode = Vec<u8>;
    type Decode = pb::WatchResponse;
    type Encoder = RawEncoder;
    type Decoder = ResponseDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        RawEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        ResponseDecoder
    }
}

#[tokio::test]
async fn an_undecodable_watch_request_ends_the_stream_with_invalid_argument() {
    let running = start(LogLimits::default(), 3, true).await;
    let channel = Channel::from_shared(running.endpoint.clone())
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let good = pb::WatchRequest {
        request: Some(Req::Create(watch_map(0))),
    }
    .encode_to_vec();
    let (requests, rx) = tokio::sync::mpsc::channel(4);
    requests.send(good).await.expect("queued");
    let mut responses = grpc
        .streaming(
            tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx)),
            tonic::codegen::http::uri::PathAndQuery::from_static("/mapsync.v1.MapSync/Watch"),
            RawRequests,
        )
        .await
        .expect("open")
        .into_inner();
    // the good create works: its watch is created and delivers its state
    let first = responses.message().await.expect("ok").expect("a message");
    assert!(matches!(first.kind, Some(Kind::Created(_))), "{first:?}");
    requests
        .send(vec![0xff, 0xff, 0xff, 0xff, 0xff])
        .await
        .expect("queued");
    let status = loop {
        match tokio::time::timeout(Duration::from_secs(5), responses.message())
            .await
            .expect("in time")
        {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("an undecodable request must not end the stream OK"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().starts_with("undecodable WatchRequest"),
        "{status:?}"
    );
    running.shutdown().await;
}

#[tokio::test]
async fn start_revisions_past_the_next_one_are_out_of_range_and_resumes_need_the_epoch() {
    let mut running = start(LogLimits::default(), 3, true).await;
    running.put(1, b"x"); // revision 4
    let mut session = running.session().await;
    let (_, canceled) = session.refused(watch_map(1_000_000_000_000)).await;
    assert_eq!(canceled.reason, pb::CancelReason::Rejected as i32);
    assert_eq!(canceled.code, Code::OutOfRange as i32, "{canceled:?}");
    assert_eq!(
        canceled.message,
        "revision 1000000000000 is in the future; the current revision is 4"
    );
    // one past the current revision is fine, and its progress never names a
    // revision the server has not reached
    let id = session.created(watch_map(5)).await;
    session.request_progress(id).await;
    match session.next_for(id).await {
        Kind::Progress(progress) => assert_eq!(progress.revision, 4),
        other => panic!("expected progress, got {other:?}"),
    }
    // resuming without the epoch is refused (sent raw: the helper fills it)
    session
        .send(Req::Create(pb::WatchCreateRequest {
            start_revision: 2,
            epoch: 0,
            ..watch_map(0)
        }))
        .await;
    let message = session.next().await;
    match message.kind {
        Some(Kind::Canceled(canceled)) => {
            assert_eq!(canceled.reason, pb::CancelReason::Rejected as i32);
            assert_eq!(canceled.code, Code::InvalidArgument as i32, "{canceled:?}");
            assert!(canceled.message.contains("needs the epoch"), "{canceled:?}");
        }
        other => panic!("expected Canceled, got {other:?}"),
    }
    // start_revision 0 needs no epoch
    session.created(watch_map(0)).await;
    running.shutdown().await;
}

#[tokio::test]
async fn the_server_wide_watch_limit_refuses_like_the_stream_limit() {
    let limits = Limits {
        max_watches: 3,
        ..Limits::default()
    };
    let mut running = start_with(LogLimits::default(), 0, true, limits).await;
    let mut first = running.session().await;
    let mut second = running.session().await;
    let a = first.created(watch_map(1)).await;
    first.created(watch_map(1)).await;
    second.created(watch_map(1)).await;
    let (_, canceled) = second.refused(watch_map(1)).await;
    assert_eq!(canceled.reason, pb::CancelReason::Rejected as i32);
    assert_eq!(canceled.code, Code::ResourceExhausted as i32);
    assert!(canceled.message.contains("on this server"), "{canceled:?}");
    // a watch that ends makes room
    first.cancel(a).await;
    loop {
        if let Kind::Canceled(canceled) = first.next_for(a).await {
            assert_eq!(canceled.reason, pb::CancelReason::ClientRequested as i32);
            break;
        }
    }
    second.created(watch_map(1)).await;
    assert_eq!(running.stats.watches(), 3);
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_refused_creates_ends_its_stream_not_the_connection() {
    let mut running = start(LogLimits::default(), 0, true).await;
    // another stream on the same connection, with a good watch
    let mut bystander = running.session().await;
    let good = bystander.created(watch_map(0)).await;
    assert!(matches!(
        bystander.next_for(good).await,
        Kind::InitialStateDone(_)
    ));
    let mut flooder = running.session().await;
    // live watches from the next revision (quiet until a write)
    for _ in 0..1024 {
        flooder.created(watch_map(1)).await;
    }
    let requests = flooder.requests.clone();
    let epoch = flooder.epoch;
    let sender = tokio::spawn(async move {
        for _ in 0..100_000 {
            let create = pb::WatchRequest {
                request: Some(Req::Create(pb::WatchCreateRequest {
                    epoch,
                    ..watch_map(1)
                })),
            };
            if requests.send(create).await.is_err() {
                break;
            }
        }
    });
    let mut refused = 0;
    let status = loop {
        match tokio::time::timeout(Duration::from_secs(30), flooder.responses.message())
            .await
            .expect("in time")
        {
            Ok(Some(message)) => {
                if let Some(Kind::Canceled(canceled)) = message.kind {
                    assert_eq!(canceled.code, Code::ResourceExhausted as i32);
                    refused += 1;
                }
            }
            Ok(None) => panic!("the flooding stream ended OK"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("refused requests"), "{status:?}");
    assert!(
        refused >= 1000,
        "the first refusals are answered: {refused}"
    );
    sender.abort();
    // the connection and the other stream's watch go on
    let revision = running.put(9, b"after");
    match bystander.next_for(good).await {
        Kind::Events(batch) => assert_eq!(batch.events[0].revision, revision),
        other => panic!("expected the put, got {other:?}"),
    }
    running
        .client
        .list_maps(pb::ListMapsRequest {})
        .await
        .expect("the connection still answers");
    let mut fresh = Session::open(&mut MapSyncClient::new(
        Channel::from_shared(running.endpoint.clone())
            .expect("uri")
            .connect()
            .await
            .expect("connect"),
    ))
    .await;
    fresh.created(watch_map(0)).await;
    running.shutdown().await;
}
