//! Losing records and losing the process, end to end (issue 3): the real
//! `mapsync serve` binary on a real kernel, written to by bpftool and by a
//! BPF program, checked with the CLI, `bpftool map dump` and the Prometheus
//! metrics.
//!
//! - **overflow**: a 4 KiB ring and a SIGSTOPped server while bpftool (a batch
//!   file) and the demo XDP program (through `mapsync_update()` /
//!   `mapsync_delete()`) make thousands of changes. After SIGCONT the drops
//!   are seen (metric and log), every map is resynced, and `mapsync list`
//!   equals `bpftool map dump` byte for byte for every served map, as does
//!   the state a `mapsync watch --json` from revision 0 rebuilds from its
//!   events (strictly increasing revisions). Reconcile metric and log agree,
//!   and find nothing left to repair. Prints the figures ARCHITECTURE.md
//!   quotes (`cargo test --test loss_e2e -- --nocapture`).
//! - **restart**: `kill -9` and restart of `serve` on the same maps and pin
//!   dir: the new mirror holds the writes made while no server ran; a
//!   `mapsync watch` that was running reconnects and, its revisions being of
//!   the old epoch, prints a start-over marker and the complete new state; a
//!   resume with the old epoch's revision is never answered with a diff: the
//!   Rust client delivers `StartOver { EpochChanged }` with the kernel's state,
//!   and so does the CLI; a revision without its epoch is refused.

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use common::{ChildGuard, HexMap, Server, log_field, map_arg, metric, pin, scrape_metrics};
use futures::StreamExt;
use mapsync_kernel::DemoWriter;
use mapsync_test_support::{self as support, Batch, PinDir};
use serde_json::Value;

/// Generous: a 2-core machine shared with compilers.
const DEADLINE: Duration = Duration::from_secs(60);

fn kernel(pin: &Path) -> HexMap {
    common::kernel_hex(pin)
}

fn listed(server: &Server, map: &str) -> Option<HexMap> {
    common::listed(server, map, DEADLINE)
}

/// Keys whose value differs between `a` and `b` (including keys only one has).
fn diff_size(a: &HexMap, b: &HexMap) -> usize {
    let only_or_changed = a.iter().filter(|(k, v)| b.get(*k) != Some(*v)).count();
    only_or_changed + b.keys().filter(|k| !a.contains_key(*k)).count()
}

