//! The ingest task: the one owner of the capture programs, the mirrored
//! maps' fds and the store's writer. It turns ring records into changes,
//! repairs what records cannot say (lost records, ambiguous batch calls,
//! dump races) by re-reading the kernel, and publishes.

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::error::KernelError;
use crate::gaps::SeqTracker;
use crate::pins::PinState;
use crate::ring::{RingConsumer, RingHealth};
use crate::stats::SyncStats;
use crate::switch::SwitchSet;
use crate::{Capture, MapSource, OpenMap, Record, dump, open, sys};
use mapsync_core::control::CommandReceiver;
use mapsync_core::event::EventSource;
use mapsync_core::map_info::MapInfo;
use mapsync_core::ratelimit::LogLimiter;
use mapsync_core::store::Dump;
use mapsync_core::store::{Change, Publisher};

mod batch;

use batch::Batch;

/// Most records applied (and published) as one batch.
pub(crate) const MAX_RECORDS_PER_BATCH: usize = 8192;
/// Ticks a sequence hole may stay open (reordering) before it is a loss.
const SEQ_GRACE_TICKS: u64 = 2;
/// Batches applied before the task yields to the runtime.
const DRAIN_BATCHES_PER_TURN: usize = 2;
/// How often the task checks the drop counters and polls the ring even
/// without a wakeup.
pub(crate) const TICK: Duration = Duration::from_millis(100);
/// How long after a dump ends the task waits before draining the ring up
/// to it: a record is stamped just after its write, so a write the dump read
/// may have its record committed a little after the dump's end.
const DUMP_SETTLE: Duration = Duration::from_millis(2);

/// A mirrored map as the ingest task holds it.
#[derive(Debug)]
pub(crate) struct Mirrored {
    pub(crate) info: MapInfo,
    pub(crate) name: Arc<str>,
    pub(crate) fd: OwnedFd,
    /// How often the map is polled (maps mutated in place, LRU maps).
    pub(crate) poll_interval: Option<Duration>,
    pub(crate) next_poll: Option<Instant>,
    /// Where the map was configured: a pin is re-checked every reconcile
    /// tick (`pins.rs`), an id names one map object for good.
    pub(crate) source: MapSource,
    /// What the last pin check found (logged once per change).
    pub(crate) pin: PinState,
    /// At most one "resync" line a second for this map (a flood that never
    /// ends resyncs it every tick).
    pub(crate) resync_log: LogLimiter,
    /// A switchable map's outer map, shadow and version (`fd` and `info`
    /// are then the active inner map's; see `switch.rs`).
    pub(crate) switch: Option<SwitchSet>,
}

/// Why a map is re-read in full.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Repair {
    /// Something was lost or could not be said: events are `resync`.
    Resync(&'static str),
    /// The periodic check: events are `resync`, counted as repairs.
    Reconcile,
    /// The map's poll interval: events are `poll`.
    Poll,
}

impl Repair {
    fn source(self) -> EventSource {
        match self {
            Repair::Resync(_) | Repair::Reconcile => EventSource::Resync,
            Repair::Poll => EventSource::Poll,
        }
    }
}

pub(crate) struct Ingest {
    pub(crate) capture: Capture,
    pub(crate) ring: RingConsumer,
    /// Undecodable runs, rate-limited warnings, the resync a reset owes.
    pub(crate) ring_health: RingHealth,
    pub(crate) writer: Publisher,
    pub(crate) maps: HashMap<u32, Mirrored>,
    pub(crate) stats: Arc<SyncStats>,
    pub(crate) last_drops: u64,
    pub(crate) seqs: SeqTracker,
    pub(crate) ticks: u64,
    /// The shared per-CPU sequence counters (`mapsync_seqs`).
    pub(crate) seq_counters: OwnedFd,
    /// Maps that records asked to be resynced, done after the drain.
    pub(crate) pending_resyncs: HashSet<u32>,
    /// At most one "records lost" line per second while losses go on.
    pub(crate) loss_log: LogLimiter,
    /// Records dropped and holes found since the last "records lost" line.
    pub(crate) lost_since_log: (u64, u64),
    /// The buffers of the batch being read and applied (`batch.rs`).
    pub(crate) batch: Batch,
}

