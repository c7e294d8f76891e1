//! mapsync's capture programs: loading the syscall-trace object, attaching
//! it, choosing which maps it watches, and reading the shared ring buffer.
//!
//! The trace also ignores one thread, named with
//! [`Capture::quiet_current_thread`]: mapsync's own writer (the ingest
//! thread), whose writes the write path publishes itself.

use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;

use aya::maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray};
use aya::programs::TracePoint;
use aya::{Ebpf, EbpfLoader};
use mapsync_ebpf::abi::{self, WatchEntry};

use super::ring::{self, RingConsumer};
use crate::error::KernelError;
use mapsync_core::map_info::MapInfo;

/// Where the running kernel's BTF is read from (aya's `Btf::from_sys_fs`).
const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Name of the trace object's private map naming the thread it ignores
/// (`struct mapsync_quiet` in `trace.bpf.c`; not pinned).
pub const QUIET_MAP: &str = "mapsync_quiet";

/// `struct mapsync_quiet`: the pid namespace's nsfs device and inode, the
/// thread id in that namespace, padding.
type QuietEntry = [u8; 24];

/// The loaded and attached syscall-trace object and the shared maps.
pub struct Capture {
    /// Keeps programs, links and private maps alive.
    _ebpf: Ebpf,
    watched: BpfHashMap<MapData, u32, [u8; 8]>,
    drops: PerCpuArray<MapData, u64>,
    quiet: Array<MapData, QuietEntry>,
    /// The thread id written into `quiet`, once written.
    quiet_tid: Option<i32>,
}

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capture").finish_non_exhaustive()
    }
}

impl Capture {
    /// Loads the trace object with its shared maps pinned by name under
    /// `pin_dir` (created if missing; existing pins are reused, so that
    /// users' emit programs loaded with the same pin root share the ring),
    /// and attaches the tracepoints. `ring_bytes` sizes a newly created ring;
    /// an existing pinned ring keeps its size (a warning says so), and the
    /// returned consumer uses the size the kernel reports.
    /// Returns the capture and the consumer of the shared ring every
    /// producer writes into.
    pub fn load(pin_dir: &Path, ring_bytes: u32) -> Result<(Self, RingConsumer), KernelError> {
        std::fs::create_dir_all(pin_dir).map_err(|source| KernelError::Host {
            what: "creating the pin directory",
            source,
        })?;
        let ring_pin = pin_dir.join(abi::EVENTS_MAP);
        // the loader reuses an existing pin whatever the object says: give it
        // the pinned ring's real size, so nothing believes the requested one
        let ring_bytes = match ring::pinned_ring_size(&ring_pin)? {
            Some(actual) if actual != ring_bytes => {
                tracing::warn!(
                    pin = %ring_pin.display(),
                    requested = ring_bytes,
                    actual,
                    "the pinned ring buffer already exists with another size and keeps it: using {actual} bytes, not the requested {ring_bytes}; to resize it, stop every producer and remove the pins under {}",
                    pin_dir.display()
                );
                actual
            }
            Some(actual) => actual,
            None => ring_bytes,
        };
        // the loader parses the kernel's BTF itself (`EbpfLoader::new`, some
        // 20 ms): parsing it here as well would double that, so only check
        // that it is there, for a clear error
        let vmlinux = Path::new(VMLINUX_BTF);
        if let Err(source) = std::fs::metadata(vmlinux) {
            return Err(KernelError::Host {
                what: "reading kernel BTF at /sys/kernel/btf/vmlinux",
                source,
            });
        }
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(pin_dir)
            .map_max_entries(abi::EVENTS_MAP, ring_bytes)
            .load(mapsync_ebpf::TRACE_OBJECT)?;
        for (program, tracepoint) in mapsync_ebpf::TRACE_PROGRAMS {
            let trace: &mut TracePoint = ebpf
                .program_mut(program)
                .ok_or_else(|| KernelError::MissingInObject {
                    what: "program",
                    name: program.into(),
                })?
                .try_into()
                .map_err(|source| KernelError::Program {
                    program: program.into(),
                    source,
                })?;
            trace.load().map_err(|source| KernelError::Program {
                program: program.into(),
                source,
            })?;
            trace
                .attach(mapsync_ebpf::TRACE_CATEGORY, tracepoint)
                .map_err(|source| KernelError::Program {
                    program: program.into(),
                    source,
                })?;
        }
        let watched =
            BpfHashMap::try_from(take_map(&mut ebpf, abi::WATCHED_MAP)?).map_err(|source| {
                KernelError::Map {
                    map: abi::WATCHED_MAP.into(),
                    source,
                }
            })?;
        let drops =
            PerCpuArray::try_from(take_map(&mut ebpf, abi::DROPS_MAP)?).map_err(|source| {
                KernelError::Map {
                    map: abi::DROPS_MAP.into(),
                    source,
                }
            })?;
        let quiet = Array::try_from(take_map(&mut ebpf, QUIET_MAP)?).map_err(|source| {
            KernelError::Map {
                map: QUIET_MAP.into(),
                source,
            }
        })?;
        // our own consumer maps the ring through a duplicate of the fd the
        // programs were loaded with; the map stays in the object
        let ring_fd = match ebpf.map(abi::EVENTS_MAP) {
            Some(aya::maps::Map::RingBuf(data)) => {
                data.fd()
                    .as_fd()
                    .try_clone_to_owned()
                    .map_err(|source| KernelError::Host {
                        what: "duplicating the ring buffer's fd",
                        source,
                    })?
            }
            _ => {
                return Err(KernelError::MissingInObject {
                    what: "ring buffer map",
                    name: abi::EVENTS_MAP.into(),
                });
            }
        };
        let ring = RingConsumer::new(ring_fd, &ring_pin)?;
        tracing::info!(pin_dir = %pin_dir.display(), ring_fd = ring.as_raw_fd(), ring_bytes = ring.size(), "syscall trace attached");
        Ok((
            Self {
                _ebpf: ebpf,
                watched,
                drops,
                quiet,
                quiet_tid: None,
            },
            ring,
        ))
    }

