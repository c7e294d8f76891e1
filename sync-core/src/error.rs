//! The errors of the mirror: what a reader or a subscriber can be told.
//!
//! Kernel-side failures (opening maps, syscalls, loading programs, the pin
//! directory) are `mapsync_kernel::KernelError`, which wraps these.

use crate::event::{Epoch, Revision};

/// What can go wrong reading or subscribing to the mirror, with the facts a
/// caller needs to report it precisely. Non-exhaustive: the write contract
/// will add request errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// No map of that name is mirrored.
    #[error("unknown map `{name}`")]
    UnknownMap {
        /// The name asked for.
        name: String,
    },
    /// A revision older than the change log was asked for.
    #[error("revision {requested} is compacted; the oldest available revision is {oldest}")]
    Compacted {
        /// The revision asked for.
        requested: Revision,
        /// The oldest revision still in the log.
        oldest: Revision,
    },
    /// A revision newer than the mirror has reached was asked for.
    #[error("revision {requested} is in the future; the current revision is {current}")]
    FutureRevision {
        /// The revision asked for.
        requested: Revision,
        /// The current revision.
        current: Revision,
    },
    /// A revision of another process lifetime was given.
    #[error("epoch changed (asked {requested}, now {current}): resync from a snapshot")]
    EpochChanged {
        /// The epoch given.
        requested: Epoch,
        /// This instance's epoch.
        current: Epoch,
    },
    /// The ingest task has stopped; the mirror no longer follows the kernel.
    #[error("mapsync's ingest task has stopped")]
    Stopped,
}
