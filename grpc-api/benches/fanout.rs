//! Watch fan-out on loopback: events/s delivered and p50/p99 latency (write
//! applied -> event decoded by the client) at 1, 100 and 1000 watchers, each
//! on its own Watch stream (100 streams per connection), flat out and paced
//! at ~100k deliveries/s. Client and server share this process and its
//! cores, so events/s are lower bounds. Not a timed test: prints a table.
//!
//! `cargo bench -p mapsync-grpc --bench fanout` (about a minute).
//!
//! Flat out, the writer applies batches of 100 changes as fast as it can but
//! keeps the slowest watcher within `MAX_LAG` (4,096) revisions, so that no watcher
//! falls out of the change log (which would measure compaction, not
//! delivery): flat-out latency is then mostly queueing.
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

const RUN: Duration = Duration::from_secs(4);
const WARMUP: Duration = Duration::from_millis(500);
const MAX_LAG: u64 = 4_096;
const STREAMS_PER_CONNECTION: usize = 100;
const VALUE_BYTES: usize = 64;
const SAMPLE_EVERY: u64 = 8;

#[derive(Clone, Copy)]
enum Mode {
    FlatOut,
    /// Total deliveries per second (events/s x watchers).
    Paced(u64),
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
    let mut rows = Vec::new();
    for watchers in [1usize, 100, 1000] {
        for (mode, name) in [
            (Mode::FlatOut, "flat out"),
            (Mode::Paced(100_000), "paced 100k/s"),
        ] {
            let row = runtime.block_on(run(watchers, mode, name));
            println!(
                "{:>8} watchers  {:<13} {:>10.0} writes/s {:>12.0} events/s delivered  p50 {:>8.2} ms  p99 {:>8.2} ms",
                row.watchers,
                row.mode,
                row.writes_per_s,
                row.delivered_per_s,
                row.p50_ms,
                row.p99_ms
            );
            rows.push(row);
        }
    }
    println!();
    println!("| watchers | mode | writes/s | events/s delivered | p50 ms | p99 ms |");
    println!("|---|---|---|---|---|---|");
    for row in rows {
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.2} | {:.2} |",
            row.watchers, row.mode, row.writes_per_s, row.delivered_per_s, row.p50_ms, row.p99_ms
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

async fn run(watchers: usize, mode: Mode, name: &'static str) -> Row {
    let (store, mut writer) = Store::new(LogLimits {
        max_events: 100_000,
        max_bytes: 256 << 20,
    });
    writer.add_map(info(), Vec::new(), 0);
    writer.set_ready();
    let listener = Listener::bind("127.0.0.1:0").await.expect("bind");
    let endpoint = format!("http://{}", listener.endpoint());
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, store.clone(), async {
        let _ = stopped.await;
    }));

    let started = Instant::now();
    let delivered = Arc::new(AtomicU64::new(0));
    let positions: Arc<Vec<AtomicU64>> =
        Arc::new((0..watchers).map(|_| AtomicU64::new(0)).collect());
    let measuring = Arc::new(AtomicU64::new(0));
    let (samples_tx, mut samples_rx) = mpsc::unbounded_channel::<Vec<u64>>();
    let mut channels = Vec::new();
    for _ in 0..watchers.div_ceil(STREAMS_PER_CONNECTION) {
        let channel = Channel::from_shared(endpoint.clone())
            .expect("uri")
            .connect()
            .await
            .expect("connect");
        channels.push(channel);
    }
    let mut readers = Vec::new();
    let mut request_senders = Vec::new();
    for index in 0..watchers {
        let mut client = MapSyncClient::new(channels[index / STREAMS_PER_CONNECTION].clone());
        let (requests, rx) = mpsc::channel(4);
        requests
            .send(pb::WatchRequest {
                request: Some(Req::Create(pb::WatchCreateRequest {
                    maps: vec!["flows".into()],
                    start_revision: 1,
                    epoch: store.epoch().0,
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
        request_senders.push(requests);
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
                if revision.saturating_sub(slowest) > MAX_LAG {
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
        let changes: Vec<_> = (0..batch)
            .map(|_| {
                n = n.wrapping_add(1);
                Change::put(
                    "flows",
                    (n % 1024).to_be_bytes().to_vec(),
                    value(started),
                    EventSource::Trace,
                    2,
                )
            })
            .collect();
        revision = writer.apply(changes);
        if measure_start.is_some() {
            written_measured += u64::from(batch);
        }
        tokio::task::yield_now().await;
    }
    let measured = measure_start.expect("measured").elapsed().as_secs_f64();
    measuring.store(0, Ordering::Relaxed);
    let delivered = delivered.load(Ordering::Relaxed) as f64;
    drop(request_senders);
    let _ = stop.send(());
    let _ = server.await;
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
    drop(store);
    Row {
        watchers,
        mode: name,
        writes_per_s: written_measured as f64 / measured,
        delivered_per_s: delivered / measured,
        p50_ms: quantile(0.50),
        p99_ms: quantile(0.99),
    }
}
