//! The byte budget of a stream whose client stops reading: the server holds
//! no more than the stream's budget (plus one message), a watch that finds no
//! room for longer than the slow-consumer timeout is canceled
//! `SLOW_CONSUMER` naming the revision it was complete up to (no gap before
//! it), and a resume from there gets the rest.

mod common;

use std::time::Duration;

use common::{events, key, start_with, watch_map};
use mapsync_core::{Change, EventSource, LogLimits};
use mapsync_grpc::pb::{self, watch_response::Kind};
use mapsync_grpc::service::Limits;

const WRITES: u32 = 8000;
const VALUE_BYTES: usize = 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_stream_stays_within_its_budget_then_is_canceled_slow_consumer() {
    let limits = Limits {
        stream_budget_bytes: 64 << 10,
        max_message_bytes: 16 << 10,
        slow_consumer_timeout: Duration::from_millis(500),
        ..Limits::default()
    };
    let mut running = start_with(LogLimits::default(), 0, true, limits).await;
    let mut session = running.session().await;
    let start = running.store.revision() + 1;
    let id = session.created(watch_map(start)).await;
    let mut last = 0;
    for chunk in 0..WRITES / 100 {
        let changes: Vec<_> = (0..100)
            .map(|i| {
                let n = chunk * 100 + i;
                Change::put(
                    "flows",
                    key(n % 1000),
                    vec![n as u8; VALUE_BYTES],
                    EventSource::Trace,
                    2,
                )
            })
            .collect();
        last = running.writer.apply(changes);
    }
    // the client reads nothing: the transport's windows fill, then the
    // stream's queue up to its budget
    let mut most = 0;
    // (3 s: room for a loaded machine to fill the windows, then time out)
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        most = most.max(running.stats.queued_bytes());
    }
    let bound = limits.stream_budget_bytes + limits.max_message_bytes + 1024;
    assert!(most > 0, "the stream's queue filled");
    assert!(most <= bound, "held {most} bytes, budget {bound}");
    // now read: events without a gap, then SLOW_CONSUMER naming the last one
    let mut next = start;
    let canceled = loop {
        match session.next_for(id).await {
            Kind::Events(batch) => {
                for event in events(Kind::Events(batch)) {
                    assert_eq!(event.revision, next, "no gap, no duplicate");
                    next += 1;
                }
            }
            Kind::Canceled(canceled) => break canceled,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(canceled.reason, pb::CancelReason::SlowConsumer as i32);
    assert_eq!(canceled.revision, next - 1, "complete up to what it sent");
    assert!(next - 1 < last, "it was canceled before the end");
    assert!(
        canceled
            .message
            .contains(&format!("resume from revision {next}")),
        "{canceled:?}"
    );
    assert_eq!(running.stats.watches(), 0);
    // resuming from there delivers the rest
    let resumed = session.created(watch_map(next)).await;
    while next <= last {
        for event in events(session.next_for(resumed).await) {
            assert_eq!(event.revision, next, "no gap, no duplicate");
            next += 1;
        }
    }
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_stalled_in_its_initial_state_starts_again_from_zero() {
    let limits = Limits {
        stream_budget_bytes: 16 << 10,
        max_message_bytes: 4 << 10,
        slow_consumer_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let mut running = start_with(LogLimits::default(), 0, true, limits).await;
    let changes: Vec<_> = (0..5000)
        .map(|n| {
            Change::put(
                "flows",
                key(n),
                vec![n as u8; VALUE_BYTES],
                EventSource::Trace,
                2,
            )
        })
        .collect();
    running.writer.apply(changes);
    let mut session = running.session().await;
    let id = session.created(watch_map(0)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let canceled = loop {
        match session.next_for(id).await {
            Kind::Events(_) => {}
            Kind::Canceled(canceled) => break canceled,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(canceled.reason, pb::CancelReason::SlowConsumer as i32);
    assert_eq!(canceled.revision, 0, "nothing complete before the state is");
    assert!(
        canceled.message.contains("start again from revision 0"),
        "{canceled:?}"
    );
    running.shutdown().await;
}
