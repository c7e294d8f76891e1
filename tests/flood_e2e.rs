//! `mapsync serve` under a write flood that overflows its ring for as long
//! as it lasts: the server keeps answering, the log stays bounded, the
//! mirror converges when the flood ends, and SIGTERM in the middle of it
//! ends the process within 5 s.

mod common;

use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Server, json_lines, map_arg, pin};
use mapsync_kernel::MapSpec;
use mapsync_kernel::{open, sys};
use mapsync_test_support::{self as support, PinDir};

/// Two threads writing the time into 4,096 keys as fast as they can.
fn flood(path: &std::path::Path, stop: &Arc<AtomicBool>) -> Vec<std::thread::JoinHandle<u64>> {
    (0..2u32)
        .map(|index| {
            let map = open::open(&MapSpec::pin(None, path)).expect("open for writing");
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut writes = 0;
                while !stop.load(Ordering::Relaxed) {
                    for key in (index..4096).step_by(2) {
                        let now = sys::monotonic_ns();
                        sys::update(map.fd.as_fd(), &key.to_ne_bytes(), &now.to_ne_bytes(), 0)
                            .expect("update");
                        writes += 1;
                    }
                }
                writes
            })
        })
        .collect()
}

fn listed(server: &Server) -> usize {
    let started = Instant::now();
    let output = server.cli_within(&["list", "flood", "--json"], Duration::from_secs(20));
    assert!(
        output.status.success(),
        "list during the flood: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "list took {took:?} while ingest was busy"
    );
    json_lines(&output.stdout).len()
}

#[test]
fn a_server_under_an_endless_flood_answers_logs_little_converges_and_stops_on_sigterm() {
    if !support::require_kernel() {
        return;
    }
    let pins = PinDir::new("flood-e2e");
    let path = pin(&pins, "flood");
    support::create_map(&path, "hash", 4, 8, 4096, "flood");
    // every key present from the start: each list during the flood shows them all
    let map = open::open(&MapSpec::pin(None, &path)).expect("open");
    for key in 0..4096u32 {
        sys::update(map.fd.as_fd(), &key.to_ne_bytes(), &0u64.to_ne_bytes(), 0).expect("fill");
    }
    let mut server = Server::start_with(
        &pins,
        &[map_arg("flood", &path)],
        &["--ringbuf-bytes", "16384"],
    );

    let stop = Arc::new(AtomicBool::new(false));
    let writers = flood(&path, &stop);
    let started = Instant::now();
    let mut lists = 0;
    while started.elapsed() < Duration::from_secs(6) {
        assert_eq!(listed(&server), 4096, "the mirror holds every flooded key");
        lists += 1;
        std::thread::sleep(Duration::from_millis(300));
    }
    stop.store(true, Ordering::Relaxed);
    let writes: u64 = writers.into_iter().map(|w| w.join().expect("writer")).sum();

    // converged once the writers stop
    let kernel = support::dump(&path);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let output = server.cli_within(&["list", "flood", "--json"], Duration::from_secs(20));
        let mirror: std::collections::BTreeMap<Vec<u8>, Vec<u8>> = json_lines(&output.stdout)
            .iter()
            .map(|entry| {
                let field = |name: &str| {
                    hex::decode(entry[name].as_str().expect("hex field")).expect("hex")
                };
                (field("key"), field("value"))
            })
            .collect();
        if mirror == kernel {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the mirror did not converge after the flood"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // a second flood, and SIGTERM in the middle of it
    let stop = Arc::new(AtomicBool::new(false));
    let writers = flood(&path, &stop);
    std::thread::sleep(Duration::from_secs(1));
    let signaled = Instant::now();
    server.signal("TERM");
    while server.is_running() {
        assert!(
            signaled.elapsed() < Duration::from_secs(5),
            "serve did not exit within 5 s of SIGTERM during a flood"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let exit_after = signaled.elapsed();
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.join().expect("writer");
    }

    let log = server.log();
    let bytes: usize = log.iter().map(|line| line.len() + 1).sum();
    let loss_lines = log
        .iter()
        .filter(|line| line.contains("change records lost"))
        .count();
    eprintln!(
        "flood e2e: {writes} writes, {lists} lists answered, {} log lines ({bytes} bytes), {loss_lines} loss lines, SIGTERM -> exit {exit_after:?}",
        log.len()
    );
    // one loss line per second at most (rate-limited), whatever the flood
    assert!(loss_lines <= 12, "{loss_lines} loss lines in ~8 s of flood");
    assert!(
        log.iter().any(|line| line.contains("change records lost")),
        "the losses were reported"
    );
    assert!(bytes < 512 * 1024, "the log stayed small: {bytes} bytes");
}
