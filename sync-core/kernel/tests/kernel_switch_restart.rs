//! Switchable maps on a real kernel, continued: adopting an outer map made
//! with bpftool, kill -9 in the middle of applies and a restart, and the
//! demo's XDP blocklist (every verdict matches its version's set).

mod switch_common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use mapsync_core::control::ApplyMode;
use mapsync_kernel::switch;
use mapsync_kernel::{MapSpec, MapSync, SyncConfig};
use mapsync_test_support::{self as support, PinDir};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use switch_common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outer_map_made_with_bpftool_is_adopted() {
    if !support::require_kernel() {
        return;
    }
    let pins = PinDir::new("switch-adopt");
    let inner = pins.join("inner");
    let outer = pins.join("outer");
    support::create_map(&inner, "hash", 4, 16, 32, "inner");
    let (inner_s, outer_s) = (
        inner.to_str().expect("utf-8"),
        outer.to_str().expect("utf-8"),
    );
    support::bpftool(&[
        "map",
        "create",
        outer_s,
        "type",
        "array_of_maps",
        "key",
        "4",
        "value",
        "4",
        "entries",
        "1",
        "name",
        "outer",
        "inner_map",
        "pinned",
        inner_s,
    ])
    .expect("bpftool create outer");
    support::bpftool(&[
        "map", "update", "pinned", outer_s, "key", "0", "0", "0", "0", "value", "pinned", inner_s,
    ])
    .expect("bpftool set slot 0");
    for k in 0..3u32 {
        support::update(&inner, &k.to_ne_bytes(), &value(0, u64::from(k))).expect("bpftool update");
    }
    let sync = start(&pins, vec![MapSpec::switch(Some("adopted"), &outer)]).await;
    let store = sync.store().clone();
    let (set, inner_id, version) = kernel_set(&outer);
    assert_eq!(
        version,
        Some(switch::FIRST_VERSION),
        "the version store was created"
    );
    let view = store.load().map("adopted").expect("adopted").clone();
    assert_eq!(
        (view.info().id, view.version(), view.len()),
        (inner_id, 1, 3)
    );
    assert_eq!(mirror(&store, "adopted"), set);
    let outcome = sync
        .commands()
        .apply(apply(
            "adopted",
            ApplyMode::Merge,
            vec![put(7, 1), (key(0), None)],
            Some(1),
        ))
        .await
        .expect("apply");
    assert_eq!(outcome.applied.expect("applied").version, 2);
    let (set, new_id, _) = kernel_set(&outer);
    assert_ne!(new_id, inner_id, "slot 0 points at the shadow now");
    assert_eq!(set.len(), 3);
    assert_eq!(mirror(&store, "adopted"), set);
    sync.shutdown().await.expect("shutdown");
}

