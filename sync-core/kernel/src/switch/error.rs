//! The errors of creating and adopting switchable maps.

use std::path::PathBuf;

use mapsync_core::map_info::MapKind;

use super::VERSION_SUFFIX;

/// Why a switchable map could not be created or adopted.
#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    /// The outer pin names a map that is not an `ARRAY_OF_MAPS`.
    #[error("{path}: a switchable map's outer map must be an array_of_maps, not a {kind} map")]
    NotOuter {
        /// The outer pin.
        path: PathBuf,
        /// What it is.
        kind: MapKind,
    },
    /// Slot 0 of the outer map holds no inner map.
    #[error("{path}: slot 0 of the outer map holds no inner map")]
    EmptySlot {
        /// The outer pin.
        path: PathBuf,
    },
    /// The inner map's kind cannot be switched (LRU maps evict while being
    /// filled; map-of-maps cannot nest).
    #[error(
        "{what}: a {kind} inner map cannot be switched (supported: hash, array, percpu_hash, percpu_array)"
    )]
    InnerKind {
        /// The outer pin, or the kind asked for.
        what: String,
        /// The kind.
        kind: MapKind,
    },
    /// The shape asked for is impossible.
    #[error("switchable map {path}: {reason}")]
    BadShape {
        /// The outer pin.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The set exists with another shape than the one asked for.
    #[error(
        "{path} already exists as a switchable {found} map; asked for {asked}: remove {path} and {path}{VERSION_SUFFIX} to recreate it"
    )]
    ShapeDiffers {
        /// The outer pin.
        path: PathBuf,
        /// The shape found.
        found: String,
        /// The shape asked for.
        asked: String,
    },
    /// The version store's pin names a map of the wrong shape.
    #[error(
        "{path}: the version store must be a hash map with 4-byte keys and 8-byte values; remove it and mapsync recreates it"
    )]
    BadVersionStore {
        /// Its pin.
        path: PathBuf,
    },
    /// A `bpf()` call on the set failed.
    #[error("switchable map {path}: {what}: {source}")]
    Kernel {
        /// The outer pin.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The kernel's answer.
        #[source]
        source: std::io::Error,
    },
}
