//! Everything that talks to the kernel.
//!
//! - [`sys`]: raw `bpf()` commands (lookups, batch lookups, pins, map info).
//! - [`open`]: opening maps by pin path or id.
//! - [`dump`]: full dumps with `BPF_MAP_LOOKUP_BATCH` (iteration as fallback).
//! - [`capture`]: the syscall-trace programs and the shared ring.
//! - [`demo`]: the demo writer program, driven by `BPF_PROG_TEST_RUN`.
//! - [`ring`]: mapsync's consumer of the shared ring buffer, sized from the
//!   kernel, with every position and record length checked.
//! - [`record`]: decoding ring records.

pub mod capture;
pub mod demo;
pub mod dump;
pub mod open;
pub mod record;
pub mod ring;
pub mod sys;

pub use capture::Capture;
pub use demo::DemoWriter;
pub use dump::Dump;
pub use open::{MapSource, MapSpec, OpenMap};
pub use record::Record;
pub use ring::RingConsumer;
