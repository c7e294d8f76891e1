//! mapsync's gRPC API: the `mapsync.v1.MapSync` service over a
//! [`mapsync_core::Store`], and the server that runs it.
//!
//! # Layout
//! - [`pb`]: the wire types, re-exported from `mapsync-api` (protobuf and tonic
//!   code generated from `proto/mapsync/v1/mapsync.proto`).
//! - [`convert`]: protobuf <-> domain types, both directions.
//! - [`json`]: decoded (BTF) keys and values as the JSON text of the
//!   `*_json` fields.
//! - [`error`]: request errors and their gRPC status codes, in one place.
//! - [`peer`]: who is calling ([`peer::Peer`], from the connection) and who
//!   may write ([`peer::WritePolicy`]).
//! - [`authz`]: who a caller is under the policy file (tokens, certificate
//!   subjects, unix users) and which maps it may read and write.
//! - [`service`]: the service implementation.
//! - [`server`]: listeners (TCP or Unix socket) and [`server::serve`], with
//!   `grpc.health.v1` and server reflection (v1 and v1alpha), over HTTP/2
//!   connections bounded by [`server::ConnectionLimits`].
//!
//! ```no_run
//! # async fn example(store: mapsync_core::Store) -> Result<(), mapsync_grpc::ServeError> {
//! use mapsync_grpc::server::{Listener, serve};
//!
//! let listener = Listener::bind("unix:/run/mapsync/mapsync.sock").await?;
//! serve(listener, store, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

pub mod authz;
pub mod convert;
pub mod error;
pub mod json;
pub mod peer;
pub mod server;
pub mod service;
pub mod tls;

pub use error::{RequestError, ServeError};

/// The wire types (`mapsync-api`): generated protobuf messages and tonic
/// stubs of `mapsync.v1`.
pub use mapsync_api as pb;
