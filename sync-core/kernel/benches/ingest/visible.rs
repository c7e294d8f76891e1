//! Write -> visible: the time from just before one write until a counter
//! that the consumer advances moves (mapsync: the store's revision, set by
//! the publish; the bare consumer: its count of records read). The
//! measuring thread spins on the counter, for both alike, so neither figure
//! includes a hand-off to another thread: this is the moment a reader of
//! the mirror (or of the bare ring) can see the write.

use std::time::{Duration, Instant};

/// Gives up on a write after this long.
const GIVE_UP: Duration = Duration::from_secs(5);

/// Latency of `samples` single writes until `visible()` has moved past its
/// value before each; `pause` between samples.
pub fn latency(
    samples: usize,
    pause: Duration,
    visible: impl Fn() -> u64,
    mut write: impl FnMut(u64),
) -> Vec<Duration> {
    let mut latencies = Vec::with_capacity(samples);
    for i in 0..samples as u64 {
        if !pause.is_zero() {
            std::thread::sleep(pause);
        }
        let seen = visible();
        let before = Instant::now();
        write(i);
        while visible() == seen {
            assert!(
                before.elapsed() < GIVE_UP,
                "write {i} not visible after 5 s"
            );
            std::hint::spin_loop();
        }
        latencies.push(before.elapsed());
    }
    latencies
}

/// Times the reclaimer threads of this process (`mapsync-reclaim`, the
/// store's thread that frees replaced snapshots) went to sleep so far
/// (`voluntary_ctxt_switches`): each is a wakeup that competed for a CPU
/// with the ingest thread or the measuring one.
pub fn reclaimer_wakeups() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .flatten()
        .filter(|task| {
            std::fs::read_to_string(task.path().join("comm"))
                .is_ok_and(|comm| comm.trim() == "mapsync-reclaim")
        })
        .filter_map(|task| std::fs::read_to_string(task.path().join("status")).ok())
        .filter_map(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("voluntary_ctxt_switches:"))
                .and_then(|count| count.trim().parse::<u64>().ok())
        })
        .sum()
}
