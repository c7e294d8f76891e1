//! Watch fan-out on loopback: events/s delivered and p50/p99 latency (write
//! applied -> event decoded by the client) at 1, 100 and 1000 watchers, each
//! on its own Watch stream (100 streams per connection), flat out and paced
//! at ~100k deliveries/s; then the memory an idle watch holds. Every row is
//! measured twice in the same run: against mapsync's server and against a
//! **bare tonic broadcast hub** (`fanout/hub.rs`) serving the same method to
//! the same generated client, and printed with the ratio. Client and server
//! share this process and its cores, so events/s are lower bounds. Not a
//! timed test: prints a table.
//!
//! `cargo bench -p mapsync-grpc --bench fanout` (about two minutes; `--
//! idle` for the idle-memory figure alone).
//!
//! Flat out, the writer applies batches of 100 changes as fast as it can but
//! keeps the slowest watcher within a lag bound (mapsync: `MAX_LAG` = 4,096
//! revisions of 100 events, so that no watcher falls out of the change log;
//! the hub: 3/4 of its 4,096-event ring), so flat-out latency is mostly
//! queueing and only the events/s compare; `-- same-lag` bounds mapsync by
//! the hub's 3,072 events (30 revisions) instead, so both queue alike.
//!
//! Idle memory: 1,000 watches created and left idle, the heap's net growth
//! (a counting global allocator, `fanout/memory.rs`) divided by 1,000, for
//! the whole process (client and server) and for the server's threads alone
//! (the server then runs on a runtime of its own).
#![allow(clippy::print_stdout, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use mapsync_core::{Change, EventSource, LogLimits, MapInfo, MapKind, Store};
use mapsync_grpc::pb::map_sync_client::MapSyncClient;
use mapsync_grpc::pb::{self, watch_request::Request as Req, watch_response::Kind};
use mapsync_grpc::server::{Listener, serve};
use tokio::sync::{mpsc, oneshot};
use tonic::transport::Channel;

#[path = "fanout/hub.rs"]
mod hub;
#[path = "fanout/memory.rs"]
mod memory;

use hub::Hub;

#[global_allocator]
static ALLOCATOR: memory::Counting = memory::Counting;

const RUN: Duration = Duration::from_secs(4);
const WARMUP: Duration = Duration::from_millis(500);
const MAX_LAG: u64 = 4_096;
const STREAMS_PER_CONNECTION: usize = 100;
const VALUE_BYTES: usize = 64;
const SAMPLE_EVERY: u64 = 8;
/// Watches opened for the idle-memory figure.
const IDLE_WATCHES: usize = 1000;

#[derive(Clone, Copy)]
enum Mode {
    FlatOut,
    /// Total deliveries per second (events/s x watchers).
    Paced(u64),
}

/// Which server a run measures.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    Mapsync,
    BareHub,
}

