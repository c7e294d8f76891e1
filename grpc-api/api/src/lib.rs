//! mapsync's wire contract: the protobuf messages and tonic stubs of
//! `mapsync.v1`, generated from `proto/mapsync/v1/mapsync.proto`, and the
//! encoded file descriptor set for reflection. Nothing else lives here, so
//! that a client depends on the contract alone: no mirror, no kernel code,
//! no BPF toolchain.
//!
//! Features: `client` (the `map_sync_client` module) and `server` (the
//! `map_sync_server` module); neither is on by default.
//!
//! ```
//! let request = mapsync_api::GetRequest {
//!     map: "flows".into(),
//!     key: vec![1, 0, 0, 0].into(),
//!     ..Default::default()
//! };
//! assert_eq!(request.map, "flows");
//! assert_eq!(mapsync_api::SERVICE_NAME, "mapsync.v1.MapSync");
//! ```
#![allow(missing_docs, clippy::all)]

tonic::include_proto!("mapsync.v1");

/// The encoded file descriptor set of `mapsync.v1`, for reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("mapsync_descriptor");

/// Full name of the service, as health checks name it.
pub const SERVICE_NAME: &str = "mapsync.v1.MapSync";

/// The largest response message a mapsync server sends (List pages and watch
/// batches are cut well below it); clients accept messages up to this size.
pub const MAX_RESPONSE_BYTES: usize = 16 << 20;
