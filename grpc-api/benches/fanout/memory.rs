//! Live heap bytes for the idle-watch figure: a counting global allocator
//! that keeps the process's net allocated bytes, and separately the net of
//! allocations and frees made on threads marked as the server's (the
//! server runs on a runtime of its own for that measurement).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicI64, Ordering};

/// The system allocator, keeping net live bytes.
pub struct Counting;

static LIVE: AtomicI64 = AtomicI64::new(0);
static SERVER_LIVE: AtomicI64 = AtomicI64::new(0);

thread_local! {
    static ON_SERVER: Cell<bool> = const { Cell::new(false) };
}

fn count(delta: i64) {
    LIVE.fetch_add(delta, Ordering::Relaxed);
    if ON_SERVER.with(Cell::get) {
        SERVER_LIVE.fetch_add(delta, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as i64);
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as i64));
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as i64);
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size as i64 - layout.size() as i64);
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Marks the calling thread as a server thread (a runtime's `on_thread_start`).
pub fn mark_server_thread() {
    ON_SERVER.with(|on| on.set(true));
}

/// (whole process, server threads) net live heap bytes now.
pub fn live_bytes() -> (i64, i64) {
    (
        LIVE.load(Ordering::Relaxed),
        SERVER_LIVE.load(Ordering::Relaxed),
    )
}
