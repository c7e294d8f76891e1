//! Typed input: JSON encoded into a key's or value's bytes through the map's
//! BTF. The encoder lives in `mapsync_fleet::typed_json` (the fleet follower
//! encodes etcd values with it too); its rules are documented there.

pub use mapsync_fleet::typed_json::encode;

#[cfg(test)]
#[path = "typed_input_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "typed_input_fuzz.rs"]
mod fuzz;
