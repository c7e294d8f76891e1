//! Watch control and refusals: progress (on interval and on request, per
//! watch), cancel, and every create or cancel error with its precise reason
//! and code; the stream and its other watches survive each.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{events, key, revisions, short_log, start, start_with, watch_map};
use mapsync_core::LogLimits;
use mapsync_grpc::pb::{self, watch_response::Kind};
use mapsync_grpc::service::Limits;
use tonic::Code;

fn code(canceled: &pb::WatchCanceled) -> Code {
    Code::from_i32(canceled.code)
}

fn reason(canceled: &pb::WatchCanceled) -> pb::CancelReason {
    pb::CancelReason::try_from(canceled.reason).expect("known reason")
}

#[tokio::test]
async fn progress_is_per_watch_on_request_and_on_interval() {
    let mut running = start(LogLimits::default(), 0, true).await;
    let mut session = running.session().await;
    let all = session.created(watch_map(1)).await;
    let only_9 = session
        .created(pb::WatchCreateRequest {
            key: key(9),
            ..watch_map(1)
        })
        .await;
    for i in 0..5 {
        running.put(i, b"x");
    }
    assert_eq!(
        revisions(&events(session.next_for(all).await)),
        vec![1, 2, 3, 4, 5]
    );
    // the key-9 watch saw nothing, yet it is complete up to 5
    session.request_progress(only_9).await;
    let mut reported = None;
    for _ in 0..5 {
        match session.next_for(only_9).await {
            Kind::Progress(progress) if progress.revision == 5 => {
                reported = Some(5);
                break;
            }
            Kind::Progress(_) => session.request_progress(only_9).await,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(reported, Some(5));
    // progress for every watch of the stream: one each
    session.request_progress(0).await;
    let mut ids = vec![session.next().await.watch_id, session.next().await.watch_id];
    ids.sort_unstable();
    assert_eq!(ids, vec![all, only_9]);

    // on an interval (raised to the server's 100 ms minimum)
    let ticking = session
        .created(pb::WatchCreateRequest {
            progress_interval_ms: 1,
            ..watch_map(6)
        })
        .await;
    let started = tokio::time::Instant::now();
    for _ in 0..2 {
        match session.next_for(ticking).await {
            Kind::Progress(progress) => assert_eq!(progress.revision, 5),
            other => panic!("expected progress, got {other:?}"),
        }
    }
    assert!(
        started.elapsed() >= Duration::from_millis(190),
        "interval honoured"
    );
    running.shutdown().await;
}

#[tokio::test]
async fn cancel_ends_one_watch_and_names_how_far_it_got() {
    let mut running = start(LogLimits::default(), 0, true).await;
    let mut session = running.session().await;
    let first = session.created(watch_map(1)).await;
    let second = session.created(watch_map(1)).await;
    running.put(1, b"x");
    let mut seen = 0;
    while seen < 2 {
        events(session.next().await.kind.expect("kind"));
        seen += 1;
    }
    session.cancel(first).await;
    match session.next_for(first).await {
        Kind::Canceled(canceled) => {
            assert_eq!(reason(&canceled), pb::CancelReason::ClientRequested);
            assert_eq!(canceled.revision, 1);
        }
        other => panic!("expected Canceled, got {other:?}"),
    }
    running.put(2, b"y");
    assert_eq!(revisions(&events(session.next_for(second).await)), vec![2]);
    // cancel of an id that is no longer open: NOT_FOUND, the stream goes on
    session.cancel(first).await;
    match session.next_for(first).await {
        Kind::Canceled(canceled) => {
            assert_eq!(reason(&canceled), pb::CancelReason::Rejected);
            assert_eq!(code(&canceled), Code::NotFound);
            assert_eq!(
                canceled.message,
                format!("no watch with id {first} is open on this stream")
            );
        }
        other => panic!("expected Canceled, got {other:?}"),
    }
    session.request_progress(4242).await;
    match session.next_for(4242).await {
        Kind::Canceled(canceled) => assert_eq!(code(&canceled), Code::NotFound),
        other => panic!("expected Canceled, got {other:?}"),
    }
    running.put(3, b"z");
    assert_eq!(revisions(&events(session.next_for(second).await)), vec![3]);
    assert_eq!(running.stats.watches(), 1);
    running.shutdown().await;
}

#[tokio::test]
async fn bad_creates_are_refused_with_precise_codes_and_the_stream_survives() {
    let mut running = start(short_log(2), 1, true).await;
    for i in 0..5 {
        running.put(100 + i, b"x");
    }
    let mut session = running.session().await;
    let live = session.created(watch_map(7)).await;

    let (_, canceled) = session
        .refused(pb::WatchCreateRequest {
            maps: vec!["nope".into()],
            ..Default::default()
        })
        .await;
    assert_eq!(
        (reason(&canceled), code(&canceled)),
        (pb::CancelReason::Rejected, Code::NotFound)
    );
    assert_eq!(canceled.message, "unknown map `nope`");

    for (k, end, prefix) in [
        (key(5), key(5), Bytes::new()),
        (key(5), key(4), Bytes::new()),
        (key(5), Bytes::new(), Bytes::from_static(&[0])),
    ] {
        let (_, canceled) = session
            .refused(pb::WatchCreateRequest {
                key: k,
                range_end: end,
                key_prefix: prefix,
                ..watch_map(1)
            })
            .await;
        assert_eq!(code(&canceled), Code::InvalidArgument, "{canceled:?}");
        assert!(
            canceled.message.starts_with("bad key selection"),
            "{}",
            canceled.message
        );
    }

    // history gone: COMPACTED names the oldest revision still kept
    let (_, canceled) = session.refused(watch_map(2)).await;
    assert_eq!(reason(&canceled), pb::CancelReason::Compacted);
    assert_eq!(canceled.oldest_revision, 5);
    assert_eq!(
        canceled.message,
        "revision 2 is compacted; the oldest available revision is 5"
    );

    let wrong_epoch = running.store.epoch().0 ^ 0x10;
    let (_, canceled) = session
        .refused(pb::WatchCreateRequest {
            epoch: wrong_epoch,
            ..watch_map(5)
        })
        .await;
    assert_eq!(reason(&canceled), pb::CancelReason::EpochChanged);

    let (id, canceled) = session
        .refused(pb::WatchCreateRequest {
            watch_id: live,
            ..watch_map(5)
        })
        .await;
    assert_eq!((id, code(&canceled)), (live, Code::AlreadyExists));

    session.send_empty().await;
    let message = session.next().await;
    match message.kind {
        Some(Kind::Canceled(canceled)) => assert_eq!(code(&canceled), Code::InvalidArgument),
        other => panic!("expected Canceled, got {other:?}"),
    }

    // the live watch was never disturbed
    running.put(1, b"y");
    assert_eq!(revisions(&events(session.next_for(live).await)), vec![7]);
    running.shutdown().await;
}

#[tokio::test]
async fn too_many_watches_is_resource_exhausted() {
    let limits = Limits {
        max_watches_per_stream: 3,
        ..Limits::default()
    };
    let mut running = start_with(LogLimits::default(), 0, true, limits).await;
    let mut session = running.session().await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(session.created(watch_map(1)).await);
    }
    let (_, canceled) = session.refused(watch_map(1)).await;
    assert_eq!(code(&canceled), Code::ResourceExhausted);
    assert_eq!(
        canceled.message,
        "too many watches on this stream (at most 3); cancel some or open another stream"
    );
    // cancel one and there is room again
    session.cancel(ids[0]).await;
    assert!(matches!(session.next_for(ids[0]).await, Kind::Canceled(_)));
    session.created(watch_map(1)).await;
    // the limit is per stream
    let mut other = running.session().await;
    other.created(watch_map(1)).await;
    running.shutdown().await;
}

#[tokio::test]
async fn an_oversized_request_ends_the_stream_with_resource_exhausted() {
    let limits = Limits {
        max_request_bytes: 1024,
        ..Limits::default()
    };
    let mut running = start_with(LogLimits::default(), 0, true, limits).await;
    let mut session = running.session().await;
    session.created(watch_map(1)).await;
    session
        .create(pb::WatchCreateRequest {
            key_prefix: Bytes::from(vec![1u8; 4096]),
            ..watch_map(1)
        })
        .await;
    let status = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match session.responses.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("ended without a status"),
                Err(status) => return status,
            }
        }
    })
    .await
    .expect("in time");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("1024-byte limit"),
        "{}",
        status.message()
    );
    // the server goes on
    let mut fresh = running.session().await;
    fresh.created(watch_map(1)).await;
    running.shutdown().await;
}

#[tokio::test]
async fn a_create_before_the_initial_dumps_is_unavailable() {
    let mut running = start(LogLimits::default(), 0, false).await;
    let mut session = running.session().await;
    let (_, canceled) = session.refused(watch_map(0)).await;
    assert_eq!(code(&canceled), Code::Unavailable);
    running.shutdown().await;
}
