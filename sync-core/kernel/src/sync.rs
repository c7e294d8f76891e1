//! [`MapSync`]: opens the maps, attaches capture, takes the initial dumps,
//! and runs the ingest task that keeps a [`Store`] following the kernel.

use std::collections::{HashMap, HashSet};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mapsync_ebpf::abi;
use tokio::sync::oneshot;
use tracing::Instrument;

use crate::error::KernelError;
use crate::ingest::{Ingest, Repair};
use crate::pin_dir::{self, PinDirLock};
use crate::stats::{StatsSnapshot, SyncStats};
use crate::{Capture, MapSpec, dump, open, sys};
use mapsync_core::SyncError;
use mapsync_core::changelog::LogLimits;
use mapsync_core::control::{self, COMMAND_QUEUE, CommandError, CommandHandle};
use mapsync_core::event::EventSource;
use mapsync_core::event::Revision;
use mapsync_core::store::Store;

/// Default bpffs directory of the shared capture maps.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/mapsync";

/// What to mirror and how.
#[derive(Debug, Clone)]
pub struct SyncConfig {
    /// The maps to mirror.
    pub maps: Vec<MapSpec>,
    /// bpffs directory where the shared ring, drop and sequence counters are
    /// pinned by name (default [`DEFAULT_PIN_DIR`]). Users' programs that
    /// include `mapsync.h` share the ring when loaded with this pin root.
    pub pin_dir: PathBuf,
    /// Size of the ring buffer when mapsync creates it (a power of two
    /// multiple of the page size; default 4 MiB). An existing pinned ring
    /// keeps its size.
    pub ring_bytes: u32,
    /// Bounds of the change log.
    pub log_limits: LogLimits,
    /// Compare every map with the kernel this often and repair differences
    /// (`None`: never). Default 30 s.
    pub reconcile_interval: Option<Duration>,
}

/// Whether a map is dumped by a walk at start: one the walk can dump
/// ([`dump::walk::walkable`]) and whose every write the capture sees, so
/// that a write during the walk, the one thing that can make it miss an
/// entry, sends the map to the batch lookups. Not an LRU map (the kernel
/// recycles its elements on inserts no hook sees) and not a map with a poll
/// interval (its configuration says it changes unseen).
fn walk_at_start(info: &mapsync_core::map_info::MapInfo, poll: Option<Duration>) -> bool {
    poll.is_none()
        && info.kind == mapsync_core::map_info::MapKind::Hash
        && dump::walk::walkable(info)
}

/// Prepares the walk dumps of the maps that allow one ([`dump::walk`]) on
/// a thread of their own, while the caller loads the capture: both parse
/// the kernel's BTF. `None` if there is no such map (or no thread).
fn prepare_walks(
    opened: &[(open::OpenMap, Option<Duration>, crate::MapSource)],
    scratch: &std::path::Path,
) -> Option<std::thread::JoinHandle<HashMap<u32, dump::walk::PreparedWalk>>> {
    let left = dump::walk::remove_leftover_pins(scratch);
    if left > 0 {
        tracing::info!(pins = left, "removed pins an interrupted walk dump left");
    }
    let maps: Vec<_> = opened
        .iter()
        .filter(|(map, poll, _)| walk_at_start(&map.info, *poll))
        .filter_map(|(map, ..)| Some((map.fd.try_clone().ok()?, map.info.clone())))
        .collect();
    if maps.is_empty() {
        return None;
    }
    let scratch = scratch.to_path_buf();
    let prepare = move || {
        let mut prepared = HashMap::new();
        for (fd, info) in maps {
            match dump::walk::prepare(fd.as_fd(), &info, &scratch) {
                Ok(walk) => {
                    prepared.insert(info.id, walk);
                }
                Err(error) => {
                    tracing::debug!(map = %info.name, %error, "no walk dump, batch lookups instead");
                }
            }
        }
        prepared
    };
    std::thread::Builder::new()
        .name("mapsync-walk".into())
        .spawn(prepare)
        .ok()
}

/// How long start waits after a walk dump for the records of writes made
/// during it (stamped at their syscall's exit) to reach the ring.
const WALK_SETTLE: Duration = Duration::from_millis(2);

/// Default period of the reconcile.
pub const DEFAULT_RECONCILE_INTERVAL: Duration = Duration::from_secs(30);

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            maps: Vec::new(),
            pin_dir: PathBuf::from(DEFAULT_PIN_DIR),
            ring_bytes: abi::RINGBUF_BYTES,
            log_limits: LogLimits::default(),
            reconcile_interval: Some(DEFAULT_RECONCILE_INTERVAL),
        }
    }
}

