//! Rust client of mapsync's gRPC API.
//!
//! ```no_run
//! # async fn example() -> Result<(), mapsync_client::ClientError> {
//! use futures::StreamExt;
//! use mapsync_client::{Client, WatchItem, WatchOptions};
//!
//! let mut client = Client::connect("unix:/run/mapsync/mapsync.sock").await?;
//! let listing = client.list("flows").await?;
//! println!("{} entries at revision {}", listing.entries.len(), listing.revision);
//!
//! let mut changes = client.watch(WatchOptions::maps(["flows"])).await?;
//! while let Some(item) = changes.next().await {
//!     match item? {
//!         WatchItem::Events(events) => {
//!             for event in events {
//!                 println!("{} {:?} {:02x?}", event.revision, event.op, &event.key[..]);
//!             }
//!         }
//!         WatchItem::InitialStateDone { epoch, revision } => println!("live from {} of epoch {epoch:016x}", revision + 1),
//!         WatchItem::Progress { revision } => println!("complete up to {revision}"),
//!         // reconnects resume silently; what cannot be resumed is said, with the full state
//!         WatchItem::StartOver { reason, revision, entries, .. } => {
//!             println!("start over ({reason:?}): {} entries as of {revision}", entries.len());
//!         }
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! Reads at a revision, or once the server has reached one (read-your-writes):
//!
//! ```no_run
//! # async fn example(mut client: mapsync_client::Client) -> Result<(), mapsync_client::ClientError> {
//! use std::time::Duration;
//! use mapsync_client::ReadOptions;
//!
//! let options = ReadOptions { min_revision: 1234, timeout: Some(Duration::from_secs(2)), ..Default::default() };
//! let value = client.get_with("flows", &[1, 0, 0, 0], &options).await?;
//! println!("{:?} at revision {}", value.value, value.revision);
//! # Ok(()) }
//! ```
//!
//! Writes, and reading your own write: every write answers with the
//! revision at which it is visible; a read with `min_revision` set to it
//! waits (bounded by its timeout) until the server has reached it, so it
//! sees the write (or something newer). Refusals are typed errors to match
//! on:
//!
//! ```no_run
//! # async fn example(mut client: mapsync_client::Client) -> Result<(), mapsync_client::ClientError> {
//! use std::time::Duration;
//! use mapsync_client::{ClientError, PutMode, PutOptions, ReadOptions};
//!
//! let key = 1u32.to_ne_bytes();
//! let written = client.put("config", &key, &42u64.to_ne_bytes()).await?;
//! let options = ReadOptions {
//!     min_revision: written.revision,
//!     epoch: written.epoch,
//!     timeout: Some(Duration::from_secs(2)),
//!     ..Default::default()
//! };
//! let read = client.get_with("config", &key, &options).await?;
//! assert_eq!(read.value.as_deref(), Some(&42u64.to_ne_bytes()[..]));
//!
//! // only create; and compare-and-swap against the mod revision just read
//! match client.put_with("config", &key, &[0; 8], &PutOptions::new().mode(PutMode::NoExist)).await {
//!     Err(ClientError::AlreadyExists { .. }) => println!("already there"),
//!     other => println!("{other:?}"),
//! }
//! let cas = PutOptions::new().expect_mod_revision(read.mod_revision, written.epoch);
//! match client.put_with("config", &key, &7u64.to_ne_bytes(), &cas).await {
//!     Ok(done) => println!("written at {}", done.revision),
//!     Err(ClientError::ModRevisionMismatch { current, .. }) => println!("lost the race: now {current}"),
//!     Err(other) => return Err(other),
//! }
//! # Ok(()) }
//! ```
//!
//! An atomic switch of a switchable map's whole set (entries are streamed in
//! chunks under the 64 KiB request cap):
//!
//! ```no_run
//! # async fn example(mut client: mapsync_client::Client) -> Result<(), mapsync_client::ClientError> {
//! use mapsync_client::{ApplyEntry, ApplyOptions, ClientError};
//!
//! let set = (0..10_000u32).map(|i| ApplyEntry::put(i.to_ne_bytes().to_vec(), vec![1u8; 8]));
//! match client.apply("blocklist", set, &ApplyOptions::new().expect_version(6)).await {
//!     Ok(applied) => println!("version {} live at revision {}", applied.version, applied.revision),
//!     Err(ClientError::VersionMismatch { live, .. }) => println!("someone else switched: {live} is live"),
//!     Err(other) => return Err(other),
//! }
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod client;
mod error;
mod tls;
mod types;
pub mod watch;
pub mod write;
mod write_types;

pub use client::{Client, ConnectOptions};
pub use error::{CURRENT_MOD_REVISION_KEY, ClientError, FAILED_OP_KEY, LIVE_VERSION_KEY};
/// The `Status` reply's messages, as [`Client::status`] returns them.
pub use mapsync_api::{InstanceStatus, MapStatus, SourceCount, StatusResponse};
pub use tls::TlsOptions;
pub use types::{
    Event, GetResult, Listing, MapDescription, Maps, Op, ReadOptions, StartOverReason, WatchItem,
    WatchOptions,
};
pub use write_types::{
    Applied, ApplyEntry, ApplyMode, ApplyOptions, Compare, CompareResult, CompareTarget,
    DeleteOptions, Previous, PutMode, PutOptions, Txn, TxnOp, TxnResult, Written,
};
