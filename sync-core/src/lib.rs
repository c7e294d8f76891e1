//! mapsync's sync core: a live, lock-free user-space mirror of BPF maps.
//!
//! # Layout
//! - [`store`]: the [`Store`] readers load snapshots from, and its single
//!   [`StoreWriter`]; revisions, epochs and the per-key "never go back" rule.
//! - [`snapshot`]: immutable views of all maps at one revision.
//! - [`changelog`]: the bounded log of recent changes.
//! - [`subscribe`]: in-process subscriptions (initial state, then changes).
//! - [`map_info`]: kinds and sizes of kernel maps.
//! - [`ratelimit`]: logging at most one line per period for what outsiders can cause.
//! - [`btf`]: typed keys and values: BTF types and decoding bytes with them.
//! - [`kernel`]: everything that talks to the kernel: opening maps, raw
//!   `bpf()` calls, dumps, the capture programs and the ring buffer.
//! - [`pin_dir`]: the pin directory's bpffs check and its one-instance lock.
//! - `pins` (private): re-resolving maps given by pin, to follow a replaced pin.
//! - [`sync`]: [`MapSync`], which wires the kernel side to a store.
//!
//! No gRPC or protobuf here: `mapsync-grpc` serves a [`Store`].
#![deny(missing_docs)]

pub mod btf;
pub mod changelog;
mod entries;
pub mod error;
pub mod event;
pub mod gaps;
mod ingest;
pub mod kernel;
pub mod map_info;
pub mod pin_dir;
mod pins;
pub mod ratelimit;
pub mod snapshot;
pub mod stats;
pub mod store;
pub mod subscribe;
pub mod sync;

pub use changelog::{ChangeLog, LogLimits};
pub use error::SyncError;
pub use event::{ChangeEvent, Epoch, EventSource, Op, Revision};
pub use kernel::{MapSource, MapSpec};
pub use map_info::{MapInfo, MapKind};
pub use snapshot::{Entry, MapView, Snapshot};
pub use stats::{StatsSnapshot, SyncStats};
pub use store::{Change, Store, StoreWriter};
pub use subscribe::{KeyRange, SubscribeFilter, Subscription, WatchBatch};
pub use sync::{DEFAULT_PIN_DIR, DEFAULT_RECONCILE_INTERVAL, MapSync, SHUTDOWN_WAIT, SyncConfig};
