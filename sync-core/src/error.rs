//! The errors the mirror raises: what a reader or a subscriber can be told.
//! Request validation (epochs, sizes, limits) belongs to whoever serves the
//! request (`mapsync_grpc::RequestError`, which converts from these); write
//! requests are answered with `control::CommandError`.
//!
//! Kernel-side failures (opening maps, syscalls, loading programs, the pin
//! directory) are `mapsync_kernel::KernelError`, which wraps these.

use crate::event::Revision;

/// What can go wrong reading or subscribing to the mirror, with the facts a
/// caller needs to report it precisely. Exhaustive on purpose: a new variant
/// must be given its meaning (and status code) by every server that maps it.
#[derive(Debug, thiserror::Error)]
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
    /// The ingest task has stopped; the mirror no longer follows the kernel.
    #[error("mapsync's ingest task has stopped")]
    Stopped,
}