struct Row {
    watchers: usize,
    mode: &'static str,
    writes_per_s: f64,
    delivered_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("fanout bench, load average before: {}", load.trim());
    let mut rows = Vec::new();
    // `idle` as an argument: only the idle-memory figure
    let only_idle = std::env::args().any(|arg| arg == "idle");
    // `watchers=N`: only the rows of N watchers; `flat` / `paced`: only
    // that mode
    let only_watchers: Option<usize> =
        std::env::args().find_map(|arg| arg.strip_prefix("watchers=").and_then(|n| n.parse().ok()));
    let only_mode = std::env::args().find(|arg| arg == "flat" || arg == "paced");
    for watchers in [1usize, 100, 1000]
        .into_iter()
        .filter(|n| !only_idle && only_watchers.is_none_or(|only| only == *n))
    {
        for (mode, name) in [
            (Mode::FlatOut, "flat out"),
            (Mode::Paced(100_000), "paced 100k/s"),
        ]
        .into_iter()
        .filter(|(_, name)| {
            only_mode
                .as_deref()
                .is_none_or(|only| name.starts_with(only))
        }) {
            let mapsync = runtime.block_on(run(watchers, mode, name, Target::Mapsync));
            let bare = runtime.block_on(run(watchers, mode, name, Target::BareHub));
            for (what, row) in [("mapsync", &mapsync), ("bare hub", &bare)] {
                println!(
                    "{:>8} watchers  {:<13} {what:<9} {:>10.0} writes/s {:>12.0} events/s delivered  p50 {:>8.2} ms  p99 {:>8.2} ms",
                    row.watchers,
                    row.mode,
                    row.writes_per_s,
                    row.delivered_per_s,
                    row.p50_ms,
                    row.p99_ms
                );
            }
            rows.push((mapsync, bare));
        }
    }
    let idle_mapsync = idle_memory(Target::Mapsync);
    let idle_bare = idle_memory(Target::BareHub);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average after: {}", load.trim());
    println!();
    println!(
        "| watchers | mode | mapsync events/s delivered | bare hub events/s | ratio | mapsync p50 / p99 ms | bare hub p50 / p99 ms |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (row, bare) in rows {
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.0}% | {:.2} / {:.2} | {:.2} / {:.2} |",
            row.watchers,
            row.mode,
            row.delivered_per_s,
            bare.delivered_per_s,
            100.0 * row.delivered_per_s / bare.delivered_per_s,
            row.p50_ms,
            row.p99_ms,
            bare.p50_ms,
            bare.p99_ms
        );
    }
    println!();
    println!(
        "| idle watches x{IDLE_WATCHES} | heap per watch, whole process | server threads only |"
    );
    println!("|---|---|---|");
    for (what, (whole, server)) in [("mapsync", idle_mapsync), ("bare hub", idle_bare)] {
        println!(
            "| {what} | {:.1} KiB | {:.1} KiB |",
            whole / 1024.0,
            server / 1024.0
        );
    }
}

fn info() -> MapInfo {
    MapInfo {
        name: "flows".into(),
        id: 1,
        kernel_name: "flows".into(),
        kind: MapKind::Hash,
        key_size: 4,
        value_size: VALUE_BYTES as u32,
        max_entries: 1024,
        value_bytes: VALUE_BYTES as u32,
        types: None,
        switchable: false,
    }
}

fn value(started: Instant) -> Bytes {
    let mut value = vec![0u8; VALUE_BYTES];
    let nanos = started.elapsed().as_nanos() as u64;
    value[..8].copy_from_slice(&nanos.to_le_bytes());
    value.into()
}

/// A server under test, started on the current runtime.
struct Server {
    endpoint: String,
    epoch: u64,
    /// What the writer feeds: the store's writer or the hub.
    feed: Feed,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

enum Feed {
    Mapsync {
        store: Store,
        writer: mapsync_core::Publisher,
    },
    Hub {
        hub: Hub,
        /// The last event's revision (one per event).
        revision: u64,
    },
}

impl Server {
    async fn start(target: Target) -> Self {
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async {
            let _ = stopped.await;
        };
        match target {
            Target::Mapsync => {
                let (store, mut writer) = Store::new(LogLimits {
                    max_events: 100_000,
                    max_bytes: 256 << 20,
                });
                writer.add_map(info(), Vec::new(), 0);
                writer.set_ready();
                let listener = Listener::bind("127.0.0.1:0").await.expect("bind");
                let endpoint = format!("http://{}", listener.endpoint());
                let served = serve(listener, store.clone(), shutdown);
                let task = tokio::spawn(async move {
                    let _ = served.await;
                });
                Self {
                    endpoint,
                    epoch: store.epoch().0,
                    feed: Feed::Mapsync { store, writer },
                    stop,
                    task,
                }
            }
            Target::BareHub => {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                let endpoint = format!("http://{}", listener.local_addr().expect("address"));
                let hub = Hub::new();
                let task = tokio::spawn(hub::serve_hub(hub.clone(), listener, shutdown));
                Self {
                    endpoint,
                    epoch: 1,
                    feed: Feed::Hub { hub, revision: 0 },
                    stop,
                    task,
                }
            }
        }
    }

    /// Most revisions the slowest watcher may be behind, flat out.
    fn max_lag(&self) -> u64 {
        match self.feed {
            // `same-lag`: the hub's bound in events (100 events a revision)
            Feed::Mapsync { .. } if std::env::args().any(|arg| arg == "same-lag") => {
                hub::HUB_SLOTS as u64 * 3 / 4 / 100
            }
            Feed::Mapsync { .. } => MAX_LAG,
            Feed::Hub { .. } => hub::HUB_SLOTS as u64 * 3 / 4,
        }
    }