/// The child of the restart test: applies sets of [`RESTART_KEYS`] entries
/// tagged with the version they make live, forever (until killed).
const RESTART_CHILD: &str = "MAPSYNC_SWITCH_TEST_CHILD";
const RESTART_KEYS: u32 = 2000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_during_applies_leaves_one_complete_set_that_a_restart_mirrors() {
    if let Some(dir) = std::env::var_os(RESTART_CHILD) {
        let dir = std::path::PathBuf::from(dir);
        let sync = MapSync::start(SyncConfig {
            maps: vec![MapSpec::switch(Some("set"), dir.join("set"))],
            pin_dir: dir.join("capture"),
            reconcile_interval: None,
            ..SyncConfig::default()
        })
        .await
        .expect("child start");
        let handle = sync.commands();
        loop {
            let live = sync.store().load().map("set").expect("set").version();
            handle
                .apply(apply(
                    "set",
                    ApplyMode::Replace,
                    tagged(live + 1, RESTART_KEYS),
                    Some(live),
                ))
                .await
                .expect("child apply");
        }
    }
    if !support::require_kernel() {
        return;
    }
    let pins = PinDir::new("switch-kill");
    let outer = pins.join("set");
    switch::create(&outer, small_shape(RESTART_KEYS)).expect("create");
    let mut last_version = switch::FIRST_VERSION;
    for round in 0..3u64 {
        let mut child = std::process::Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                "a_kill_9_during_applies_leaves_one_complete_set_that_a_restart_mirrors",
                "--nocapture",
            ])
            .env(RESTART_CHILD, pins.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("spawn the child");
        // let it make a few switches, then kill it at some moment of one
        let deadline = Instant::now() + Duration::from_secs(60);
        while kernel_set(&outer).2.unwrap_or(0) < last_version + 2 + round {
            assert!(Instant::now() < deadline, "the child made no progress");
            assert!(
                child.try_wait().expect("child").is_none(),
                "the child exited"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(7 * round + 3)).await;
        child.kill().expect("kill -9");
        child.wait().expect("reap");
        let (set, _, version) = kernel_set(&outer);
        let version = version.expect("the active inner map has a version");
        assert_eq!(
            set.len(),
            RESTART_KEYS as usize,
            "round {round}: a complete set"
        );
        assert!(
            set.values().all(|v| tag_of(v) == version),
            "round {round}: every entry carries the live version {version}"
        );
        last_version = version;
    }
    let sync = start(&pins, vec![MapSpec::switch(Some("set"), &outer)]).await;
    let (set, id, version) = kernel_set(&outer);
    let view = sync.store().load().map("set").expect("set").clone();
    assert_eq!(
        (view.version(), view.info().id),
        (version.expect("version"), id)
    );
    assert_eq!(
        mirror(sync.store(), "set"),
        set,
        "the restarted mirror equals the kernel"
    );
    let outcome = sync
        .commands()
        .apply(apply(
            "set",
            ApplyMode::Replace,
            tagged(last_version + 1, RESTART_KEYS),
            Some(last_version),
        ))
        .await
        .expect("apply after the restart");
    assert_eq!(outcome.applied.expect("applied").version, last_version + 1);
    sync.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_xdp_verdict_matches_the_blocklist_of_the_version_it_was_counted_under() {
    use mapsync_kernel::DemoBlocklist;
    use mapsync_kernel::blocklist::{XDP_DROP, XDP_PASS, blocklist_key};
    use std::net::Ipv4Addr;
    if !support::require_kernel() {
        return;
    }
    const SOURCES: [Ipv4Addr; 4] = [
        Ipv4Addr::new(192, 0, 2, 1),
        Ipv4Addr::new(192, 0, 2, 2),
        Ipv4Addr::new(198, 51, 100, 7),
        Ipv4Addr::new(203, 0, 113, 9),
    ];
    let pins = PinDir::new("switch-blocklist");
    let mut blocklist = DemoBlocklist::load(pins.path()).expect("load the blocklist");
    let outer = blocklist.outer_pin().to_owned();
    let sync = start(&pins, vec![MapSpec::switch(Some("blocklist"), &outer)]).await;
    let handle = sync.commands();
    let stop = Arc::new(AtomicBool::new(false));
    let injector = std::thread::spawn({
        let stop = stop.clone();
        move || {
            let mut sent = 0usize;
            while !stop.load(Ordering::Relaxed) {
                blocklist
                    .inject(SOURCES[sent % SOURCES.len()])
                    .expect("inject");
                sent += 1;
            }
            blocklist
        }
    });
    // version v blocks the sources whose bit is set in v
    let blocked = |version: u64| -> Vec<Ipv4Addr> {
        SOURCES
            .iter()
            .enumerate()
            .filter(|(bit, _)| version & (1 << bit) != 0)
            .map(|(_, source)| *source)
            .collect()
    };
    for version in 1..31u64 {
        let entries = blocked(version + 1)
            .into_iter()
            .map(|source| {
                (
                    Bytes::copy_from_slice(&blocklist_key(source)),
                    Some(Bytes::copy_from_slice(&1u32.to_ne_bytes())),
                )
            })
            .collect();
        handle
            .apply(apply(
                "blocklist",
                ApplyMode::Replace,
                entries,
                Some(version),
            ))
            .await
            .expect("apply a blocklist");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let verdicts = injector
        .join()
        .expect("injector")
        .verdicts()
        .expect("verdicts");
    let mut versions = std::collections::BTreeSet::new();
    let (mut drops, mut passes) = (0, 0);
    for ((version, source, verdict), count) in &verdicts {
        // version 1 is the empty set mapsync created
        let expected = if *version > 1 && blocked(*version).contains(source) {
            XDP_DROP
        } else {
            XDP_PASS
        };
        assert_eq!(
            *verdict, expected,
            "version {version}, {source}: {count} packets"
        );
        versions.insert(*version);
        if *verdict == XDP_DROP {
            drops += count;
        } else {
            passes += count;
        }
    }
    eprintln!(
        "{} versions seen, {drops} dropped, {passes} passed",
        versions.len()
    );
    assert!(
        versions.len() >= 5,
        "packets flowed across switches: {versions:?}"
    );
    assert!(drops > 0 && passes > 0);
    sync.shutdown().await.expect("shutdown");
}