/// How long each phase of [`MapSync::start`] took (wall time).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StartPhases {
    /// Checking and locking the pin directory, opening the maps.
    pub open: Duration,
    /// Loading and attaching the capture (the syscall trace, the ring) and
    /// watching the maps.
    pub capture: Duration,
    /// The kernel dumps of every map.
    pub dump: Duration,
    /// Building the mirror's maps from the dumps.
    pub build: Duration,
    /// Applying what was captured during the dumps and re-reading the keys
    /// written meanwhile, up to ready.
    pub catch_up: Duration,
    /// How many maps were dumped by a walk ([`crate::dump::walk`]); the
    /// others by batch lookups.
    pub walks: usize,
}

/// A running sync: the store and the task that feeds it.
///
/// ```no_run
/// # async fn example() -> Result<(), mapsync_kernel::KernelError> {
/// use mapsync_kernel::{MapSpec, MapSync, SyncConfig};
///
/// let config = SyncConfig {
///     maps: vec![MapSpec::pin(None, "/sys/fs/bpf/my_map")],
///     ..SyncConfig::default()
/// };
/// // Returns once the initial dump of every map is in the mirror.
/// let sync = MapSync::start(config).await?;
/// let store = sync.store().clone();
/// // Lock-free, syscall-free read, never older than the propagation delay:
/// let value = store.load().map("my_map").and_then(|m| m.get(&[1, 0, 0, 0]).map(<[u8]>::to_vec));
/// # let _ = value;
/// sync.shutdown().await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct MapSync {
    store: Store,
    stats: Arc<SyncStats>,
    /// The ingest thread, joined once it has ended.
    thread: Option<std::thread::JoinHandle<()>>,
    /// The ingest task's result, sent when it ends.
    ended_rx: oneshot::Receiver<Result<(), KernelError>>,
    stop: Option<oneshot::Sender<()>>,
    /// The command channel into the ingest task.
    commands: CommandHandle,
    /// The ingest task's result, once [`MapSync::stopped`] has seen it end.
    ended: Option<Result<(), KernelError>>,
    /// How long start took, phase by phase.
    phases: StartPhases,
}

