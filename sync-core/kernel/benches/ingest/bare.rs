//! The reference the ingest figures are compared with: a bare consumer of
//! the same kind of ring, fed by the same producer in the same run.
//!
//! It runs like the ingest task (its own thread, a current-thread runtime,
//! woken by the ring's readiness, re-checked every 100 ms), reads every
//! record, decodes its header and counts it: no routing, no store, no
//! subscription. What the real path adds on top of this is what ingest costs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mapsync_ebpf::abi::RecordHeader;
use mapsync_kernel::ring::{Next, RingConsumer};

/// How long the consumer waits for a wakeup before looking again (the
/// ingest task's tick).
const RECHECK: Duration = Duration::from_millis(100);

/// A running bare consumer.
pub struct BareConsumer {
    received: Arc<AtomicU64>,
    /// Nanoseconds spent reading records (from the first read after a
    /// wakeup to the read that found the ring empty), the bare counterpart
    /// of the ingest task's ring phase.
    busy_ns: Arc<AtomicU64>,
    /// Whether arrivals are timestamped (latency runs only).
    stamping: Arc<AtomicBool>,
    arrivals: mpsc::Receiver<Instant>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BareConsumer {
    /// Starts consuming `ring` on a thread of its own.
    pub fn start(mut ring: RingConsumer) -> Self {
        let received = Arc::new(AtomicU64::new(0));
        let busy_ns = Arc::new(AtomicU64::new(0));
        let busy = busy_ns.clone();
        let stamping = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (arrived, arrivals) = mpsc::channel();
        let (counter, stamps, stopping) = (received.clone(), stamping.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("bare-ring".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime for the bare consumer");
                runtime.block_on(async move {
                    let readiness = ring.readiness().expect("the ring's readiness");
                    // a sum of the headers' fields, so the decode is not optimized out
                    let mut checksum = 0u64;
                    while !stopping.load(Ordering::Relaxed) {
                        let mut count = 0u64;
                        let started = Instant::now();
                        loop {
                            match ring.read_next() {
                                Next::Item(item) => {
                                    let header =
                                        RecordHeader::parse(&item).expect("a whole record header");
                                    checksum = checksum
                                        .wrapping_add(header.seq ^ u64::from(header.key_size));
                                    count += 1;
                                }
                                Next::Empty => break,
                                Next::Reset(reset) => panic!("bare consumer: {reset:?}"),
                            }
                        }
                        if count > 0 {
                            busy.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
                            if stamps.load(Ordering::Relaxed) {
                                let now = Instant::now();
                                for _ in 0..count {
                                    let _ = arrived.send(now);
                                }
                            }
                            counter.fetch_add(count, Ordering::Release);
                            continue;
                        }
                        if let Ok(ready) = tokio::time::timeout(RECHECK, readiness.readable()).await
                        {
                            // clear before draining: a wakeup racing the drain is not lost
                            ready.expect("polling the ring").clear_ready();
                        }
                    }
                    std::hint::black_box(checksum);
                });
            })
            .expect("spawn the bare consumer");
        Self {
            received,
            busy_ns,
            stamping,
            arrivals,
            stop,
            thread: Some(thread),
        }
    }

    /// Records read so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Acquire)
    }

    /// Nanoseconds spent reading records so far.
    pub fn busy_ns(&self) -> u64 {
        self.busy_ns.load(Ordering::Relaxed)
    }

    /// Turns arrival timestamps on or off, dropping stale ones.
    pub fn stamp(&self, on: bool) {
        self.stamping.store(on, Ordering::Relaxed);
        while self.arrivals.try_recv().is_ok() {}
    }

    /// The next record's arrival time.
    pub fn next_arrival(&self) -> Instant {
        self.arrivals
            .recv_timeout(Duration::from_secs(5))
            .expect("the write's record arrives")
    }
}

impl Drop for BareConsumer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
