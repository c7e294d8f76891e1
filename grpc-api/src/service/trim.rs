//! Returning freed memory to the OS after streams close.
//!
//! glibc's allocator keeps freed memory in its per-thread arenas, so the
//! buffers of many closed streams would stay in the server's resident set
//! for good. After a stream closes (and at most once a second) the server
//! calls `malloc_trim(0)`, which gives the free pages of every arena back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tracing::Instrument;

/// How long after a close the trim runs; closes meanwhile share it.
const DELAY: Duration = Duration::from_secs(1);

static PENDING: AtomicBool = AtomicBool::new(false);

/// Schedules a trim in [`DELAY`] unless one is already scheduled. Must be
/// called from within a tokio runtime.
pub(super) fn after_stream_closed() {
    if PENDING.swap(true, Ordering::AcqRel) {
        return;
    }
    let task = async {
        tokio::time::sleep(DELAY).await;
        PENDING.store(false, Ordering::Release);
        let _ = tokio::task::spawn_blocking(trim).await;
        tracing::debug!("freed memory returned to the OS");
    };
    tokio::spawn(task.instrument(tracing::debug_span!("malloc_trim")));
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: malloc_trim only walks the allocator's own free lists (under
    // its locks); it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}
