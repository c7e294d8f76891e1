//! Apply on a switchable map (fill the shadow, switch slot 0, publish the
//! difference), beside writing the same set into a plain hash map with
//! per-key updates and with one batch update (neither atomic).
//!
//! `cargo bench -p mapsync-kernel --bench apply` (root, bpffs). Prints, per
//! set size, the median over the rounds of: the whole Apply as a caller of
//! `CommandHandle::apply` sees it, the switch alone (the one outer-slot
//! update, the kernel's RCU wait included), per-key `BPF_MAP_UPDATE_ELEM`
//! of the set, and one `BPF_MAP_UPDATE_BATCH` of it. Every round changes
//! every value. Without `--bench` (e.g. `cargo test --benches`) it runs a
//! smoke pass of 1,000 entries and two rounds. `MAPSYNC_LOG=mapsync_kernel=debug`
//! logs each apply's phases (build the set, fill and switch, publish).
#![allow(
    clippy::print_stdout,
    reason = "a benchmark's job is to print its figures"
)]

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mapsync_core::MapKind;
use mapsync_core::control::{Apply, ApplyMode};
use mapsync_kernel::switch::{self, SwitchShape};
use mapsync_kernel::{MapSpec, MapSync, SyncConfig, sys};
use mapsync_test_support::{self as support, PinDir};

const SIZES: [u32; 3] = [1_000, 10_000, 100_000];
const SMOKE_SIZES: [u32; 1] = [1_000];

fn entries(n: u32, tag: u64) -> Vec<(Bytes, Option<Bytes>)> {
    (0..n)
        .map(|key| {
            let value = [tag.to_ne_bytes(), u64::from(key).to_ne_bytes()].concat();
            (
                Bytes::copy_from_slice(&key.to_ne_bytes()),
                Some(Bytes::from(value)),
            )
        })
        .collect()
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

fn main() {
    if !support::require_kernel() {
        return;
    }
    // MAPSYNC_LOG=mapsync_kernel=debug shows each apply's phases
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MAPSYNC_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let full = std::env::args().any(|arg| arg == "--bench");
    let sizes: &[u32] = if full { &SIZES } else { &SMOKE_SIZES };
    let pins = PinDir::new("bench-apply");
    let maps: Vec<MapSpec> = sizes
        .iter()
        .map(|n| {
            let pin = pins.join(&format!("set{n}"));
            let shape = SwitchShape {
                kind: MapKind::Hash,
                key_size: 4,
                value_size: 16,
                max_entries: *n,
            };
            switch::create(&pin, shape).expect("create a switchable map");
            MapSpec::switch(Some(&format!("set{n}")), pin)
        })
        .collect();
    let sync = runtime
        .block_on(MapSync::start(SyncConfig {
            maps,
            pin_dir: pins.join("capture"),
            reconcile_interval: None,
            ..SyncConfig::default()
        }))
        .expect("start");
    let handle = sync.commands();
    println!(
        "{:>8} {:>14} {:>14} {:>14} {:>14}",
        "entries", "apply total", "switch alone", "per-key upd.", "batch update"
    );
    for &n in sizes {
        let rounds = match (full, n) {
            (false, _) => 2,
            (true, 100_000..) => 5,
            (true, _) => 11,
        };
        let name = format!("set{n}");
        let (mut totals, mut switches) = (Vec::new(), Vec::new());
        for round in 0..=rounds {
            let set = entries(n, round + 1);
            let started = Instant::now();
            let outcome = runtime
                .block_on(handle.apply(Apply {
                    map: name.clone(),
                    mode: ApplyMode::Replace,
                    entries: set,
                    expect_version: None,
                }))
                .expect("apply");
            let took = started.elapsed();
            let applied = outcome.applied.expect("applied");
            // round 0 fills both inner maps for the first time: not measured
            if round > 0 {
                totals.push(took);
                switches.push(Duration::from_nanos(applied.switch_ns));
            }
        }
        let plain = sys::map_create(&sys::MapCreate {
            map_type: 1,
            key_size: 4,
            value_size: 16,
            max_entries: n,
            map_flags: 0,
            inner_map_fd: None,
            name: "bench_plain".into(),
            btf: None,
        })
        .expect("plain map");
        let (mut per_key, mut batch) = (Vec::new(), Vec::new());
        for round in 0..=rounds {
            let keys: Vec<u8> = (0..n).flat_map(u32::to_ne_bytes).collect();
            let values: Vec<u8> = (0..n)
                .flat_map(|key| [(round * 2).to_ne_bytes(), u64::from(key).to_ne_bytes()].concat())
                .collect();
            let started = Instant::now();
            for (key, value) in keys.chunks_exact(4).zip(values.chunks_exact(16)) {
                sys::update(plain.as_fd(), key, value, 0).expect("update");
            }
            let one_by_one = started.elapsed();
            let values: Vec<u8> = (0..n)
                .flat_map(|key| {
                    [(round * 2 + 1).to_ne_bytes(), u64::from(key).to_ne_bytes()].concat()
                })
                .collect();
            let started = Instant::now();
            let (count, result) = sys::update_batch(plain.as_fd(), &keys, &values, n);
            result.expect("batch update");
            assert_eq!(count, n);
            let batched = started.elapsed();
            if round > 0 {
                per_key.push(one_by_one);
                batch.push(batched);
            }
        }
        println!(
            "{n:>8} {:>14?} {:>14?} {:>14?} {:>14?}",
            median(totals),
            median(switches),
            median(per_key),
            median(batch)
        );
    }
    runtime.block_on(sync.shutdown()).expect("shutdown");
}
