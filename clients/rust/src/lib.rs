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
//!         WatchItem::Resync { reason, revision, entries, .. } => {
//!             println!("resync ({reason:?}): {} entries as of {revision}", entries.len());
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
#![deny(missing_docs)]

mod client;
mod error;
mod types;
pub mod watch;

pub use client::{Client, ConnectOptions};
pub use error::ClientError;
/// The `Status` reply's messages, as [`Client::status`] returns them.
pub use mapsync_api::{InstanceStatus, MapStatus, SourceCount, StatusResponse};
pub use types::{
    Event, GetResult, Listing, MapDescription, Maps, Op, ReadOptions, ResyncReason, WatchItem,
    WatchOptions,
};
