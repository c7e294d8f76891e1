//! What `bench strategies` measures with: the process's CPU (getrusage), the
//! ingest thread's CPU (`/proc/self/task/TID/schedstat`), the resident set
//! (`VmRSS` of `/proc/self/status`), and an observer that stamps each change
//! the moment a reader woken by the store's revision watch sees it.

use std::sync::Arc;

use bytes::Bytes;
use mapsync_core::{EventSource, Op, Revision, Store};
use mapsync_kernel::sys::monotonic_ns;
use tokio::sync::mpsc;
use tracing::Instrument;

/// One change as the observer saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The map's configured name.
    pub map: Arc<str>,
    /// The key's bytes.
    pub key: Bytes,
    /// Put or delete.
    pub op: Op,
    /// Which capture source reported it.
    pub source: EventSource,
    /// The revision it became visible at.
    pub revision: Revision,
    /// CLOCK_MONOTONIC when the observer loaded the snapshot holding it.
    pub seen_ns: u64,
}

/// Bound of the observer's queue: it waits (and so falls behind, which the
/// latencies then show) rather than grow.
const OBSERVED_QUEUE: usize = 1 << 16;

/// Starts the observer task on `store`: every event published from now on
/// is sent, in order, on the returned receiver. Stops when the receiver is
/// dropped (or abort the handle).
pub fn observe(store: Store) -> (mpsc::Receiver<Seen>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(OBSERVED_QUEUE);
    // subscribed before returning: a write made right after is not missed
    let mut revisions = store.revisions();
    let mut next = store.revision() + 1;
    let task = tokio::spawn(
        async move {
            while revisions.changed().await.is_ok() {
                let snapshot = store.snapshot();
                let seen_ns = monotonic_ns();
                loop {
                    let events = match snapshot.log().read_from(next, 4096) {
                        Ok(events) => events,
                        // fell behind the log's bound: skip ahead (the writes
                        // missed show as lost in the row)
                        Err(_) => {
                            next = snapshot.revision() + 1;
                            break;
                        }
                    };
                    if events.is_empty() {
                        break;
                    }
                    for event in events {
                        next = event.revision + 1;
                        let seen = Seen {
                            map: event.map.clone(),
                            key: event.key.clone(),
                            op: event.op,
                            source: event.source,
                            revision: event.revision,
                            seen_ns,
                        };
                        if tx.send(seen).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
        .instrument(tracing::info_span!("bench_observer")),
    );
    (rx, task)
}

/// CPU time used so far by the whole process (user + system), in seconds,
/// from `getrusage(RUSAGE_SELF)`.
pub fn process_cpu_s() -> f64 {
    // SAFETY: an all-zero rusage is a valid value to be overwritten.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid rusage to write to.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let secs = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// CPU time used so far by the thread named `name` (the ingest thread is
/// `mapsync-ingest`), in seconds, from the first field of its `schedstat`
/// (nanoseconds on the CPU). `None` when no such thread runs.
pub fn thread_cpu_s(name: &str) -> Option<f64> {
    let tasks = std::fs::read_dir("/proc/self/task").ok()?;
    for task in tasks.flatten() {
        let path = task.path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if comm.trim_end() != name {
            continue;
        }
        let stat = std::fs::read_to_string(path.join("schedstat")).ok()?;
        let ns: u64 = stat.split_whitespace().next()?.parse().ok()?;
        return Some(ns as f64 / 1e9);
    }
    None
}

/// The process's resident set size in KiB (`VmRSS` of `/proc/self/status`).
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// The `q` quantile (0..=1) of sorted `values` (nearest rank); 0 if empty.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_is_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&values, 0.5), 50.0);
        assert_eq!(quantile(&values, 0.99), 99.0);
        assert_eq!(quantile(&values, 1.0), 100.0);
        assert_eq!(quantile(&[7.0], 0.5), 7.0);
        assert_eq!(quantile(&[], 0.5), 0.0);
    }

    #[test]
    fn the_process_counters_read() {
        assert!(rss_kib() > 0);
        assert!(process_cpu_s() >= 0.0);
        assert!(thread_cpu_s("no-such-thread-name").is_none());
    }
}