    /// Starts tracing `bpf()` writes to the map.
    pub fn watch(&mut self, info: &MapInfo) -> Result<(), KernelError> {
        let entry = WatchEntry {
            key_size: info.key_size,
            value_size: info.value_bytes,
        };
        self.watched
            .insert(info.id, entry.to_bytes(), 0)
            .map_err(|source| match source {
                aya::maps::MapError::SyscallError(ref error)
                    if error.io_error.raw_os_error() == Some(libc::E2BIG) =>
                {
                    KernelError::TooManyMaps {
                        max: abi::WATCHED_MAX,
                    }
                }
                source => KernelError::Map {
                    map: abi::WATCHED_MAP.into(),
                    source,
                },
            })
    }

    /// Stops tracing writes to the map.
    pub fn unwatch(&mut self, map_id: u32) {
        let _ = self.watched.remove(&map_id);
    }

    /// Makes the trace ignore every `bpf()` call of the calling thread from
    /// now on (and stop ignoring the thread named before, if another): the
    /// writer's own writes are published by the write path, never by the
    /// trace. Only one thread is quiet at a time; calling again from the same
    /// thread costs no syscall. The thread is named by its id in its own pid
    /// namespace, so this holds inside a container too.
    pub fn quiet_current_thread(&mut self) -> Result<(), KernelError> {
        use std::os::unix::fs::MetadataExt;
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        if self.quiet_tid == Some(tid) {
            return Ok(());
        }
        let ns = std::fs::metadata("/proc/self/ns/pid").map_err(|source| KernelError::Host {
            what: "reading the pid namespace of /proc/self/ns/pid",
            source,
        })?;
        let mut entry = [0u8; 24];
        entry[0..8].copy_from_slice(&ns.dev().to_ne_bytes());
        entry[8..16].copy_from_slice(&ns.ino().to_ne_bytes());
        entry[16..20].copy_from_slice(&(tid as u32).to_ne_bytes());
        self.quiet
            .set(0, entry, 0)
            .map_err(|source| KernelError::Map {
                map: QUIET_MAP.into(),
                source,
            })?;
        self.quiet_tid = Some(tid);
        tracing::debug!(tid, "the syscall trace ignores this thread's writes");
        Ok(())
    }

    /// Records lost so far because the ring was full, summed over CPUs.
    pub fn drops(&self) -> Result<u64, KernelError> {
        let per_cpu = self.drops.get(&0, 0).map_err(|source| KernelError::Map {
            map: abi::DROPS_MAP.into(),
            source,
        })?;
        Ok(per_cpu.iter().sum())
    }
}

fn take_map(ebpf: &mut Ebpf, name: &str) -> Result<aya::maps::Map, KernelError> {
    ebpf.take_map(name)
        .ok_or_else(|| KernelError::MissingInObject {
            what: "map",
            name: name.into(),
        })
}
