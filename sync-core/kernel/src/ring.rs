//! mapsync's own consumer of the shared ring buffer (`BPF_MAP_TYPE_RINGBUF`).
//!
//! Why not aya's `RingBuf`: aya 0.14 sizes its mappings and its position mask
//! from the *object's* map definition (the loader's `map_max_entries`), not
//! from the kernel. A reused pin of another size is then read with the wrong
//! mask, and aya exposes no positions to validate or reset, so one bad
//! position makes it decode garbage forever. This consumer reads the ring's
//! real size from the kernel (`BPF_OBJ_GET_INFO_BY_FD`) and checks every
//! position and record length it reads against it.
//!
//! The layout is the kernel's (`kernel/bpf/ringbuf.c`): at offset 0 of the
//! map fd one page holding the consumer position (the only page user space
//! may write), then one page holding the producer position followed by the
//! data pages, mapped twice in a row so that a record that wraps around the
//! end is contiguous. Each record starts with an 8-byte header: a `u32`
//! length with a busy bit (reserved, not yet committed) and a discard bit,
//! then a `u32` page offset; records are padded to 8 bytes. Positions only
//! grow; `position & (size - 1)` is the offset in the data.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::error::KernelError;
use mapsync_core::map_info::MapKind;

mod check;
mod health;

use check::HEADER_BYTES;
pub use check::{BUSY_STALL, RecordStep, RingFault, check_positions, check_record};
pub(crate) use health::RingHealth;

/// `BPF_MAP_TYPE_RINGBUF`.
const MAP_TYPE_RINGBUF: u32 = 27;

/// A consumer position found impossible and moved to the producer position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingReset {
    /// What was impossible.
    pub fault: RingFault,
    /// The consumer position before the reset.
    pub consumer: u64,
    /// The producer position it was moved to.
    pub producer: u64,
}

/// What [`RingConsumer::read_next`] found.
#[derive(Debug)]
pub enum Next<'a> {
    /// A committed record; the consumer position passes it when dropped.
    Item(RingItem<'a>),
    /// Nothing to read now (caught up, or the next record is not committed).
    Empty,
    /// The positions were impossible and have been reset.
    Reset(RingReset),
}

/// One committed record, borrowed from the ring's memory. Dropping it
/// releases its space to producers.
#[derive(Debug)]
pub struct RingItem<'a> {
    data: &'a [u8],
    consumer_pos: &'a AtomicU64,
    next: u64,
}

impl std::ops::Deref for RingItem<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.data
    }
}

impl Drop for RingItem<'_> {
    fn drop(&mut self) {
        // release: our reads of the record happen before producers may
        // reuse its space
        self.consumer_pos.store(self.next, Ordering::Release);
    }
}

