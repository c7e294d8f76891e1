//! Slow consumers under a write flood: a stalled watcher next to 50 live
//! ones. The live ones get every change, the server's queues stay within
//! their bound whatever the stalled client does, and the stalled watcher
//! either catches up from the change log with no gap, or (once the log has
//! moved past it) is canceled COMPACTED, naming the oldest revision.

mod common;

use std::time::Duration;

use common::{Running, Session, key, start_with, watch_map};
use mapsync_core::{Change, EventSource, LogLimits};
use mapsync_grpc::pb::map_sync_client::MapSyncClient;
use mapsync_grpc::pb::{self, watch_response::Kind};
use mapsync_grpc::service::Limits;
use tonic::transport::Channel;

const LIVE: usize = 50;

/// A session on its own connection, as a separate client process would have.
async fn own_connection(running: &Running) -> Session {
    let channel = Channel::from_shared(running.endpoint.clone())
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    Session::open(&mut MapSyncClient::new(channel)).await
}

/// Writes `total` puts of `value_len` bytes in applies of 100, yielding
/// between them (enough bytes that a client which does not read fills its
/// transport windows and the server's queue); samples the server's queued
/// messages and returns the most seen.
async fn flood(running: &mut Running, total: u32, value_len: usize) -> usize {
    let mut most_queued = 0;
    for chunk in 0..total / 100 {
        let changes: Vec<_> = (0..100)
            .map(|i| {
                let n = chunk * 100 + i;
                // the first 8 bytes: when the change was written, for latency
                let mut value = vec![n as u8; value_len.max(8)];
                value[..8].copy_from_slice(&now_ns().to_le_bytes());
                Change::put("flows", key(n % 1000), value, EventSource::Trace, 2)
            })
            .collect();
        running.writer.apply(changes);
        most_queued = most_queued.max(running.stats.queued_messages());
        tokio::task::yield_now().await;
    }
    most_queued
}

/// Nanoseconds since the Unix epoch (wall clock: shared by every task).
fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_nanos() as u64
}

/// Reads a watch's events until revision `until`; checks they are exactly
/// `from..=until`, in order. Returns each event's write-to-receive latency
/// in nanoseconds (from the write time [`flood`] puts in the value).
async fn read_all(session: &mut Session, from: u64, until: u64) -> Vec<u64> {
    let mut latencies = Vec::new();
    let mut next = from;
    while next <= until {
        let message = tokio::time::timeout(Duration::from_secs(30), session.responses.message())
            .await
            .expect("in time")
            .expect("no error")
            .expect("open");
        match message.kind.expect("kind") {
            Kind::Events(batch) => {
                let received = now_ns();
                for event in batch.events {
                    assert_eq!(event.revision, next, "no gap, no duplicate");
                    next += 1;
                    if let Some(written) = event.value.get(..8) {
                        let written = u64::from_le_bytes(written.try_into().expect("8 bytes"));
                        latencies.push(received.saturating_sub(written));
                    }
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    latencies
}

async fn live_watchers(running: &mut Running) -> Vec<Session> {
    let mut live = Vec::new();
    for _ in 0..LIVE {
        let mut session = running.session().await;
        session.created(watch_map(1)).await;
        live.push(session);
    }
    live
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_watcher_holds_bounded_memory_and_catches_up_from_the_log() {
    let limits = Limits::default();
    let log = LogLimits {
        max_events: 1_000_000,
        max_bytes: usize::MAX,
    };
    let mut running = start_with(log, 0, true, limits).await;
    let mut stalled = own_connection(&running).await;
    stalled.created(watch_map(1)).await;
    let live = live_watchers(&mut running).await;
    let total = 10_000u32;
    let readers: Vec<_> = live
        .into_iter()
        .map(|mut session| {
            tokio::spawn(async move {
                let latencies = read_all(&mut session, 1, u64::from(total)).await;
                (session, latencies)
            })
        })
        .collect();
    let most_queued = flood(&mut running, total, 512).await;
    let mut live = Vec::new();
    let mut latencies = Vec::new();
    for reader in readers {
        let (session, seen) = reader.await.expect("every live watcher got every change");
        live.push(session);
        latencies.extend(seen);
    }
    // a figure, not an assertion (wall time on a shared 2-core VM): how late
    // the live watchers were while one stalled beside them
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize] as f64 / 1e6;
    eprintln!(
        "{LIVE} live watchers beside a stalled one, {total} writes: {} deliveries, write-to-receive p50 {:.1} ms, p99 {:.1} ms",
        latencies.len(),
        at(0.5),
        at(0.99)
    );
    // the stalled stream's queue is full; nothing beyond the bounds is held
    let bound = (LIVE + 1) * limits.stream_buffer;
    assert!(most_queued <= bound, "{most_queued} queued > {bound}");
    let stalled_now = running.stats.queued_messages();
    assert!(
        stalled_now <= limits.stream_buffer,
        "only the stalled stream holds messages now: {stalled_now}"
    );
    assert_eq!(running.stats.watches(), LIVE + 1);
    // the stalled watcher reads again and catches up, no gap
    read_all(&mut stalled, 1, u64::from(total)).await;
    drop(live);
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_left_behind_the_log_is_canceled_compacted_without_a_gap() {
    let limits = Limits {
        stream_buffer: 4,
        max_message_bytes: 4096,
        ..Limits::default()
    };
    let log = LogLimits {
        max_events: 1000,
        max_bytes: usize::MAX,
    };
    let mut running = start_with(log, 0, true, limits).await;
    let mut stalled = own_connection(&running).await;
    stalled.created(watch_map(1)).await;
    let total = 10_000u32;
    let most_queued = flood(&mut running, total, 1024).await;
    assert!(most_queued <= limits.stream_buffer);
    let oldest = running.store.snapshot().log().oldest();
    assert!(oldest > 1000);
    // what was delivered is contiguous from 1; then COMPACTED with the oldest
    let mut next = 1;
    loop {
        let message = tokio::time::timeout(Duration::from_secs(5), stalled.responses.message())
            .await
            .unwrap_or_else(|_| panic!("stuck after revision {}", next - 1))
            .expect("no error")
            .expect("open");
        match message.kind.expect("kind") {
            Kind::Events(batch) => {
                for event in batch.events {
                    assert_eq!(event.revision, next, "no gap before the cancel");
                    next += 1;
                }
            }
            Kind::Canceled(canceled) => {
                assert_eq!(canceled.reason, pb::CancelReason::Compacted as i32);
                // the oldest revision when the watch found itself behind
                assert!(canceled.oldest_revision > next && canceled.oldest_revision <= oldest);
                assert_eq!(
                    canceled.revision,
                    next - 1,
                    "complete up to what was delivered"
                );
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(next - 1 < u64::from(total), "it was left behind");
    assert_eq!(running.store.subscribers(), 0, "its subscription is gone");
    running.shutdown().await;
}