    /// Writes `count` puts stamped with the time since `started`; returns
    /// the last revision.
    fn write(&mut self, count: u32, n: &mut u32, started: Instant) -> u64 {
        let mut next_key = || {
            *n = n.wrapping_add(1);
            (*n % 1024).to_be_bytes()
        };
        match &mut self.feed {
            Feed::Mapsync { writer, .. } => {
                let changes: Vec<_> = (0..count)
                    .map(|_| {
                        Change::put(
                            "flows",
                            next_key().to_vec(),
                            value(started),
                            EventSource::Trace,
                            2,
                        )
                    })
                    .collect();
                writer.apply(changes)
            }
            Feed::Hub { hub, revision } => {
                for _ in 0..count {
                    *revision += 1;
                    hub.publish(pb::Event {
                        revision: *revision,
                        map: "flows".into(),
                        op: pb::Op::Put as i32,
                        key: Bytes::copy_from_slice(&next_key()),
                        value: value(started),
                        ..Default::default()
                    });
                }
                *revision
            }
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
        if let Feed::Mapsync { store, .. } = self.feed {
            drop(store);
        }
    }
}

/// Opens `count` watches of the map from revision 1, each on its own
/// stream, 100 streams per connection, and waits for each `Created`.
async fn open_watches(
    endpoint: &str,
    epoch: u64,
    count: usize,
) -> (
    Vec<mpsc::Sender<pb::WatchRequest>>,
    Vec<tonic::Streaming<pb::WatchResponse>>,
) {
    let mut channels = Vec::new();
    for _ in 0..count.div_ceil(STREAMS_PER_CONNECTION) {
        let channel = Channel::from_shared(endpoint.to_owned())
            .expect("uri")
            .connect()
            .await
            .expect("connect");
        channels.push(channel);
    }
    let mut senders = Vec::new();
    let mut streams = Vec::new();
    for index in 0..count {
        let mut client = MapSyncClient::new(channels[index / STREAMS_PER_CONNECTION].clone());
        let (requests, rx) = mpsc::channel(4);
        requests
            .send(pb::WatchRequest {
                request: Some(Req::Create(pb::WatchCreateRequest {
                    maps: vec!["flows".into()],
                    start_revision: 1,
                    epoch,
                    ..Default::default()
                })),
            })
            .await
            .expect("send");
        let mut responses = client
            .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .expect("watch")
            .into_inner();
        match responses.message().await {
            Ok(Some(pb::WatchResponse {
                kind: Some(Kind::Created(_)),
                ..
            })) => {}
            other => panic!("expected Created, got {other:?}"),
        }
        senders.push(requests);
        streams.push(responses);
    }
    (senders, streams)
}

async fn run(watchers: usize, mode: Mode, name: &'static str, target: Target) -> Row {
    let mut server = Server::start(target).await;
    let started = Instant::now();
    let delivered = Arc::new(AtomicU64::new(0));
    let positions: Arc<Vec<AtomicU64>> =
        Arc::new((0..watchers).map(|_| AtomicU64::new(0)).collect());
    let measuring = Arc::new(AtomicU64::new(0));
    let (samples_tx, mut samples_rx) = mpsc::unbounded_channel::<Vec<u64>>();
    let (request_senders, streams) = open_watches(&server.endpoint, server.epoch, watchers).await;
    let mut readers = Vec::new();
    for (index, mut responses) in streams.into_iter().enumerate() {
        let delivered = delivered.clone();
        let positions = positions.clone();
        let measuring = measuring.clone();
        let samples_tx = samples_tx.clone();
        readers.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut count = 0u64;
            while let Ok(Some(message)) = responses.message().await {
                let Some(Kind::Events(batch)) = message.kind else {
                    continue;
                };
                let now = started.elapsed().as_nanos() as u64;
                let on = measuring.load(Ordering::Relaxed) == 1;
                for event in &batch.events {
                    count += 1;
                    if on && count.is_multiple_of(SAMPLE_EVERY) {
                        let written =
                            u64::from_le_bytes(event.value[..8].try_into().expect("8 bytes"));
                        samples.push(now.saturating_sub(written));
                    }
                }
                if on {
                    delivered.fetch_add(batch.events.len() as u64, Ordering::Relaxed);
                }
                if let Some(last) = batch.events.last() {
                    positions[index].store(last.revision, Ordering::Relaxed);
                }
            }
            let _ = samples_tx.send(samples);
        }));
    }
    drop(samples_tx);

    // the writer
    let run_started = Instant::now();
    let mut written_measured = 0u64;
    let mut revision = 0u64;
    let mut n = 0u32;
    let mut measure_start = None;
    let mut paced_next = Instant::now();
    let max_lag = server.max_lag();
    loop {
        let elapsed = run_started.elapsed();
        if elapsed >= WARMUP && measure_start.is_none() {
            measuring.store(1, Ordering::Relaxed);
            delivered.store(0, Ordering::Relaxed);
            measure_start = Some(Instant::now());
        }
        if elapsed >= WARMUP + RUN {
            break;
        }
        let batch = match mode {
            Mode::FlatOut => {
                let slowest = positions
                    .iter()
                    .map(|p| p.load(Ordering::Relaxed))
                    .min()
                    .unwrap_or(0);
                if revision.saturating_sub(slowest) > max_lag {
                    tokio::time::sleep(Duration::from_micros(200)).await;
                    continue;
                }
                100
            }
            Mode::Paced(deliveries) => {
                // one apply per millisecond (or per event when slower)
                let events_per_s = (deliveries / watchers as u64).max(1);
                let tick = Duration::from_secs(1)
                    .checked_div(events_per_s as u32)
                    .unwrap_or(Duration::from_millis(1))
                    .max(Duration::from_millis(1));
                let per_tick = (events_per_s as f64 * tick.as_secs_f64()).round().max(1.0) as u32;
                paced_next += tick;
                tokio::time::sleep_until(paced_next.into()).await;
                per_tick
            }
        };
        revision = server.write(batch, &mut n, started);
        if measure_start.is_some() {
            written_measured += u64::from(batch);
        }
        tokio::task::yield_now().await;
    }
    let measured = measure_start.expect("measured").elapsed().as_secs_f64();
    measuring.store(0, Ordering::Relaxed);
    let delivered = delivered.load(Ordering::Relaxed) as f64;
    drop(request_senders);
    if let Feed::Hub { hub, .. } = &server.feed {
        let skipped = hub.skipped.load(Ordering::Relaxed);
        if skipped > 0 {
            println!("  (bare hub: receivers skipped {skipped} events behind the ring)");
        }
    }
    server.stop().await;
    for reader in readers {
        let _ = reader.await;
    }
    let mut samples = Vec::new();
    while let Some(part) = samples_rx.recv().await {
        samples.extend(part);
    }
    samples.sort_unstable();
    let quantile = |q: f64| {
        if samples.is_empty() {
            return f64::NAN;
        }
        let index = ((samples.len() - 1) as f64 * q) as usize;
        samples[index] as f64 / 1e6
    };
    Row {
        watchers,
        mode: name,
        writes_per_s: written_measured as f64 / measured,
        delivered_per_s: delivered / measured,
        p50_ms: quantile(0.50),
        p99_ms: quantile(0.99),
    }
}

