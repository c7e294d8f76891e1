//! What changes look like once they reach the mirror: revisions, epochs,
//! operations and the capture source that saw them.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

/// Position in this instance's single, gap-free sequence of changes. Every
/// captured put or delete of one key takes the next revision; every write
/// request through mapsync takes one revision for all its events; 0 means
/// "none".
pub type Revision = u64;

/// Identity of one mapsync process lifetime. Revisions are only comparable
/// within one epoch: a restart starts a new epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Epoch(pub u64);

impl Epoch {
    /// A fresh random epoch.
    pub fn random() -> Self {
        // never 0, so that 0 can mean "no epoch given" on the wire
        Self(rand::random::<u64>() | 1)
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// What happened to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// The key was created or its value replaced.
    Put,
    /// The key was removed.
    Delete,
}

impl Op {
    /// Lowercase name, as the CLI and JSON print it.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Put => "put",
            Op::Delete => "delete",
        }
    }
}

/// Which part of mapsync saw a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventSource {
    /// Part of the state at the revision a watch started from (not a new change).
    Initial,
    /// A BPF program through `mapsync_update()` / `mapsync_delete()`.
    Emit,
    /// The `bpf()` syscall trace (bpftool, other agents, ...).
    Trace,
    /// A re-read of the kernel map that found the mirror behind (after lost
    /// records, an ambiguous batch call, or a dump race).
    Resync,
    /// The map's periodic poll (values changed in place, LRU evictions).
    Poll,
    /// A write through mapsync itself (the write contract: put, delete, a
    /// transaction, an atomic apply).
    Api,
}

impl EventSource {
    /// Lowercase name, as logs and the CLI print it.
    pub fn as_str(self) -> &'static str {
        match self {
            EventSource::Initial => "initial",
            EventSource::Emit => "emit",
            EventSource::Trace => "trace",
            EventSource::Resync => "resync",
            EventSource::Poll => "poll",
            EventSource::Api => "api",
        }
    }
}

/// One applied change: the unit of the change log and of subscriptions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeEvent {
    /// Revision at which the change became visible.
    pub revision: Revision,
    /// Name of the map, as configured.
    pub map: Arc<str>,
    /// Put or delete.
    pub op: Op,
    /// Key bytes, in memory order.
    pub key: Bytes,
    /// New value bytes (syscall layout; per-CPU maps: one slot per possible
    /// CPU, each rounded up to 8 bytes); `None` on delete.
    pub value: Option<Bytes>,
    /// Who saw it.
    pub source: EventSource,
    /// The key's value just before this change; `None` if the key was absent
    /// (and always for initial-state entries, which are not changes).
    pub prev_value: Option<Bytes>,
    /// Revision of the change that set `prev_value` (0 when there is none).
    pub prev_mod_revision: Revision,
}

impl ChangeEvent {
    /// Approximate memory the event holds, for the change log's byte bound.
    /// Value bytes are shared with the snapshot's entries (reference-counted),
    /// but counted as if owned: the bound is conservative.
    pub fn approx_bytes(&self) -> usize {
        72 + self.key.len()
            + self.value.as_ref().map_or(0, Bytes::len)
            + self.prev_value.as_ref().map_or(0, Bytes::len)
    }
}
