//! One row: start a `MapSync` on the bench's maps, run the closed-loop write
//! load of its strategy (write a batch of distinct keys, wait until every
//! write is visible in the mirror with the strategy's source, repeat), and
//! measure throughput, latency, CPU and memory; then probe what it can see.

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use mapsync_core::control::{Apply, ApplyMode};
use mapsync_kernel::MapSync;
use mapsync_kernel::sys::{self, monotonic_ns};
use tokio::sync::mpsc;

use super::env::{BenchEnv, SWITCH_MAP, demo_source};
use super::measure::{self, Seen};
use super::probes::{self, Capabilities};
use super::strategy::{Plan, Strategy};

/// Name of the ingest thread, whose CPU is reported on its own.
const INGEST_THREAD: &str = "mapsync-ingest";

/// What one row measured.
#[derive(Debug, Clone)]
pub struct RowResult {
    /// The strategy.
    pub strategy: Strategy,
    /// Writes made by the load.
    pub writes: u64,
    /// Writes never seen in the mirror with the strategy's source in time.
    pub lost: u64,
    /// Wall time of the load, seconds.
    pub elapsed_s: f64,
    /// Write -> visible latencies in microseconds, sorted.
    pub latencies_us: Vec<f64>,
    /// Process CPU (user + system) during the load, seconds.
    pub cpu_process_s: f64,
    /// The ingest thread's CPU during the load, seconds.
    pub cpu_ingest_s: f64,
    /// RSS after the load minus RSS before the row's `MapSync` started, KiB.
    pub rss_delta_kib: i64,
    /// What it could see.
    pub capabilities: Capabilities,
}

impl RowResult {
    /// Writes per second, visible without loss (0 if any was lost).
    pub fn throughput(&self) -> f64 {
        if self.lost > 0 || self.elapsed_s <= 0.0 {
            return 0.0;
        }
        self.writes as f64 / self.elapsed_s
    }

    /// The `q` quantile of the latencies, microseconds.
    pub fn latency_us(&self, q: f64) -> f64 {
        measure::quantile(&self.latencies_us, q)
    }

    /// CPU seconds per million writes, `(process, ingest thread)`.
    pub fn cpu_per_million(&self) -> (f64, f64) {
        let per = |cpu: f64| cpu / self.writes.max(1) as f64 * 1e6;
        (per(self.cpu_process_s), per(self.cpu_ingest_s))
    }
}

/// Starts and stops one `MapSync` on the bench's maps before the rows, so
/// that the first row's RSS delta is not the process's one-time growth
/// (the runtime's threads, the kernel BTF parsed by the loader, allocator
/// arenas).
pub async fn warm_up(env: &BenchEnv) -> anyhow::Result<()> {
    let sync = MapSync::start(env.config(None))
        .await
        .context("cannot start mirroring the bench's maps")?;
    sync.shutdown()
        .await
        .context("the warm-up mirror did not stop cleanly")?;
    Ok(())
}

/// Runs the row of `strategy` (`index` tells the probes' keys apart).
pub async fn run_row(
    env: &mut BenchEnv,
    strategy: Strategy,
    index: u8,
    plan: Plan,
) -> anyhow::Result<RowResult> {
    // before the row's capture is attached: clearing is no change it sees
    env.clear_lru()?;
    let rss_before = measure::rss_kib();
    let sync = MapSync::start(env.config(strategy.poll()))
        .await
        .with_context(|| format!("cannot start mirroring for the {} row", strategy.name()))?;
    let (mut seen, observer) = measure::observe(sync.store().clone());
    let result = load_and_probe(env, strategy, index, plan, &sync, &mut seen, rss_before).await;
    observer.abort();
    sync.shutdown()
        .await
        .context("the row's mirror did not stop cleanly")?;
    result
}

