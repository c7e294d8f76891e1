//! Writes through the kernel task on a real kernel: request -> reply
//! latency of Put and Txn. The reply is sent once the write is published,
//! so this is also request -> visible-in-mirror (read-your-writes).
//!
//! Prints p50/p90/p99/max for, on an 8-byte-key, 16-byte-value hash of
//! 100,000 entries:
//! - one Put (`BPF_ANY`), back to back, keys round robin;
//! - one Put with an expected mod revision (compare-and-swap);
//! - a Txn of one compare and 8, then 64 puts (one revision each);
//! - for scale, one raw `BPF_MAP_UPDATE_ELEM` from this thread (no mirror).
//!
//! Criterion does not fit latency distributions, so this is a plain
//! `harness = false` program. Run (root, bpffs mounted):
//! `cargo bench -p mapsync-kernel --bench write` (a few seconds). Without
//! `--bench` (e.g. `cargo test --benches`) it runs a smoke pass with small
//! counts.
#![allow(
    clippy::print_stdout,
    reason = "a benchmark's job is to print its figures"
)]

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use mapsync_core::control::{
    CommandHandle, Compare, CompareResult, CompareTarget, Put, Txn, WriteOp,
};
use mapsync_kernel::{MapSpec, MapSync, SyncConfig, open, sys};
use mapsync_test_support::{self as support, PinDir};

/// Keys written round robin.
const KEYS: u64 = 1024;

fn percentiles(mut samples: Vec<Duration>) -> String {
    samples.sort_unstable();
    let at = |p: f64| {
        let index = ((samples.len() as f64 * p).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[index].as_secs_f64() * 1e6
    };
    format!(
        "p50 {:.1} us, p90 {:.1} us, p99 {:.1} us, max {:.0} us (n={})",
        at(0.50),
        at(0.90),
        at(0.99),
        at(1.0),
        samples.len()
    )
}

fn key(n: u64) -> Vec<u8> {
    (n % KEYS).to_ne_bytes().to_vec()
}

fn value(n: u64) -> Vec<u8> {
    [n.to_ne_bytes(), (!n).to_ne_bytes()].concat()
}

/// `count` puts; `revisions` holds each key's mod revision (kept up to
/// date, checked when `cas`).
async fn timed_puts(
    cmd: &CommandHandle,
    count: u64,
    revisions: &mut [u64],
    cas: bool,
) -> Vec<Duration> {
    let mut samples = Vec::with_capacity(count as usize);
    for n in 0..count {
        let mut put = Put::new("flows", key(n), value(n));
        if cas {
            put = put.expect_mod_revision(revisions[(n % KEYS) as usize]);
        }
        let started = Instant::now();
        let outcome = cmd.put(put).await.expect("put");
        samples.push(started.elapsed());
        revisions[(n % KEYS) as usize] = outcome.revision;
    }
    samples
}

async fn timed_txns(cmd: &CommandHandle, count: u64, ops: u64) -> Vec<Duration> {
    let mut samples = Vec::with_capacity(count as usize);
    for n in 0..count {
        let txn = Txn {
            compares: vec![Compare {
                map: "flows".into(),
                key: key(KEYS - 1).into(),
                result: CompareResult::Less,
                target: CompareTarget::ModRevision(u64::MAX),
            }],
            success: (0..ops)
                .map(|i| WriteOp::Put(Put::new("flows", key(n * ops + i), value(n))))
                .collect(),
            failure: vec![],
        };
        let started = Instant::now();
        let outcome = cmd.txn(txn).await.expect("txn");
        samples.push(started.elapsed());
        assert!(outcome.succeeded);
    }
    samples
}

fn main() {
    if !support::require_kernel() {
        return;
    }
    let full = std::env::args().any(|arg| arg == "--bench");
    let count: u64 = if full { 20_000 } else { 300 };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "write bench ({}), load average before: {}",
        if full { "full" } else { "smoke" },
        load.trim()
    );
    let pins = PinDir::new("bench-write");
    let pin = pins.join("flows");
    support::create_map(&pin, "hash", 8, 16, 100_000, "flows");
    let sync = runtime
        .block_on(MapSync::start(SyncConfig {
            maps: vec![MapSpec::pin(None, &pin)],
            pin_dir: pins.join("capture"),
            reconcile_interval: None,
            ..SyncConfig::default()
        }))
        .expect("start");
    let cmd = sync.commands();
    let mut rows: Vec<(String, String)> = Vec::new();
    runtime.block_on(async {
        let mut revisions = vec![0u64; KEYS as usize];
        // warm-up: every key present
        timed_puts(&cmd, KEYS, &mut revisions, true).await;
        rows.push((
            "Put, request -> reply (visible in the mirror)".into(),
            percentiles(timed_puts(&cmd, count, &mut revisions, false).await),
        ));
        rows.push((
            "Put with expected mod revision".into(),
            percentiles(timed_puts(&cmd, count, &mut revisions, true).await),
        ));
        for ops in [8, 64] {
            rows.push((
                format!("Txn: 1 compare, {ops} puts"),
                percentiles(timed_txns(&cmd, count / 8, ops).await),
            ));
        }
    });
    let fd = open::open(&MapSpec::pin(None, &pin)).expect("open").fd;
    let mut raw = Vec::with_capacity(count as usize);
    for n in 0..count {
        let started = Instant::now();
        sys::update(fd.as_fd(), &key(n), &value(n), 0).expect("update");
        raw.push(started.elapsed());
    }
    rows.push((
        "raw BPF_MAP_UPDATE_ELEM syscall (traced, no reply)".into(),
        percentiles(raw),
    ));
    runtime.block_on(sync.shutdown()).expect("shutdown");
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average after: {}", load.trim());
    println!("\n| what | figure |\n|---|---|");
    for (what, figure) in rows {
        println!("| {what} | {figure} |");
    }
}