/// Scrapes the metrics until `ready` holds for them, or panics at the deadline.
fn metrics_when(
    addr: &str,
    what: &str,
    ready: impl Fn(&BTreeMap<String, f64>) -> bool,
) -> BTreeMap<String, f64> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let metrics = scrape_metrics(addr);
        if let Some(metrics) = metrics.as_ref().filter(|m| ready(m)) {
            return metrics.clone();
        }
        assert!(
            Instant::now() < deadline,
            "metrics never showed {what}: {metrics:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Log lines containing `needle`.
fn log_lines(server: &Server, needle: &str) -> Vec<String> {
    server
        .log()
        .into_iter()
        .filter(|line| line.contains(needle))
        .collect()
}

/// The sum of `field=N` over the log lines containing `needle`.
fn log_sum(server: &Server, needle: &str, field: &str) -> u64 {
    log_lines(server, needle)
        .iter()
        .map(|line| log_field(line, field).unwrap_or_else(|| panic!("no {field}= in {line:?}")))
        .sum()
}

/// Seconds since midnight UTC of `time`.
fn seconds_of_day(time: SystemTime) -> f64 {
    let since_epoch = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970");
    (since_epoch.as_secs() % 86_400) as f64 + f64::from(since_epoch.subsec_nanos()) / 1e9
}

/// Seconds since midnight UTC of a log line's timestamp
/// (`2026-01-02T03:04:05.678901Z ...`).
fn log_time(line: &str) -> Option<f64> {
    let stamp = line.split_whitespace().next()?;
    let (_, clock) = stamp.strip_suffix('Z')?.split_once('T')?;
    let mut parts = clock.split(':');
    let hours: f64 = parts.next()?.parse().ok()?;
    let minutes: f64 = parts.next()?.parse().ok()?;
    let seconds: f64 = parts.next()?.parse().ok()?;
    Some(hours * 3600.0 + minutes * 60.0 + seconds)
}

/// Wall-clock seconds from `start` to the log line's timestamp.
fn logged_after(start: SystemTime, line: &str) -> f64 {
    let at = log_time(line).unwrap_or_else(|| panic!("no timestamp in {line:?}"));
    (at - seconds_of_day(start)).rem_euclid(86_400.0)
}

/// A `mapsync watch --json` process and the state its events rebuild.
struct Watcher {
    _child: ChildGuard,
    lines: common::Lines,
    /// (map, hex key) -> hex value.
    state: BTreeMap<(String, String), String>,
    last_revision: u64,
    events: u64,
}

impl Watcher {
    /// Applies one JSON line; live events (past the initial state) must
    /// come with strictly increasing revisions.
    fn apply(&mut self, line: &str, live: bool) {
        let event: Value = serde_json::from_str(line).expect("watch JSON line");
        let revision = event["revision"].as_u64().expect("revision");
        if live {
            assert!(
                revision > self.last_revision,
                "revisions must strictly increase: {revision} after {}",
                self.last_revision
            );
        }
        self.last_revision = self.last_revision.max(revision);
        let key = (
            event["map"].as_str().expect("map").to_owned(),
            event["key"].as_str().expect("key").to_owned(),
        );
        match event["op"].as_str().expect("op") {
            "put" => {
                let value = event["value"].as_str().expect("a put has a value");
                self.state.insert(key, value.to_owned());
            }
            "delete" => {
                assert!(event["value"].is_null(), "a delete has no value: {line}");
                self.state.remove(&key);
            }
            other => panic!("unknown op {other}: {line}"),
        }
        self.events += 1;
    }

    /// The rebuilt state of one map.
    fn map(&self, name: &str) -> HexMap {
        self.state
            .iter()
            .filter(|((map, _), _)| map == name)
            .map(|((_, key), value)| (key.clone(), value.clone()))
            .collect()
    }
}

#[test]
fn a_full_ring_while_the_server_is_stopped_is_detected_resynced_and_converges() {
    if !support::require_kernel() {
        return;
    }
    // declared first, so dropped last: every process below is gone before
    // the pins are removed
    let pins = PinDir::new("loss-overflow");
    let capture = pins.join("capture");
    let flows = pin(&pins, "flows");
    support::create_map(&flows, "hash", 4, 8, 4096, "flows");
    for k in 0u32..8 {
        support::update(&flows, &k.to_ne_bytes(), &[0xaa; 8]).expect("seed flows");
    }

    // The ring is created by whichever producer loads first, with its size.
    // A first server creates it with --ringbuf-bytes 4096 (the pins outlive
    // it, by design); the demo program loaded next shares that small ring;
    // then the server under test starts on both maps.
    drop(Server::start_with(
        &pins,
        &[map_arg("flows", &flows)],
        &["--ringbuf-bytes", "4096"],
    ));
    let ring: Value = serde_json::from_str(
        &support::bpftool(&[
            "-j",
            "map",
            "show",
            "pinned",
            capture.join("mapsync_events").to_str().expect("utf-8"),
        ])
        .expect("bpftool map show the ring"),
    )
    .expect("bpftool JSON");
    assert_eq!(ring["max_entries"], 4096, "a 4 KiB ring: {ring}");

    let mut demo = DemoWriter::load(&capture).expect("load the demo program");
    let demo_pin = pin(&pins, "demo_pkts");
    support::bpftool(&[
        "map",
        "pin",
        "id",
        &demo.map_id().to_string(),
        demo_pin.to_str().expect("utf-8"),
    ])
    .expect("pin the demo map");
    for i in 0..4u8 {
        demo.count(Ipv4Addr::new(192, 0, 2, i), 100, 1)
            .expect("seed demo");
    }

    let metrics_addr = format!("127.0.0.1:{}", common::free_port());
    let server = Server::start_with(
        &pins,
        &[map_arg("flows", &flows), map_arg("demo", &demo_pin)],
        &[
            "--ringbuf-bytes",
            "4096",
            "--reconcile-interval",
            "2",
            "--metrics-listen",
            &metrics_addr,
        ],
    );
    let maps = [("flows", flows.as_path()), ("demo", demo_pin.as_path())];
    for (name, pin) in maps {
        assert_eq!(
            listed(&server, name).expect("list"),
            kernel(pin),
            "initial {name}"
        );
    }
    let before = metrics_when(&metrics_addr, "a first scrape", |_| true);
    assert_eq!(metric(&before, "mapsync_dropped_records"), 0.0);

    // a watcher from revision 0: the current entries first, then live changes
    let initial: usize = maps.iter().map(|(_, pin)| kernel(pin).len()).sum();
    let (child, lines) = server.spawn_cli(&["watch", "--json"]);
    let mut watcher = Watcher {
        _child: ChildGuard(child),
        lines,
        state: BTreeMap::new(),
        last_revision: 0,
        events: 0,
    };
    for _ in 0..initial {
        let line = watcher.lines.next(DEADLINE);
        watcher.apply(&line, false);
    }
    let initial_revision = watcher.last_revision;
    let watching = metrics_when(&metrics_addr, "the watcher counted", |m| {
        metric(m, "mapsync_watches") >= 1.0
    });
    assert_eq!(metric(&watching, "mapsync_watch_streams"), 1.0);

    // Stop the server right after a reconcile has ended, so that the stop
    // cannot land in the middle of one (a reconcile dumping the maps after the
    // writes below would count them as its own repairs).
    let reconciles = log_lines(&server, " reconcile maps=").len();
    let deadline = Instant::now() + DEADLINE;
    while log_lines(&server, " reconcile maps=").len() == reconciles {
        assert!(
            Instant::now() < deadline,
            "no reconcile within {DEADLINE:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    server.signal("STOP");
    server.wait_stopped(DEADLINE);

    // bpftool: 3 rounds over 1,000 keys, then every 7th key deleted
    let mut batch = Batch::default();
    for round in 1u8..=3 {
        for k in 0u32..1000 {
            let mut value = [round; 8];
            value[4..].copy_from_slice(&k.to_ne_bytes());
            batch.update(&flows, &k.to_ne_bytes(), &value);
        }
    }
    for k in (0u32..1000).step_by(7) {
        batch.delete(&flows, &k.to_ne_bytes());
    }
    let bpftool_writes = batch.len() as u64;
    batch.run().expect("bpftool batch file");
    // the demo program: 64 sources x 40 packets through mapsync_update(),
    // then every 5th source removed through mapsync_delete()
    let mut program_writes = 0u64;
    for i in 0..64u8 {
        demo.count(Ipv4Addr::new(10, 1, 0, i), 64 + usize::from(i), 40)
            .expect("demo_count");
        program_writes += 40;
    }
    for i in (0..64u8).step_by(5) {
        demo.forget(Ipv4Addr::new(10, 1, 0, i))
            .expect("demo_forget");
        program_writes += 1;
    }

    let resumed = Instant::now();
    let resumed_at = SystemTime::now();
    server.signal("CONT");
    let deadline = resumed + DEADLINE;
    let converged = loop {
        let equal = maps
            .iter()
            .all(|(name, pin)| listed(&server, name).is_some_and(|mirror| mirror == kernel(pin)));
        if equal {
            break resumed.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "the mirror did not converge within {DEADLINE:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let check = Instant::now();
    let mut final_diff = 0;
    for (name, pin) in maps {
        let mirror = listed(&server, name).expect("list");
        let kernel = kernel(pin);
        final_diff += diff_size(&mirror, &kernel);
        assert_eq!(mirror, kernel, "{name}: list equals bpftool map dump");
    }
    let check = check.elapsed();

    // drops and the resync they caused, in the metrics and in the log
    let after = metrics_when(&metrics_addr, "drops and resyncs", |m| {
        metric(m, "mapsync_dropped_records") > 0.0 && metric(m, "mapsync_resyncs") >= 2.0
    });
    let dropped = metric(&after, "mapsync_dropped_records") as u64;
    let resyncs = metric(&after, "mapsync_resyncs") as u64;
    let gaps = metric(&after, "mapsync_sequence_gaps") as u64;
    let records = metric(&after, "mapsync_records") as u64;
    let lost_lines = "change records lost, resyncing every map";
    let deadline = Instant::now() + DEADLINE;
    while log_sum(&server, lost_lines, "dropped") < dropped {
        assert!(
            Instant::now() < deadline,
            "the log should account for the {dropped} dropped records: {:?}",
            log_lines(&server, lost_lines)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        log_sum(&server, lost_lines, "dropped"),
        dropped,
        "log and metric agree on drops"
    );
    let resync_lines = log_lines(&server, "records lost");
    assert!(
        resync_lines.iter().any(|l| l.contains("map=flows"))
            && resync_lines.iter().any(|l| l.contains("map=demo")),
        "every map resynced after the loss: {resync_lines:?}"
    );
    let detected = logged_after(resumed_at, &log_lines(&server, lost_lines)[0]);
    let resynced = logged_after(resumed_at, resync_lines.last().expect("a resync line"));
    assert!(
        dropped + records >= bpftool_writes + program_writes,
        "every write was either read or counted as dropped ({records} read, {dropped} dropped, {} written)",
        bpftool_writes + program_writes
    );

    // the watcher rebuilds the same state, revision after revision
    let revision = metric(&after, "mapsync_revisions") as u64;
    let deadline = Instant::now() + DEADLINE;
    let mut watcher_done = Duration::ZERO;
    while watcher.last_revision < revision {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let Some((at, line)) = watcher.lines.next_timed_within(remaining) else {
            panic!(
                "the watcher stopped at revision {} of {revision}",
                watcher.last_revision
            );
        };
        watcher.apply(&line, true);
        watcher_done = at.duration_since(resumed);
    }
    assert_eq!(
        watcher.last_revision, revision,
        "no revision past the store's"
    );
    assert!(watcher.last_revision > initial_revision);
    for (name, pin) in maps {
        assert_eq!(
            watcher.map(name),
            kernel(pin),
            "{name}: the watcher's rebuilt state equals bpftool map dump"
        );
    }

    // Reconcile: its metric and its log agree, and with the losses repaired
    // by the resync it finds nothing (another one runs after convergence).
    let reconciles = metric(&after, "mapsync_reconciles");
    let later = metrics_when(&metrics_addr, "a reconcile after convergence", |m| {
        metric(m, "mapsync_reconciles") > reconciles
    });
    let repairs = metric(&later, "mapsync_reconcile_repairs") as u64;
    let deadline = Instant::now() + DEADLINE;
    while log_lines(&server, " reconcile maps=").len()
        < metric(&later, "mapsync_reconciles") as usize
    {
        assert!(
            Instant::now() < deadline,
            "a reconcile log line per reconcile"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        log_sum(&server, " reconcile maps=", "repaired"),
        repairs,
        "reconcile log lines and mapsync_reconcile_repairs agree"
    );
    assert_eq!(
        log_sum(
            &server,
            "reconcile found the mirror behind the kernel",
            "repaired"
        ),
        repairs,
        "per-map reconcile warnings add up to the metric"
    );
    assert_eq!(
        repairs, 0,
        "the resync repaired the losses before any reconcile could see them"
    );
    assert!(
        watcher
            .lines
            .next_within(Duration::from_millis(300))
            .is_none(),
        "nothing changes once converged"
    );

    let mut report = String::new();
    writeln!(
        report,
        "\noverflow figures (4 KiB ring, server stopped during the writes):"
    )
    .expect("write");
    writeln!(
        report,
        "  writes while stopped: {bpftool_writes} by bpftool (batch file), {program_writes} by the demo program (mapsync_update/delete)"
    )
    .expect("write");
    writeln!(
        report,
        "  records read: {records}; events dropped: {dropped} (metric = log); sequence gaps: {gaps}"
    )
    .expect("write");
    writeln!(
        report,
        "  resyncs made: {resyncs}; reconcile repairs: {repairs}; final diff: {final_diff} entries"
    )
    .expect("write");
    writeln!(
        report,
        "  SIGCONT -> loss logged: {:.1} ms; -> last map resynced (server log): {:.1} ms",
        detected * 1e3,
        resynced * 1e3
    )
    .expect("write");
    writeln!(
        report,
        "  SIGCONT -> `mapsync list` equals `bpftool map dump` for every map: {converged:.1?} (one check of both maps takes {check:.1?})"
    )
    .expect("write");
    writeln!(
        report,
        "  SIGCONT -> the watcher (from revision 0) holds the same state: {watcher_done:.1?}"
    )
    .expect("write");
    writeln!(
        report,
        "  watcher: {} events applied, last revision {revision}",
        watcher.events
    )
    .expect("write");
    eprintln!("{report}");
    assert_eq!(final_diff, 0);
}

#[test]
fn after_kill_9_and_restart_the_mirror_holds_the_kernel_and_old_epochs_start_over() {
    if !support::require_kernel() {
        return;
    }
    let pins = PinDir::new("loss-restart");
    let flows = pin(&pins, "flows");
    support::create_map(&flows, "hash", 4, 8, 256, "flows");
    for k in 0u32..5 {
        support::update(&flows, &k.to_ne_bytes(), &[1; 8]).expect("seed");
    }
    let maps = [map_arg("flows", &flows)];
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");

    let mut server = Server::start(&pins, &maps);
    let (child, lines) = server.spawn_cli(&["watch", "flows", "--json"]);
    let mut watch = ChildGuard(child);
    for _ in 0..5 {
        lines.next(DEADLINE);
    }
    let mut batch = Batch::default();
    for k in 3u32..13 {
        batch.update(&flows, &k.to_ne_bytes(), &[2; 8]);
    }
    batch.delete(&flows, &0u32.to_ne_bytes());
    batch.run().expect("bpftool batch file");
    let deadline = Instant::now() + DEADLINE;
    while listed(&server, "flows").expect("list") != kernel(&flows) {
        assert!(Instant::now() < deadline, "mirror follows bpftool");
        std::thread::sleep(Duration::from_millis(20));
    }
    let listing = runtime
        .block_on(async {
            let mut client = mapsync_client::Client::connect(&server.endpoint).await?;
            client.list("flows").await
        })
        .expect("list with the Rust client");
    let old_epoch = listing.epoch;
    assert_ne!(old_epoch, 0);
    let mut last_revision = 0;
    while last_revision < listing.revision {
        let line: Value = serde_json::from_str(&lines.next(DEADLINE)).expect("JSON");
        last_revision = line["revision"].as_u64().expect("revision");
    }
    assert_eq!(
        last_revision, listing.revision,
        "the watch saw every change"
    );
    assert!(
        log_lines(&server, " serving ")
            .iter()
            .any(|l| l.contains(&format!("epoch={old_epoch:016x}"))),
        "serve logs its epoch: {:?}",
        server.log()
    );

    server.kill9();

    // writes while no server runs
    let mut batch = Batch::default();
    for k in 100u32..110 {
        batch.update(&flows, &k.to_ne_bytes(), &[3; 8]);
    }
    batch.update(&flows, &4u32.to_ne_bytes(), &[4; 8]);
    batch.delete(&flows, &1u32.to_ne_bytes());
    batch.run().expect("bpftool batch file");

    assert!(
        watch.wait_exit(Duration::from_millis(500)).is_none(),
        "the watch keeps trying to reconnect while its server is down"
    );
    server.restart();
    let mirror = listed(&server, "flows").expect("list");
    assert_eq!(
        mirror,
        kernel(&flows),
        "the restarted mirror equals the kernel"
    );
    assert_eq!(
        mirror.get("64000000").map(String::as_str),
        Some("0303030303030303")
    );
    assert_eq!(
        mirror.get("04000000").map(String::as_str),
        Some("0404040404040404")
    );
    assert!(!mirror.contains_key("01000000"), "deleted while down");

    // the watch that was running reconnects; its revisions belong to the old
    // epoch, so it says so (a start-over marker), then gives the whole new state
    let started_over = |lines: &common::Lines, what: &str| -> (u64, HexMap) {
        let marker: Value = serde_json::from_str(&lines.next(DEADLINE)).expect("JSON");
        assert_eq!(marker["op"], "start_over", "{what}: {marker}");
        assert_eq!(marker["reason"], "EpochChanged", "{what}: {marker}");
        let revision = marker["revision"].as_u64().expect("revision");
        let mut state = HexMap::new();
        while state.len() < mirror.len() {
            let line: Value = serde_json::from_str(&lines.next(DEADLINE)).expect("JSON");
            assert_eq!(line["op"], "put", "{what}: {line}");
            state.insert(
                line["key"].as_str().expect("key").to_owned(),
                line["value"].as_str().expect("value").to_owned(),
            );
        }
        (revision, state)
    };
    let (_, state) = started_over(&lines, "the watch across the restart");
    assert_eq!(state, mirror, "the start-over carries the complete state");

    let (new_epoch, new_revision, first) = runtime.block_on(async {
        let mut client = mapsync_client::Client::connect(&server.endpoint)
            .await
            .expect("connect");
        let listing = client.list("flows").await.expect("list");
        let options = mapsync_client::WatchOptions::maps(["flows"])
            .from_revision(last_revision + 1, old_epoch);
        let mut stream = Box::pin(client.watch(options).await.expect("watch"));
        let first = tokio::time::timeout(DEADLINE, stream.next())
            .await
            .expect("an answer in time")
            .expect("an item")
            .expect("not an error");
        (listing.epoch, listing.revision, first)
    });
    assert_ne!(new_epoch, old_epoch, "a new process has a new epoch");
    // a resume with the old epoch's revision: never a diff, a fresh snapshot
    match first {
        mapsync_client::WatchItem::StartOver {
            reason: mapsync_client::StartOverReason::EpochChanged,
            epoch,
            revision,
            entries,
        } => {
            assert_eq!((epoch, revision), (new_epoch, new_revision));
            let state: HexMap = entries
                .iter()
                .map(|e| {
                    (
                        hex::encode(&e.key),
                        hex::encode(e.value.as_deref().expect("a put")),
                    )
                })
                .collect();
            assert_eq!(state, mirror);
        }
        other => panic!("an old epoch's revision must give a start-over, got {other:?}"),
    }

    // the same through the CLI
    let (child, old_lines) = server.spawn_cli(&[
        "watch",
        "flows",
        "--json",
        "--from-revision",
        &(last_revision + 1).to_string(),
        "--epoch",
        &format!("{old_epoch:016x}"),
    ]);
    let _old = ChildGuard(child);
    let (revision, state) = started_over(&old_lines, "a CLI resume with the old epoch");
    assert_eq!((revision, &state), (new_revision, &mirror));

    // a revision without its epoch is refused by the CLI
    let output = server.cli_within(&["watch", "flows", "--from-revision", "3"], DEADLINE);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("--epoch"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // the current epoch resumes as usual
    let (child, lines) = server.spawn_cli(&[
        "watch",
        "flows",
        "--json",
        "--from-revision",
        &(new_revision + 1).to_string(),
        "--epoch",
        &format!("{new_epoch:016x}"),
    ]);
    let _resumed = ChildGuard(child);
    support::update(&flows, &200u32.to_ne_bytes(), &[5; 8]).expect("update");
    let line: Value = serde_json::from_str(&lines.next(DEADLINE)).expect("JSON");
    assert_eq!(line["revision"], new_revision + 1);
    assert_eq!(line["key"], "c8000000");
}
