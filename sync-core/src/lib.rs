//! mapsync's mirror: a live, lock-free user-space copy of BPF maps, as data.
//!
//! Pure Rust: no kernel calls, no aya, no BPF toolchain, no `unsafe`. The
//! kernel side (`mapsync-kernel`) feeds a [`Publisher`]; readers, the gRPC
//! server and in-process subscribers read a [`Store`].
//!
//! # Layout
//! - [`store`]: the [`Store`] readers load snapshots from, and its single
//!   [`Publisher`]; revisions, epochs and the per-key "never go back" rule;
//!   [`Dump`], a full read of one map as the writer diffs it (its entries
//!   flat, [`DumpEntries`], as the kernel returns them).
//! - [`snapshot`]: immutable views of all maps at one revision.
//! - `entries`, `flat` (private): one map's entries (a flat sorted base with
//!   a hash index, plus an overlay of recent changes).
//! - [`changelog`]: the bounded log of recent changes.
//! - [`control`]: the command channel into the kernel task ([`CommandHandle`]),
//!   the path the write contract (put, delete, transactions) plugs into.
//! - [`subscribe`]: in-process subscriptions (initial state, then changes).
//! - [`map_info`]: kinds, sizes and types of mirrored maps.
//! - [`event`]: change events, revisions, epochs.
//! - [`propagation`]: latency histograms and when recent revisions were published.
//! - [`ratelimit`]: logging at most one line per period for what outsiders can cause.
//! - [`btf`]: typed keys and values (the `mapsync-btf` crate, re-exported).
//! - [`error`]: [`SyncError`], what the mirror raises to a reader or subscriber.
//!
//! No gRPC or protobuf here: `mapsync-grpc` serves a [`Store`].
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub use mapsync_btf as btf;

pub mod changelog;
pub mod control;
mod dumped;
mod entries;
pub mod error;
pub mod event;
mod flat;
pub mod map_info;
pub mod propagation;
pub mod ratelimit;
pub mod snapshot;
pub mod status;
pub mod store;
pub mod subscribe;

pub use changelog::{ChangeLog, EventIdentity, LogLimits, SharedEvent, WeakEvent};
pub use control::{Command, CommandError, CommandHandle};
pub use error::SyncError;
pub use event::{ChangeEvent, Epoch, EventSource, Op, Revision};
pub use map_info::{MapInfo, MapKind};
pub use snapshot::{Entry, HandleError, MapHandle, MapView, Snapshot};
pub use store::{Change, Dump, DumpEntries, Publisher, Store};
pub use subscribe::{KeyRange, SubscribeFilter, Subscription, WatchBatch};
