//! mapsync's kernel side: everything that talks to the kernel, and the task
//! that keeps a [`mapsync_core::Store`] following it.
//!
//! # Layout
//! - [`sys`]: raw `bpf()` commands (lookups, batch lookups, pins, map info).
//! - [`open`]: opening maps by pin path or id.
//! - [`dump`]: full dumps with `BPF_MAP_LOOKUP_BATCH` (iteration as
//!   fallback), returned as the mirror's [`Dump`](mapsync_core::store::Dump);
//!   at start, hash maps are walked once instead ([`dump::walk`]).
//! - [`capture`]: the syscall-trace programs and the shared ring.
//! - [`ring`]: mapsync's consumer of the shared ring buffer, sized from the
//!   kernel, with every position and record length checked.
//! - [`record`]: decoding ring records.
//! - `route` (private): record -> action, a pure function (unit-tested
//!   without a kernel).
//! - [`gaps`]: per-CPU sequence tracking (lost records).
//! - [`pin_dir`]: the pin directory's bpffs check and its one-instance lock.
//! - `pins` (private): re-resolving maps given by pin, to follow a replaced pin.
//! - `ingest` (private): the kernel task, which owns the capture object,
//!   the map fds and the ring.
//! - `commands` (private): the kernel task's end of the command channel
//!   (`mapsync_core::control`): a thin dispatcher.
//! - `write` (private): Put, Delete and Txn on plain maps (validation,
//!   catch-up, compares, ops with undo, one revision per request).
//! - [`switch`]: switchable maps (an outer map-of-maps, the active and
//!   shadow inner maps, the version store): creating and adopting them.
//! - `apply` (private): the atomic apply on a switchable map, served by the
//!   kernel task (fill the shadow, switch slot 0, publish the difference).
//! - [`sync`]: [`MapSync`], which starts that task and is its handle.
//! - [`stats`]: ingest counters; [`phases`]: the ingest task's time per phase.
//! - `blocklist` (feature `demo`): the demo's XDP blocklist in a
//!   switchable map, counting verdicts per version.
//! - `switchtest` (feature `demo`): the switch checker program (atomicity
//!   of switchable maps), driven by `BPF_PROG_TEST_RUN`; tests and benches.
//! - `demo` (feature `demo`): the demo writer program, driven by
//!   `BPF_PROG_TEST_RUN`; for the CLI's `demo` command and tests only.
//!
//! All of mapsync's `unsafe` lives in this crate (the `bpf()` calls and the
//! ring's shared memory); the mirror and BTF crates forbid it.
#![deny(missing_docs)]

mod apply;
#[cfg(feature = "demo")]
pub mod blocklist;
pub mod capture;
mod commands;
#[cfg(feature = "demo")]
pub mod demo;
pub mod dump;
pub mod error;
#[cfg(test)]
mod fuzz_record;
pub mod gaps;
mod ingest;
mod lag_window;
pub mod open;
pub mod phases;
pub mod pin_dir;
mod pins;
pub mod record;
pub mod ring;
mod route;
pub mod stats;
pub mod switch;
#[cfg(feature = "demo")]
pub mod switchtest;
pub mod sync;
pub mod sys;
mod write;

#[cfg(feature = "demo")]
pub use blocklist::DemoBlocklist;
pub use capture::Capture;
#[cfg(feature = "demo")]
pub use demo::DemoWriter;
pub use error::KernelError;
pub use open::{MapSource, MapSpec, OpenMap};
pub use phases::IngestPhases;
pub use record::Record;
pub use ring::RingConsumer;
pub use stats::{HistogramSnapshot, StatsSnapshot, SyncStats};
pub use switch::{SwitchError, SwitchShape};
pub use sync::{
    DEFAULT_PIN_DIR, DEFAULT_RECONCILE_INTERVAL, MapSync, SHUTDOWN_WAIT, StartPhases, SyncConfig,
};