impl MapSync {
    /// Checks the pin directory is on bpffs and locks it (one instance per
    /// pin directory: [`KernelError::PinDirLocked`] names the holder's pid),
    /// opens every map (failing on the first one that cannot be mirrored, or
    /// on one map under two names), attaches the syscall trace, watches the maps *before* dumping them,
    /// dumps them, re-reads keys written while the dumps ran, marks the
    /// store ready and spawns the ingest task.
    pub async fn start(config: SyncConfig) -> Result<MapSync, KernelError> {
        let mut phases = StartPhases::default();
        let mut phase_start = Instant::now();
        let mut phase_end = |phase: &mut Duration| {
            let now = Instant::now();
            *phase += now - phase_start;
            phase_start = now;
        };
        // one instance per pin directory, checked before anything is loaded
        // (two would share the ring with separate read positions)
        pin_dir::check_bpffs(&config.pin_dir)?;
        std::fs::create_dir_all(&config.pin_dir).map_err(|source| KernelError::Host {
            what: "creating the pin directory",
            source,
        })?;
        let lock = PinDirLock::acquire(&config.pin_dir)?;
        let mut names = HashSet::new();
        // the map table is keyed by id: one map under two names would leave
        // one of them frozen at its initial dump
        let mut ids: HashMap<u32, String> = HashMap::new();
        let mut opened = Vec::with_capacity(config.maps.len());
        // switchable maps' outer map, shadow and version, by active inner id
        let mut switches = HashMap::new();
        for spec in &config.maps {
            let map = match &spec.source {
                crate::MapSource::Switch(outer_pin) => {
                    let (map, set) = crate::switch::adopt(&spec.name, outer_pin)?;
                    switches.insert(map.info.id, set);
                    map
                }
                _ => open::open(spec)?,
            };
            if !names.insert(map.info.name.clone()) {
                return Err(KernelError::DuplicateMap {
                    name: map.info.name,
                });
            }
            if let Some(first) = ids.insert(map.info.id, map.info.name.clone()) {
                return Err(KernelError::SameMapTwice {
                    id: map.info.id,
                    first,
                    second: map.info.name,
                });
            }
            opened.push((map, spec.poll_interval, spec.source.clone()));
        }
        phase_end(&mut phases.open);
        let preparing = prepare_walks(&opened, &config.pin_dir);
        let (capture, ring) = Capture::load(&config.pin_dir, config.ring_bytes)?;
        let seq_counters = sys::obj_get(&config.pin_dir.join(abi::SEQS_MAP)).map_err(|source| {
            KernelError::Host {
                what: "opening the pinned sequence counters",
                source,
            }
        })?;
        let (store, writer) = Store::new(config.log_limits);
        let stats = Arc::new(SyncStats::default());
        stats.reconciling.store(
            config.reconcile_interval.is_some(),
            std::sync::atomic::Ordering::Relaxed,
        );
        let mut ingest = Ingest::new(capture, ring, writer, stats.clone(), seq_counters)?;
        // capture first, then dump: a write made during the dump is either
        // in the dump or in the ring (DESIGN, "never stale", property 3)
        let mut prepared = preparing
            .and_then(|thread| thread.join().ok())
            .unwrap_or_default();
        let mut dumped = Vec::with_capacity(opened.len());
        // maps dumped by a walk, with when their walk began
        let mut walks: HashMap<u32, u64> = HashMap::new();
        for (map, poll_interval, source) in opened {
            ingest.capture.watch(&map.info)?;
            phase_end(&mut phases.capture);
            let walk = prepared.remove(&map.info.id);
            let (dump, walked) = dump::dump_at_start(map.fd.as_fd(), &map.info, walk)?;
            phase_end(&mut phases.dump);
            tracing::info!(
                map = %map.info.name, id = map.info.id, kind = %map.info.kind,
                entries = dump.entries.len(), walked, "initial dump"
            );
            if walked {
                walks.insert(map.info.id, dump.started_ns);
            }
            dumped.push((map, poll_interval, source, dump));
        }
        let mut windows = HashMap::new();
        for (map, poll_interval, source, dump) in dumped {
            windows.insert(map.info.id, (dump.started_ns, dump.ended_ns));
            let map_id = map.info.id;
            ingest.add_map(map, poll_interval, source, dump);
            if let Some(set) = switches.remove(&map_id) {
                ingest.attach_switch(map_id, set);
            }
        }
        phases.walks = walks.len();
        phase_end(&mut phases.build);
        // apply what was captured while dumping, then re-read every key
        // written during its map's dump: the order of a record and the
        // dump's read of the same key is unknown, the kernel's value is not
        let dumps_ended = windows.values().map(|(_, end)| *end).max().unwrap_or(0);
        // a write is stamped at its syscall's exit, just after it changed
        // the map: a walked map's writes during its walk may be stamped
        // just after it ended
        let settle = if walks.is_empty() {
            0
        } else {
            std::thread::sleep(WALK_SETTLE);
            WALK_SETTLE.as_nanos() as u64
        };
        let records = ingest.drain_until(dumps_ended + settle)?;
        // a walk holds no bucket lock, and the kernel reuses a replaced or
        // deleted element at once: a map written during its walk may lack
        // entries nobody wrote, so it is dumped again with the batch lookups
        let rewalk: std::collections::BTreeSet<u32> = records
            .iter()
            .filter(|record| {
                walks
                    .get(&record.header.map_id)
                    .is_some_and(|started| record.header.ts_ns >= *started)
            })
            .map(|record| record.header.map_id)
            .collect();
        let touched: HashSet<(u32, Bytes, EventSource)> = records
            .iter()
            .filter(|record| {
                windows
                    .get(&record.header.map_id)
                    .is_some_and(|(start, end)| (*start..=*end).contains(&record.header.ts_ns))
            })
            .map(|record| {
                (
                    record.header.map_id,
                    record.key.clone(),
                    EventSource::Resync,
                )
            })
            .collect();
        tracing::debug!(
            keys = touched.len(),
            "re-reading keys written during the dumps"
        );
        ingest.read_keys(touched.into_iter().collect())?;
        for map_id in rewalk {
            ingest.resync(map_id, Repair::Resync("written during its walk dump"))?;
        }
        ingest.resync_pending()?;
        ingest.writer.set_ready();
        phase_end(&mut phases.catch_up);
        tracing::info!(
            open_us = phases.open.as_micros() as u64,
            capture_us = phases.capture.as_micros() as u64,
            dump_us = phases.dump.as_micros() as u64,
            build_us = phases.build.as_micros() as u64,
            catch_up_us = phases.catch_up.as_micros() as u64,
            "ready"
        );
        let (stop, stopped) = oneshot::channel();
        let (commands, command_rx) = control::channel(COMMAND_QUEUE);
        let (ended_tx, ended_rx) = oneshot::channel();
        let reconcile_interval = config.reconcile_interval;
        let span = tracing::info_span!("ingest");
        // its own thread and runtime: a long dump or a ring that never
        // empties never takes a worker from the caller's runtime (the gRPC
        // server keeps answering), and shutdown does not wait on them
        let thread = std::thread::Builder::new()
            .name("mapsync-ingest".into())
            .spawn(move || {
                // the lock lives exactly as long as the thread that owns the
                // capture and reads the ring, however it ends
                let _lock = lock;
                let result = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|source| KernelError::Host {
                        what: "starting the ingest runtime",
                        source,
                    })
                    .and_then(|runtime| {
                        runtime.block_on(
                            ingest
                                .run(stopped, command_rx, reconcile_interval)
                                .instrument(span),
                        )
                    });
                if let Err(error) = &result {
                    tracing::error!(%error, "the ingest task stopped");
                }
                let _ = ended_tx.send(result);
            })
            .map_err(|source| KernelError::Host {
                what: "starting the ingest thread",
                source,
            })?;
        Ok(MapSync {
            store,
            stats,
            thread: Some(thread),
            ended_rx,
            stop: Some(stop),
            commands,
            ended: None,
            phases,
        })
    }

    /// How long [`MapSync::start`] took, phase by phase.
    pub fn start_phases(&self) -> StartPhases {
        self.phases
    }

    /// The mirror.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The ingest counters now.
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// The live ingest counters, for a metrics exporter to read at scrape time.
    pub fn stats_handle(&self) -> Arc<SyncStats> {
        self.stats.clone()
    }

    /// A full re-read of `map` (every map: `None`) from the kernel, made by
    /// the ingest task between two of its steps; returns the revision at
    /// which the mirror holds what was read (wait for it with
    /// [`Store::wait_for_revision`], or read a snapshot: it is already
    /// published). Errors: [`CommandError::UnknownMap`], or
    /// [`CommandError::Stopped`] once the task has ended.
    pub async fn resync(&self, map: Option<&str>) -> Result<Revision, CommandError> {
        self.commands.resync(map).await
    }

    /// A handle on the ingest task's command channel, for callers that
    /// outlive a borrow of this `MapSync` (a server's request handlers).
    pub fn commands(&self) -> CommandHandle {
        self.commands.clone()
    }

    /// Whether the ingest task is still running.
    pub fn is_running(&self) -> bool {
        self.thread
            .as_ref()
            .is_some_and(|thread| !thread.is_finished())
    }

    /// Resolves when the ingest task has stopped by itself, which only an
    /// error it cannot recover from does, with that error. From then on the
    /// mirror no longer follows the kernel: a server should stop serving it.
    /// Cancel-safe; [`MapSync::shutdown`] still returns the same result.
    pub async fn stopped(&mut self) -> &Result<(), KernelError> {
        if self.ended.is_none() {
            let result = (&mut self.ended_rx)
                .await
                .unwrap_or(Err(KernelError::Mirror(SyncError::Stopped)));
            self.ended = Some(result);
        }
        self.ended.as_ref().expect("set above")
    }

    /// Stops the ingest task and detaches capture, waiting at most
    /// [`SHUTDOWN_WAIT`] for it: the task sees the request between two
    /// bounded steps, but one step (a dump of a huge map) can take long. Past
    /// the wait the thread is left to finish on its own and this returns
    /// [`KernelError::ShutdownTimedOut`]; a process that exits then loses
    /// nothing (the kernel maps are the state).
    pub async fn shutdown(mut self) -> Result<(), KernelError> {
        if let Some(result) = self.ended.take() {
            self.join();
            return result;
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match tokio::time::timeout(SHUTDOWN_WAIT, &mut self.ended_rx).await {
            Ok(result) => {
                self.join();
                result.unwrap_or(Err(KernelError::Mirror(SyncError::Stopped)))
            }
            Err(_) => Err(KernelError::ShutdownTimedOut {
                waited: SHUTDOWN_WAIT,
            }),
        }
    }

    /// Joins the ingest thread once it has sent its result (it is then
    /// about to return: this does not block for long).
    fn join(&mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The longest [`MapSync::shutdown`] waits for the ingest task.
pub const SHUTDOWN_WAIT: Duration = Duration::from_secs(3);