async fn load_and_probe(
    env: &mut BenchEnv,
    strategy: Strategy,
    index: u8,
    plan: Plan,
    sync: &MapSync,
    seen: &mut mpsc::Receiver<Seen>,
    rss_before: u64,
) -> anyhow::Result<RowResult> {
    let rounds = plan.rounds(strategy);
    let mut latencies_us = Vec::with_capacity((rounds * plan.batch) as usize);
    let mut lost = 0u64;
    let cpu_before = measure::process_cpu_s();
    let ingest_before = measure::thread_cpu_s(INGEST_THREAD).unwrap_or(0.0);
    let started = Instant::now();
    for round in 1..=rounds {
        let mut pending = write_batch(env, strategy, sync, round, plan.batch).await?;
        lost += wait_visible(strategy, seen, &mut pending, &mut latencies_us).await;
    }
    let elapsed_s = started.elapsed().as_secs_f64();
    let cpu_process_s = measure::process_cpu_s() - cpu_before;
    let cpu_ingest_s = measure::thread_cpu_s(INGEST_THREAD).unwrap_or(0.0) - ingest_before;
    let rss_delta_kib = measure::rss_kib() as i64 - rss_before as i64;
    latencies_us.sort_by(f64::total_cmp);
    let capabilities = probes::probe(env, strategy, index, sync, seen).await?;
    Ok(RowResult {
        strategy,
        writes: u64::from(rounds * plan.batch),
        lost,
        elapsed_s,
        latencies_us,
        cpu_process_s,
        cpu_ingest_s,
        rss_delta_kib,
        capabilities,
    })
}

/// A load key's bytes in the map `strategy` writes.
fn load_key(strategy: Strategy, index: u32) -> Bytes {
    match strategy {
        Strategy::Emit | Strategy::Poll(_) => Bytes::copy_from_slice(&demo_source(index).octets()),
        Strategy::Trace | Strategy::Switch => Bytes::copy_from_slice(&index.to_le_bytes()),
    }
}

/// Writes one round: every load key once. Returns each key's write time
/// (CLOCK_MONOTONIC just before its write started).
async fn write_batch(
    env: &mut BenchEnv,
    strategy: Strategy,
    sync: &MapSync,
    round: u32,
    batch: u32,
) -> anyhow::Result<HashMap<Bytes, u64>> {
    let mut pending = HashMap::with_capacity(batch as usize);
    let value = u64::from(round).to_le_bytes();
    match strategy {
        Strategy::Switch => {
            let entries = (0..batch)
                .map(|i| (load_key(strategy, i), Some(Bytes::copy_from_slice(&value))))
                .collect();
            let at = monotonic_ns();
            sync.commands()
                .apply(Apply {
                    map: SWITCH_MAP.into(),
                    mode: ApplyMode::Merge,
                    entries,
                    expect_version: None,
                })
                .await
                .context("the switch row's apply failed")?;
            pending.extend((0..batch).map(|i| (load_key(strategy, i), at)));
        }
        _ => {
            for i in 0..batch {
                let key = load_key(strategy, i);
                let at = monotonic_ns();
                match strategy {
                    Strategy::Emit => env.demo.count(demo_source(i), 64, 1)?,
                    Strategy::Poll(_) => env.demo.bump(demo_source(i), 1)?,
                    _ => sys::update(env.trace_fd.as_fd(), &key, &value, 0)
                        .context("the trace row's map update failed")?,
                }
                pending.insert(key, at);
            }
        }
    }
    Ok(pending)
}

/// Waits until every pending write is visible with the strategy's source
/// (recording its latency), or gives up; returns how many never came.
async fn wait_visible(
    strategy: Strategy,
    seen: &mut mpsc::Receiver<Seen>,
    pending: &mut HashMap<Bytes, u64>,
    latencies_us: &mut Vec<f64>,
) -> u64 {
    let patience = strategy
        .poll_period()
        .map_or(Duration::from_secs(5), |period| {
            period * 5 + Duration::from_secs(2)
        });
    let deadline = tokio::time::Instant::now() + patience;
    while !pending.is_empty() {
        let Ok(Some(event)) = tokio::time::timeout_at(deadline, seen.recv()).await else {
            break;
        };
        if &*event.map != strategy.map() || event.source != strategy.source() {
            continue;
        }
        if let Some(at) = pending.remove(&event.key) {
            latencies_us.push(event.seen_ns.saturating_sub(at) as f64 / 1e3);
        }
    }
    let lost = pending.len() as u64;
    pending.clear();
    lost
}