impl Ingest {
    /// The task's state once capture is attached, before any map is added:
    /// the kernel's drop count now is the baseline of loss detection.
    pub(crate) fn new(
        capture: Capture,
        ring: RingConsumer,
        writer: Publisher,
        stats: Arc<SyncStats>,
        seq_counters: OwnedFd,
    ) -> Result<Self, KernelError> {
        let last_drops = capture.drops()?;
        stats
            .ring_bytes
            .store(ring.size(), std::sync::atomic::Ordering::Relaxed);
        Ok(Self {
            capture,
            ring,
            ring_health: RingHealth::new(TICK),
            writer,
            maps: HashMap::new(),
            stats,
            last_drops,
            seqs: SeqTracker::default(),
            ticks: 0,
            seq_counters,
            pending_resyncs: HashSet::new(),
            loss_log: LogLimiter::default(),
            lost_since_log: (0, 0),
            batch: Batch::default(),
        })
    }

    /// Publishes a map's initial dump and starts following the map (its
    /// capture watch must already be in place, set before the dump).
    pub(crate) fn add_map(
        &mut self,
        map: OpenMap,
        poll_interval: Option<Duration>,
        source: MapSource,
        dump: Dump,
    ) {
        self.writer
            .add_dump(map.info.clone(), dump.entries, dump.started_ns);
        let name: Arc<str> = map.info.name.as_str().into();
        self.stats.add_map(&name, poll_interval);
        self.maps.insert(
            map.info.id,
            Mirrored {
                info: map.info,
                name,
                fd: map.fd,
                poll_interval,
                next_poll: poll_interval.map(|every| Instant::now() + every),
                source,
                pin: PinState::Current,
                resync_log: LogLimiter::default(),
                switch: None,
            },
        );
    }

    /// Makes the map added under `map_id` (its active inner map) the
    /// switchable map `set` belongs to, and publishes its live version.
    pub(crate) fn attach_switch(&mut self, map_id: u32, set: SwitchSet) {
        if let Some(map) = self.maps.get_mut(&map_id) {
            let version = set.version;
            map.switch = Some(set);
            let info = map.info.clone();
            // the mirror's own content: no difference, only the version
            let current: Vec<(Bytes, Bytes)> = self
                .writer
                .store()
                .load()
                .map(&info.name)
                .map(|view| {
                    view.iter()
                        .map(|(key, entry)| (Bytes::copy_from_slice(key), entry.value_bytes()))
                        .collect()
                })
                .unwrap_or_default();
            self.writer
                .apply_switch(info, current, sys::monotonic_ns(), version);
        }
    }

    /// Makes the resync of every map that a ring reset owes, when it is due
    /// (at most one per tick, however often the ring is reset).
    fn after_reset(&mut self) -> Result<(), KernelError> {
        if self.ring_health.take_resync(Instant::now()) {
            // records the kernel dropped so far (a consumer position ahead of
            // the producer makes it refuse them all) are covered by this
            // resync: count them here rather than resync again for them
            let drops = self.capture.drops()?;
            SyncStats::add(&self.stats.drops, drops.saturating_sub(self.last_drops));
            self.last_drops = drops.max(self.last_drops);
            self.resync_all("the ring buffer was reset")?;
        }
        Ok(())
    }

    /// Applies records until the ring is empty or a batch ends with a record
    /// produced after `until_ns`, and returns the records with a timestamp
    /// up to `until_ns` (used at start-up to find keys written during the
    /// dumps, while writers may keep the ring busy).
    pub(crate) fn drain_until(&mut self, until_ns: u64) -> Result<Vec<Record>, KernelError> {
        let mut early = Vec::new();
        self.drain_through(until_ns, Some(&mut early))?;
        Ok(early)
    }

    /// [`Ingest::drain_until`], keeping the early records in `early` when
    /// asked (copies: the applied records' buffers move into the store).
    fn drain_through(
        &mut self,
        until_ns: u64,
        mut early: Option<&mut Vec<Record>>,
    ) -> Result<(), KernelError> {
        loop {
            let more = self.read_ring();
            let records = &self.batch.records;
            let past = records
                .last()
                .is_none_or(|last| last.header.ts_ns > until_ns);
            if let Some(early) = early.as_deref_mut() {
                // clones share the batch's arena: no copy
                early.extend(
                    records
                        .iter()
                        .filter(|r| r.header.ts_ns <= until_ns)
                        .cloned(),
                );
            }
            if !records.is_empty() {
                self.handle()?;
            }
            self.after_reset()?;
            if past || !more {
                return Ok(());
            }
        }
    }

