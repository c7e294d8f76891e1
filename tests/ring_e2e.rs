//! The capture ring as it is, end to end (issue 8): the real `mapsync serve`
//! on a pin directory that already holds a ring of another size, and on a
//! ring whose consumer position is made impossible on purpose.
//!
//! - **another size**: `serve` with one ring size, SIGTERM, then `serve` with
//!   another on the same pin directory (default 4 MiB then 4096 bytes, and
//!   the reverse), 2,000 writes from a `bpftool batch` file: `mapsync list`
//!   equals `bpftool map dump`, the log stays small and names both sizes
//!   once, and SIGTERM ends the server within 5 s.
//! - **reset**: the consumer position written ahead of the producer through
//!   the ring's mmap: one warn line, `mapsync_ring_resets` counts it, the
//!   mirror converges; a second corruption followed at once by SIGTERM: the
//!   server exits within 5 s.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{HexMap, Server, map_arg, metric, pin, scrape_metrics};
use mapsync_test_support::ring::RingPages;
use mapsync_test_support::{self as support, Batch, PinDir};

/// Generous: a 2-core machine shared with compilers.
const DEADLINE: Duration = Duration::from_secs(60);
/// What the issue asks of SIGTERM.
const EXIT_WITHIN: Duration = Duration::from_secs(5);
/// The log of a whole test run stays below this.
const LOG_BOUND: usize = 64 * 1024;

fn kernel(pin: &Path) -> HexMap {
    common::kernel_hex(pin)
}

fn listed(server: &Server, map: &str) -> Option<HexMap> {
    common::listed(server, map, DEADLINE)
}

/// Waits until `mapsync list` equals `bpftool map dump`, or panics.
fn converge(server: &Server, name: &str, map: &Path, what: &str) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let kernel = kernel(map);
        if listed(server, name).as_ref() == Some(&kernel) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: `mapsync list` never equalled the kernel's {} entries",
            kernel.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// 2,000 writes in one bpftool process: 1,800 updates and 200 deletes.
fn bpftool_writes(map: &Path, round: u64) {
    let mut batch = Batch::default();
    for k in 0..1800u32 {
        let value = (round << 32 | u64::from(k)).to_ne_bytes();
        batch.update(map, &k.to_ne_bytes(), &value);
    }
    for k in (0..1800u32).step_by(9) {
        batch.delete(map, &k.to_ne_bytes());
    }
    batch.run().expect("bpftool batch file");
}

/// Sends SIGTERM and returns how long the server took to exit, panicking
/// after [`EXIT_WITHIN`].
fn terminate(server: &mut Server, what: &str) -> Duration {
    let sent = Instant::now();
    server.signal("TERM");
    while server.is_running() {
        assert!(
            sent.elapsed() < EXIT_WITHIN,
            "{what}: serve still runs {EXIT_WITHIN:?} after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    sent.elapsed()
}

fn log_bytes(server: &Server) -> usize {
    server.log().iter().map(|line| line.len() + 1).sum()
}

fn count_lines(server: &Server, needle: &str) -> usize {
    server
        .log()
        .iter()
        .filter(|line| line.contains(needle))
        .count()
}

#[test]
fn serve_on_a_pinned_ring_of_another_size_mirrors_every_write_with_a_small_log() {
    if !support::require_kernel() {
        return;
    }
    let directions: [(&[&str], &[&str], u64); 2] = [
        (&[], &["--ringbuf-bytes", "4096"], 4 << 20),
        (&["--ringbuf-bytes", "4096"], &[], 4096),
    ];
    for (first_args, second_args, pinned) in directions {
        let what = format!("ring pinned with {first_args:?}, then serve {second_args:?}");
        let pins = PinDir::new("ring-e2e-size");
        let flows = pin(&pins, "flows");
        support::create_map(&flows, "hash", 4, 8, 4096, "flows");
        let maps = [map_arg("flows", &flows)];

        let mut first = Server::start_with(&pins, &maps, first_args);
        bpftool_writes(&flows, 1);
        converge(&first, "flows", &flows, &what);
        terminate(&mut first, &what);

        let mut second = Server::start_with(&pins, &maps, second_args);
        converge(&second, "flows", &flows, &what);
        bpftool_writes(&flows, 2);
        converge(&second, "flows", &flows, &what);

        let log = second.log();
        let warned: Vec<&String> = log
            .iter()
            .filter(|line| line.contains("already exists with another size"))
            .collect();
        assert_eq!(warned.len(), 1, "{what}: one size warning: {warned:?}");
        assert!(
            warned[0].contains(&format!("using {pinned} bytes")),
            "{what}: the warning names the ring's real size: {}",
            warned[0]
        );
        assert_eq!(
            count_lines(&second, "undecodable"),
            0,
            "{what}: every record decodes"
        );
        assert_eq!(
            count_lines(&second, "impossible ring buffer state"),
            0,
            "{what}: no reset"
        );
        let bytes = log_bytes(&second);
        assert!(
            bytes < LOG_BOUND,
            "{what}: {bytes} bytes of log (bound {LOG_BOUND})"
        );
        let took = terminate(&mut second, &what);
        eprintln!("{what}: log {bytes} bytes, exit {took:?} after SIGTERM");
    }
}

#[test]
fn a_forced_ring_reset_is_counted_logged_once_and_sigterm_still_exits_within_5_s() {
    if !support::require_kernel() {
        return;
    }
    let pins = PinDir::new("ring-e2e-reset");
    let flows = pin(&pins, "flows");
    support::create_map(&flows, "hash", 4, 8, 4096, "flows");
    let metrics_addr = format!("127.0.0.1:{}", common::free_port());
    let mut server = Server::start_with(
        &pins,
        &[map_arg("flows", &flows)],
        &["--metrics-listen", &metrics_addr],
    );
    let ring = RingPages::open(&pins.join("capture/mapsync_events"));
    bpftool_writes(&flows, 1);
    converge(&server, "flows", &flows, "before the reset");

    let resets = |n: f64| {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let metrics = scrape_metrics(&metrics_addr).expect("metrics answer");
            if metric(&metrics, "mapsync_ring_resets") >= n {
                return;
            }
            assert!(Instant::now() < deadline, "mapsync_ring_resets below {n}");
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    let reset_line = "impossible ring buffer state";
    // the consumer ahead of the producer: the kernel refuses every record
    // until mapsync notices and resets
    ring.set_consumer(ring.producer() + 4096);
    bpftool_writes(&flows, 2);
    resets(1.0);
    converge(&server, "flows", &flows, "after the reset");
    assert_eq!(count_lines(&server, reset_line), 1, "one line per reset");
    assert_eq!(count_lines(&server, "undecodable"), 0);

    // once more, misaligned this time, and SIGTERM as soon as it is counted
    // (its warning may be folded into the next one: one line per second)
    ring.set_consumer(ring.producer() - 4);
    bpftool_writes(&flows, 3);
    resets(2.0);
    let took = terminate(&mut server, "SIGTERM right after a reset");
    let bytes = log_bytes(&server);
    assert!(bytes < LOG_BOUND, "{bytes} bytes of log");
    eprintln!("reset: log {bytes} bytes, exit {took:?} after SIGTERM");
}