/// Heap bytes per idle watch (whole process, server threads): the server
/// on a runtime of its own whose threads are marked, the clients on a
/// second one.
fn idle_memory(target: Target) -> (f64, f64) {
    let server_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .on_thread_start(memory::mark_server_thread)
        .enable_all()
        .build()
        .expect("server runtime");
    let client_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("client runtime");
    let server = server_runtime.block_on(async {
        // spawned, so the server's state is made on its threads
        tokio::spawn(Server::start(target)).await.expect("start")
    });
    let settle = || std::thread::sleep(Duration::from_millis(500));
    // one watch first, so one-off state (connection pools, tables) is not counted
    let (first_senders, first_streams) =
        client_runtime.block_on(open_watches(&server.endpoint, server.epoch, 1));
    settle();
    let (whole_before, server_before) = memory::live_bytes();
    let (senders, streams) =
        client_runtime.block_on(open_watches(&server.endpoint, server.epoch, IDLE_WATCHES));
    settle();
    let (whole_after, server_after) = memory::live_bytes();
    drop((senders, streams, first_senders, first_streams));
    server_runtime.block_on(server.stop());
    let per = |after: i64, before: i64| (after - before) as f64 / IDLE_WATCHES as f64;
    (
        per(whole_after, whole_before),
        per(server_after, server_before),
    )
}