    /// Applies up to `max_batches` batches of records; returns whether the
    /// ring may hold more.
    fn drain(&mut self, max_batches: usize) -> Result<bool, KernelError> {
        for _ in 0..max_batches {
            let more = self.read_ring();
            let (consumer, producer) = self.ring.positions();
            self.stats.ring_used_bytes.store(
                producer.saturating_sub(consumer),
                std::sync::atomic::Ordering::Relaxed,
            );
            if !self.batch.records.is_empty() {
                self.handle()?;
            }
            self.after_reset()?;
            if !more {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Resyncs the maps that records asked for (RESYNC records, keys of the
    /// wrong size) since the last call.
    pub(crate) fn resync_pending(&mut self) -> Result<(), KernelError> {
        while let Some(&map_id) = self.pending_resyncs.iter().next() {
            self.pending_resyncs.remove(&map_id);
            self.resync(
                map_id,
                Repair::Resync("a record could not say what changed"),
            )?;
        }
        Ok(())
    }

    /// Re-reads keys from the kernel and applies what it holds now, as
    /// changes seen by `source`.
    pub(crate) fn read_keys(
        &mut self,
        keys: Vec<(u32, Bytes, EventSource)>,
    ) -> Result<(), KernelError> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut changes = Vec::with_capacity(keys.len());
        for (map_id, key, source) in keys {
            let Some(map) = self.maps.get(&map_id) else {
                continue;
            };
            let (value, observed_ns) = dump::read_key(map.fd.as_fd(), &map.info, &key)?;
            // a key found gone may be kept as a tombstone: not as a slice
            // pinning a whole arena chunk of the batch it came in
            let key = match value {
                None => Bytes::copy_from_slice(&key),
                Some(_) => key,
            };
            changes.push(Change {
                map: map.name.clone(),
                key,
                value,
                source,
                observed_ns,
            });
        }
        let before = self.writer.store().revision();
        self.writer.apply(changes);
        self.stats
            .count_published(&self.writer.store().load(), before);
        Ok(())
    }

    /// Re-dumps one map, applies the difference as ordinary events (source
    /// `resync` or `poll`), and returns how many changes that made.
    ///
    /// Records written before the dump's reads may still be in the ring when
    /// it ends. They are applied first (the ring is drained up to the dump's
    /// end plus [`DUMP_SETTLE`]), so that the diff compares the dump with a
    /// mirror that already holds them, and the per-key observed-time rule
    /// then keeps whichever is newer. Diffing first would "repair" what a
    /// queued record was about to say and deliver that write twice.
    pub(crate) fn resync(&mut self, map_id: u32, repair: Repair) -> Result<u64, KernelError> {
        let Some(map) = self.maps.get(&map_id) else {
            return Ok(0);
        };
        // a span per resync and reconcile (exported with --otlp-endpoint); a
        // poll's, every interval, only at debug
        let _span = match repair {
            Repair::Poll => tracing::debug_span!("poll", map = %map.name),
            _ => tracing::info_span!("resync", map = %map.name, periodic = matches!(repair, Repair::Reconcile)),
        }
        .entered();
        let started = Instant::now();
        let dump = dump::dump(map.fd.as_fd(), &map.info)?;
        let name = map.name.clone();
        let dumped = started.elapsed();
        // a record is stamped just after its write: give the producers of
        // writes the dump may have read the time to commit their records
        std::thread::sleep(DUMP_SETTLE);
        self.drain_through(dump.ended_ns + DUMP_SETTLE.as_nanos() as u64, None)?;
        let drained = started.elapsed();
        let before = self.writer.store().revision();
        let after = self.writer.apply_dump(&name, dump, repair.source());
        let repaired = after - before;
        self.stats
            .count_events(&name, repair.source(), repaired, after);
        self.stats.count_resync(
            &name,
            matches!(repair, Repair::Resync(_)),
            if matches!(repair, Repair::Reconcile) {
                repaired
            } else {
                0
            },
        );
        let took = started.elapsed();
        match repair {
            Repair::Resync(why) => {
                SyncStats::add(&self.stats.resyncs, 1);
                let Some(not_logged) = self
                    .maps
                    .get_mut(&map_id)
                    .and_then(|map| map.resync_log.check())
                else {
                    return Ok(repaired);
                };
                tracing::info!(
                    map = %name, why, repaired, resyncs_not_logged = not_logged,
                    dump_us = dumped.as_micros() as u64,
                    drain_us = (drained - dumped).as_micros() as u64,
                    apply_us = (took - drained).as_micros() as u64,
                    "resync"
                );
            }
            Repair::Reconcile => {
                SyncStats::add(&self.stats.reconcile_repairs, repaired);
                if repaired > 0 {
                    tracing::warn!(map = %name, repaired, "reconcile found the mirror behind the kernel");
                }
            }
            Repair::Poll => {
                SyncStats::add(&self.stats.polled_changes, repaired);
            }
        }
        Ok(repaired)
    }

    /// Resyncs every map: something was lost whose map is unknown.
    ///
    /// The per-CPU sequence counters are read before the first dump starts:
    /// every record numbered up to them is of a write the dumps hold, so the
    /// holes such records leave are covered, not a second loss.
    pub(crate) fn resync_all(&mut self, why: &'static str) -> Result<(), KernelError> {
        match self.capture_seqs() {
            Ok(counters) => {
                for (cpu, seq) in counters.into_iter().enumerate() {
                    self.seqs.cover_through(cpu as u32, seq);
                }
            }
            Err(error) => tracing::debug!(%error, "cannot read the sequence counters"),
        }
        let ids: Vec<u32> = self.maps.keys().copied().collect();
        for map_id in ids {
            self.resync(map_id, Repair::Resync(why))?;
        }
        self.pending_resyncs.clear();
        Ok(())
    }

    /// The shared per-CPU sequence counters now (the last number each CPU
    /// handed out).
    fn capture_seqs(&self) -> Result<Vec<u64>, KernelError> {
        let cpus = open::possible_cpus()?;
        let mut value = vec![0u8; cpus * 8];
        sys::lookup(self.seq_counters.as_fd(), &0u32.to_ne_bytes(), &mut value).map_err(
            |source| KernelError::Syscall {
                op: "BPF_MAP_LOOKUP_ELEM",
                source,
            },
        )?;
        Ok(value
            .chunks_exact(8)
            .map(|slot| u64::from_ne_bytes(slot.try_into().expect("8 bytes")))
            .collect())
    }

    /// Compares every map with the kernel and repairs any difference.
    fn reconcile(&mut self) -> Result<(), KernelError> {
        self.check_pins()?;
        let ids: Vec<u32> = self.maps.keys().copied().collect();
        let mut repaired = 0;
        for map_id in ids {
            repaired += self.resync(map_id, Repair::Reconcile)?;
        }
        SyncStats::add(&self.stats.reconciles, 1);
        tracing::info!(maps = self.maps.len(), repaired, "reconcile");
        Ok(())
    }

    /// Polls the maps whose poll interval has come.
    fn poll_due(&mut self, now: Instant) -> Result<(), KernelError> {
        let due: Vec<u32> = self
            .maps
            .iter()
            .filter(|(_, map)| map.next_poll.is_some_and(|at| at <= now))
            .map(|(id, _)| *id)
            .collect();
        for map_id in due {
            self.resync(map_id, Repair::Poll)?;
            if let Some(map) = self.maps.get_mut(&map_id) {
                // from the time it was due, so polls keep their period instead
                // of slipping by the wake-up delay; a poll that fell a whole
                // period behind starts over from now
                map.next_poll = map.poll_interval.zip(map.next_poll).map(|(every, due)| {
                    let next = due + every;
                    if next > now { next } else { now + every }
                });
            }
        }
        Ok(())
    }

    /// Resyncs every map when records were lost: the kernel's drop counters
    /// rose, or a sequence hole stayed open past the grace period (the lost
    /// record's map is unknown, so every map is resynced). Called once per
    /// tick, also while the ring overflows, so a flood that never ends
    /// keeps the mirror within one tick plus one round of dumps of the kernel.
    fn check_loss(&mut self) -> Result<(), KernelError> {
        self.ticks += 1;
        let drops = self.capture.drops()?;
        let dropped = drops.saturating_sub(self.last_drops);
        self.last_drops = drops.max(self.last_drops);
        let holes = self.seqs.take_lost(self.ticks, SEQ_GRACE_TICKS);
        SyncStats::add(&self.stats.drops, dropped);
        SyncStats::add(&self.stats.seq_gaps, holes);
        if dropped > 0 || holes > 0 {
            self.lost_since_log.0 += dropped;
            self.lost_since_log.1 += holes;
            if let Some(suppressed) = self.loss_log.check() {
                let (dropped, holes) = std::mem::take(&mut self.lost_since_log);
                tracing::warn!(
                    dropped,
                    holes,
                    resyncs_not_logged = suppressed,
                    "change records lost, resyncing every map"
                );
            }
            self.resync_all("records lost")?;
        }
        Ok(())
    }

    /// What one tick does: drain a turn, detect loss, poll.
    fn on_tick(&mut self) -> Result<(), KernelError> {
        self.drain(DRAIN_BATCHES_PER_TURN)?;
        let started = Instant::now();
        self.check_loss()?;
        self.resync_pending()?;
        self.poll_due(Instant::now())?;
        // a quiet mirror folds its recent changes into the flat base
        self.writer.tidy();
        self.stats.phases.add(crate::phases::Phase::Tick, started);
        Ok(())
    }

    /// Follows the ring until `shutdown` fires or an error stops it, and
    /// serves the requests of `commands` (`commands.rs`).
    ///
    /// Every turn of the loop does a bounded amount of work (one drain turn
    /// of at most [`DRAIN_BATCHES_PER_TURN`] batches, one tick, or one
    /// command) and then
    /// looks at `shutdown` and the timers first: a ring that never empties
    /// starves neither the loss check nor shutdown.
    pub(crate) async fn run(
        mut self,
        mut shutdown: oneshot::Receiver<()>,
        mut commands: CommandReceiver,
        reconcile_every: Option<Duration>,
    ) -> Result<(), KernelError> {
        // registered with the runtime this runs on (the ingest thread's)
        let readiness = self.ring.readiness()?;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // a disabled reconcile still needs a timer to select on: a far one
        let period = reconcile_every.unwrap_or(Duration::from_secs(365 * 24 * 3600));
        let mut reconcile = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        reconcile.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // whether the ring may hold records not read yet (its wakeup only
        // comes when the consumer has caught up)
        let mut pending = true;
        // false once every command handle is gone
        let mut commands_open = true;
        // the poll source has its own timer: a poll interval shorter than the
        // tick (or not a multiple of it) is kept. One timer for the task's
        // life, moved only when the earliest poll changes (a new timer per
        // turn registered and cancelled a timer entry on every wakeup);
        // `armed` is the deadline it is set to, `None` once it fired
        let poll_timer = tokio::time::sleep(TICK);
        tokio::pin!(poll_timer);
        let mut armed: Option<Instant> = None;
        loop {
            let next_poll = self.maps.values().filter_map(|map| map.next_poll).min();
            if next_poll != armed {
                if let Some(at) = next_poll {
                    poll_timer
                        .as_mut()
                        .reset(tokio::time::Instant::from_std(at));
                }
                armed = next_poll;
            }
            tokio::select! {
                biased;
                _ = &mut shutdown => return Ok(()),
                _ = tick.tick() => self.on_tick()?,
                () = &mut poll_timer, if armed.is_some() => {
                    armed = None;
                    self.poll_due(Instant::now())?;
                }
                _ = reconcile.tick(), if reconcile_every.is_some() => self.reconcile()?,
                // one command per turn: a queue of them starves nothing else
                request = commands.recv(), if commands_open => match request {
                    Some(request) => self.serve(request)?,
                    None => commands_open = false,
                },
                ready = readiness.readable(), if !pending => {
                    let mut guard = ready.map_err(|source| KernelError::Host { what: "polling the ring buffer", source })?;
                    // clear before draining: a wakeup racing the drain is not lost
                    guard.clear_ready();
                    // drain in this turn: the records the wakeup announced
                    // are published without another trip round the loop
                    pending = self.drain(DRAIN_BATCHES_PER_TURN)?;
                    self.resync_pending()?;
                }
                _ = std::future::ready(()), if pending => {
                    pending = self.drain(DRAIN_BATCHES_PER_TURN)?;
                    self.resync_pending()?;
                    if pending {
                        tokio::task::yield_now().await;
                    }
                }
            }
        }
    }
}
