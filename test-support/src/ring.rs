//! Reading and writing a pinned ring buffer's positions from a test, the way
//! a buggy or hostile consumer could: through the ring's own mmap.

use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// The consumer page (read-write) and the producer page (read-only) of a
/// pinned ring buffer, unmapped when dropped.
#[derive(Debug)]
pub struct RingPages {
    consumer: *mut libc::c_void,
    producer: *mut libc::c_void,
    page: usize,
    _map: aya::maps::MapData,
}

impl RingPages {
    /// Maps the position pages of the ring pinned at `pin`.
    pub fn open(pin: &Path) -> Self {
        let map = aya::maps::MapData::from_pin(pin).expect("open the pinned ring");
        let fd = map.fd().as_fd().as_raw_fd();
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).expect("page");
        let map_page = |prot, offset| {
            // SAFETY: a fresh shared mapping of one page of a ring buffer map
            // fd, at an address the kernel chooses.
            let ptr = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    page,
                    prot,
                    libc::MAP_SHARED,
                    fd,
                    offset,
                )
            };
            assert_ne!(
                ptr,
                libc::MAP_FAILED,
                "mmap the ring: {}",
                std::io::Error::last_os_error()
            );
            ptr
        };
        let consumer = map_page(libc::PROT_READ | libc::PROT_WRITE, 0);
        let producer = map_page(libc::PROT_READ, page as libc::off_t);
        Self {
            consumer,
            producer,
            page,
            _map: map,
        }
    }

    fn word(&self, ptr: *mut libc::c_void) -> &AtomicU64 {
        // SAFETY: a live, page-aligned mapping owned by `self` whose first
        // word is the kernel's position (an unsigned long).
        unsafe { &*ptr.cast::<AtomicU64>() }
    }

    /// The consumer position now.
    pub fn consumer(&self) -> u64 {
        self.word(self.consumer).load(Ordering::Acquire)
    }

    /// The producer position now.
    pub fn producer(&self) -> u64 {
        self.word(self.producer).load(Ordering::Acquire)
    }

    /// Overwrites the consumer position.
    pub fn set_consumer(&self, position: u64) {
        self.word(self.consumer).store(position, Ordering::Release);
    }
}

impl Drop for RingPages {
    fn drop(&mut self) {
        // SAFETY: both regions were mapped in `open` with this length.
        unsafe {
            libc::munmap(self.consumer, self.page);
            libc::munmap(self.producer, self.page);
        }
    }
}