/// One `mmap`ed region, unmapped on drop.
#[derive(Debug)]
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mapping {
    fn new(fd: RawFd, len: usize, prot: libc::c_int, offset: usize) -> io::Result<Self> {
        let offset = libc::off_t::try_from(offset).map_err(io::Error::other)?;
        // SAFETY: a fresh shared mapping of a ring buffer map fd, at an
        // address the kernel chooses; nothing else refers to it yet.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                fd,
                offset,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr =
            NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap gave NULL"))?;
        Ok(Self { ptr, len })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the region was mapped by `Mapping::new` with this length and
        // every borrow of it ended with `&mut self`.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// The consumer side of the shared ring, sized from the kernel. Registers
/// with tokio's `AsyncFd` through its fd (readable when records are queued).
#[derive(Debug)]
pub struct RingConsumer {
    fd: OwnedFd,
    size: u64,
    page: usize,
    /// The consumer page, read-write.
    consumer: Mapping,
    /// The producer page and the data pages twice, read-only.
    producer: Mapping,
    /// The producer position last read: records before it are complete in
    /// extent (a reservation moves it past the whole record).
    producer_seen: u64,
    /// Where and since when the record at the consumer position is busy.
    busy_since: Option<(u64, Instant)>,
}

// SAFETY: the mappings are owned by the consumer and only touched through
// `&self`/`&mut self` with atomic loads and stores of the positions; moving
// it to another thread moves that ownership.
unsafe impl Send for RingConsumer {}

impl RingConsumer {
    /// Maps the ring buffer map `fd` (the pin at `path`, for error messages)
    /// with the size the kernel reports for it.
    pub fn new(fd: OwnedFd, path: &Path) -> Result<Self, KernelError> {
        let info = super::sys::map_info(fd.as_fd()).map_err(|source| KernelError::Syscall {
            op: "BPF_OBJ_GET_INFO_BY_FD (ring buffer)",
            source,
        })?;
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        let page = usize::try_from(page).unwrap_or(4096);
        let size = info.max_entries as usize;
        if info.map_type != MAP_TYPE_RINGBUF
            || !size.is_power_of_two()
            || !size.is_multiple_of(page)
        {
            return Err(KernelError::BadRing {
                path: path.to_path_buf(),
                kind: MapKind::from_raw(info.map_type),
                max_entries: info.max_entries,
            });
        }
        let host = |source| KernelError::Host {
            what: "mapping the ring buffer",
            source,
        };
        let consumer = Mapping::new(fd.as_raw_fd(), page, libc::PROT_READ | libc::PROT_WRITE, 0)
            .map_err(host)?;
        let producer =
            Mapping::new(fd.as_raw_fd(), page + 2 * size, libc::PROT_READ, page).map_err(host)?;
        let mut ring = Self {
            fd,
            size: size as u64,
            page,
            consumer,
            producer,
            producer_seen: 0,
            busy_since: None,
        };
        ring.producer_seen = ring.producer_pos();
        tracing::debug!(
            path = %path.display(), size, consumer = ring.consumer_pos().load(Ordering::Acquire),
            producer = ring.producer_seen, "ring buffer mapped"
        );
        Ok(ring)
    }

    /// The ring's data size in bytes, as the kernel reports it.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The consumer and producer positions now.
    pub fn positions(&self) -> (u64, u64) {
        (
            self.consumer_pos().load(Ordering::Acquire),
            self.producer_pos(),
        )
    }

    fn consumer_pos(&self) -> &AtomicU64 {
        // SAFETY: the consumer page is mapped for the consumer's lifetime,
        // page-aligned, and the kernel keeps `consumer_pos` (an unsigned
        // long) at its start.
        unsafe { &*self.consumer.ptr.as_ptr().cast::<AtomicU64>() }
    }

    fn producer_pos(&self) -> u64 {
        // SAFETY: as for the consumer page; the producer page comes first in
        // the second mapping. Acquire: pairs with the kernel's release store,
        // so record headers below it are visible.
        unsafe { &*self.producer.ptr.as_ptr().cast::<AtomicU64>() }.load(Ordering::Acquire)
    }

    /// The data at `position`, `len` bytes (within the double mapping).
    fn data(&self, position: u64, len: usize) -> &[u8] {
        let offset = (position & (self.size - 1)) as usize;
        debug_assert!(offset + len <= 2 * self.size as usize);
        // SAFETY: offset < size and len <= size (checked by `check_record`),
        // so the range lies within the data pages mapped twice after the
        // producer page; producers do not write a committed record's bytes
        // until the consumer position passes it.
        unsafe {
            std::slice::from_raw_parts(self.producer.ptr.as_ptr().add(self.page + offset), len)
        }
    }

    fn len_word(&self, position: u64) -> u32 {
        let offset = (position & (self.size - 1)) as usize;
        // SAFETY: the header lies within the data mapping (offset < size, 8
        // bytes, 8-aligned as the position is checked to be); acquire pairs
        // with the kernel's release store when it commits the record.
        unsafe {
            &*self
                .producer
                .ptr
                .as_ptr()
                .add(self.page + offset)
                .cast::<AtomicU32>()
        }
        .load(Ordering::Acquire)
    }

    /// The next committed record, if any; checks the positions and the
    /// record's length on the way and resets the consumer position when they
    /// are impossible. Discarded records are skipped.
    pub fn read_next(&mut self) -> Next<'_> {
        loop {
            let consumer = self.consumer_pos().load(Ordering::Acquire);
            if consumer >= self.producer_seen
                || check_positions(consumer, self.producer_seen, self.size).is_err()
            {
                self.producer_seen = self.producer_pos();
            }
            let producer = self.producer_seen;
            match check_positions(consumer, producer, self.size) {
                Err(fault) => return Next::Reset(self.reset(fault)),
                Ok(0) => return Next::Empty,
                Ok(_) => {}
            }
            match check_record(consumer, producer, self.size, self.len_word(consumer)) {
                Err(fault) => return Next::Reset(self.reset(fault)),
                Ok(RecordStep::Busy) => {
                    return match self.busy_since {
                        Some((at, since)) if at == consumer && since.elapsed() > BUSY_STALL => {
                            Next::Reset(self.reset(RingFault::StuckBusy { consumer }))
                        }
                        Some((at, _)) if at == consumer => Next::Empty,
                        _ => {
                            self.busy_since = Some((consumer, Instant::now()));
                            Next::Empty
                        }
                    };
                }
                Ok(RecordStep::Discarded { next }) => {
                    self.busy_since = None;
                    self.consumer_pos().store(next, Ordering::Release);
                }
                Ok(RecordStep::Sample { len, next }) => {
                    self.busy_since = None;
                    let data = self.data(consumer + HEADER_BYTES, len as usize);
                    return Next::Item(RingItem {
                        data,
                        consumer_pos: self.consumer_pos(),
                        next,
                    });
                }
            }
        }
    }

    /// Moves the consumer position to the producer's: everything queued is
    /// skipped (the caller resyncs what it mirrors).
    pub fn reset(&mut self, fault: RingFault) -> RingReset {
        let consumer = self.consumer_pos().load(Ordering::Acquire);
        let producer = self.producer_pos();
        self.consumer_pos().store(producer, Ordering::Release);
        self.producer_seen = producer;
        self.busy_since = None;
        RingReset {
            fault,
            consumer,
            producer,
        }
    }
}

impl RingConsumer {
    /// A readiness handle for the ring, registered with the reactor of the
    /// runtime this is called on (the ingest thread's): its fd is readable
    /// when records are queued. The handle owns a duplicate of the ring's fd,
    /// so it can live beside the consumer, which keeps reading through
    /// `&mut`.
    pub fn readiness(&self) -> Result<AsyncFd<OwnedFd>, KernelError> {
        let host = |source| KernelError::Host {
            what: "registering the ring buffer with tokio",
            source,
        };
        let fd = self.fd.try_clone().map_err(host)?;
        // SAFETY: the AsyncFd owns the duplicate it is registered with and
        // closes it only after deregistering.
        unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
            .map_err(|error| host(std::io::Error::other(error.to_string())))
    }
}

impl AsRawFd for RingConsumer {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// The pinned ring's size, if `path` names an existing pin; `None` when
/// nothing is pinned there yet.
pub fn pinned_ring_size(path: &Path) -> Result<Option<u32>, KernelError> {
    let fd = match super::sys::obj_get(path) {
        Ok(fd) => fd,
        Err(error) if error.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
        Err(source) => {
            return Err(KernelError::OpenPin {
                path: PathBuf::from(path),
                source,
            });
        }
    };
    if !super::sys::is_map_fd(fd.as_fd()) {
        return Err(KernelError::NotAMap {
            path: path.to_path_buf(),
        });
    }
    let info = super::sys::map_info(fd.as_fd()).map_err(|source| KernelError::Syscall {
        op: "BPF_OBJ_GET_INFO_BY_FD (pinned ring buffer)",
        source,
    })?;
    if info.map_type != MAP_TYPE_RINGBUF {
        return Err(KernelError::BadRing {
            path: path.to_path_buf(),
            kind: MapKind::from_raw(info.map_type),
            max_entries: info.max_entries,
        });
    }
    Ok(Some(info.max_entries))
}
