//! Helpers shared by the write tests (`kernel_write`, `kernel_txn`).
// each test crate uses a part of them
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use mapsync_core::control::{Outcome, Put, Refusal};
use mapsync_core::{CommandError, SharedEvent, Store, Subscription, WatchBatch};
use mapsync_kernel::{MapSpec, MapSync, SyncConfig};
use mapsync_test_support::PinDir;

pub fn k(n: u8) -> [u8; 4] {
    [n, 0, 0, 0]
}

pub fn v8(n: u8) -> [u8; 8] {
    [n; 8]
}

pub fn put(map: &str, key: [u8; 4], value: &[u8]) -> Put {
    Put::new(map, key.to_vec(), value.to_vec())
}

pub async fn start(pins: &PinDir, maps: &[&Path]) -> MapSync {
    start_on(pins.join("capture"), maps).await
}

pub async fn start_on(pin_dir: PathBuf, maps: &[&Path]) -> MapSync {
    MapSync::start(SyncConfig {
        maps: maps.iter().map(|pin| MapSpec::pin(None, pin)).collect(),
        pin_dir,
        // no periodic re-read: every event of these tests comes from a write
        reconcile_interval: None,
        ..SyncConfig::default()
    })
    .await
    .expect("start")
}

pub fn mirror(store: &Store, map: &str) -> BTreeMap<Vec<u8>, Vec<u8>> {
    store
        .snapshot()
        .map(map)
        .expect("map mirrored")
        .iter()
        .map(|(k, e)| (k.to_vec(), e.value.to_vec()))
        .collect()
}

pub fn mod_revision(store: &Store, map: &str, key: &[u8]) -> u64 {
    store
        .snapshot()
        .map(map)
        .expect("map")
        .entry(key)
        .expect("entry")
        .mod_revision
}

/// The refusal, errno and op index of a refused write.
pub fn refused(result: Result<Outcome, CommandError>) -> (Refusal, i32, Option<usize>) {
    match result {
        Err(CommandError::Refused {
            refusal, errno, op, ..
        }) => (refusal, errno, op),
        other => panic!("expected a kernel refusal, got {other:?}"),
    }
}

pub fn invalid(result: Result<Outcome, CommandError>) -> String {
    match result {
        Err(CommandError::InvalidArgument { reason }) => reason,
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}

/// Every event arriving on `sub` within `window`.
pub async fn events_within(sub: &mut Subscription, window: Duration) -> Vec<Vec<SharedEvent>> {
    let mut batches = Vec::new();
    let deadline = tokio::time::Instant::now() + window;
    while let Ok(next) = tokio::time::timeout_at(deadline, sub.next()).await {
        match next {
            Some(Ok(WatchBatch::Events(events))) => batches.push(events),
            other => panic!("unexpected {other:?}"),
        }
    }
    batches
}

/// The batches arriving on `sub` until they hold `expected` events (at
/// most 5 s: a loaded machine delivers late), then during `settle` more, so
/// that anything beyond what is expected shows too.
pub async fn events_settled(
    sub: &mut Subscription,
    expected: usize,
    settle: Duration,
) -> Vec<Vec<SharedEvent>> {
    let mut batches = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while batches.iter().map(Vec::len).sum::<usize>() < expected {
        match tokio::time::timeout_at(deadline, sub.next()).await {
            Ok(Some(Ok(WatchBatch::Events(events)))) => batches.push(events),
            Ok(other) => panic!("unexpected {other:?}"),
            Err(_) => break,
        }
    }
    batches.extend(events_within(sub, settle).await);
    batches
}
