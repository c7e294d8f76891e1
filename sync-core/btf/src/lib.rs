//! Typed keys and values: a map's BTF key and value types, and decoding raw
//! bytes into structured [`TypedValue`]s (the shape of `bpftool map dump`'s
//! pretty output, as data: rendering them as JSON text is the edge's job,
//! `mapsync_grpc::json`).
//!
//! A pure crate: bytes in, types and values out. No kernel calls, no aya, no
//! `unsafe`; the kernel crate fetches BTF blobs by id and hands them here,
//! and `mapsync-core` re-exports this crate as `mapsync_core::btf`.
//!
//! # Layout
//! - [`parse`]: the BTF blob -> a table of types ([`Btf`], kinds in `types`).
//! - `decode`: bytes + type -> [`TypedValue`] ([`Btf::decode`]).
//! - [`value`]: [`TypedValue`], the decoded form.
//! - `elf`: the BTF of a BPF object file ([`Btf::from_elf`]).
//! - [`MapTypes`]: one map's key and value types, as `mapsync_core::MapInfo`
//!   holds them.
//!
//! aya-obj (0.3, the version aya 0.14 uses) parses BTF too, but keeps type
//! lookup by id and the string table crate-private, so it cannot drive a
//! decoder; this parser reads the kinds map data can have and skips the rest.
//!
//! ```
//! # fn example(types: &mapsync_btf::MapTypes, key: &[u8]) {
//! use mapsync_btf::TypedValue;
//! // struct flow_key { __u32 addr; __u16 port; __u16 proto; }
//! if let Ok(TypedValue::Struct(members)) = types.decode_key(key) {
//!     for (name, value) in &members {
//!         println!("{name} = {value:?}"); // addr = Int(16777343), ...
//!     }
//! }
//! # }
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod decode;
mod elf;
mod error;
#[cfg(test)]
mod fuzz;
pub mod parse;
#[cfg(test)]
mod testdata;
mod types;
pub mod value;

use std::sync::Arc;

pub use error::BtfError;
pub use parse::Btf;
pub use value::TypedValue;

/// A map's key and value types. Cheap to clone (the BTF is shared).
#[derive(Debug, Clone)]
pub struct MapTypes {
    btf: Arc<Btf>,
    btf_id: u32,
    key: u32,
    value: u32,
}

impl PartialEq for MapTypes {
    fn eq(&self, other: &Self) -> bool {
        (self.btf_id, self.key, self.value) == (other.btf_id, other.key, other.value)
            && (Arc::ptr_eq(&self.btf, &other.btf) || self.btf == other.btf)
    }
}

impl Eq for MapTypes {}

impl MapTypes {
    /// The types `key` and `value` of `btf` (kernel BTF object `btf_id`),
    /// checked against the map's key and value sizes (one CPU's value for
    /// per-CPU maps).
    pub fn new(
        btf: Arc<Btf>,
        btf_id: u32,
        key: u32,
        value: u32,
        key_size: u32,
        value_size: u32,
    ) -> Result<Self, BtfError> {
        for (what, id, map_size) in [("key", key, key_size), ("value", value, value_size)] {
            let btf_size = btf.size_of(id)?;
            if btf_size != map_size {
                return Err(BtfError::SizeMismatch {
                    what,
                    type_name: btf.type_name(id),
                    btf_size,
                    map_size,
                });
            }
        }
        Ok(Self {
            btf,
            btf_id,
            key,
            value,
        })
    }

    /// The kernel id of the BTF object.
    pub fn btf_id(&self) -> u32 {
        self.btf_id
    }

    /// The BTF the types are in.
    pub fn btf(&self) -> &Btf {
        &self.btf
    }

    /// The key type's id in [`MapTypes::btf`].
    pub fn key_type_id(&self) -> u32 {
        self.key
    }

    /// The value type's id in [`MapTypes::btf`].
    pub fn value_type_id(&self) -> u32 {
        self.value
    }

    /// The key type, as C spells it (`struct flow_key`).
    pub fn key_type_name(&self) -> String {
        self.btf.type_name(self.key)
    }

    /// The value type, as C spells it.
    pub fn value_type_name(&self) -> String {
        self.btf.type_name(self.value)
    }

    /// Whether the value type is an integer (after typedefs and qualifiers):
    /// per-CPU values of such maps can be summed.
    pub fn value_is_integer(&self) -> bool {
        matches!(
            self.btf.resolve(self.value).map(|(_, ty)| &ty.kind),
            Ok(parse::TypeKind::Int(int)) if !int.bool
        )
    }

    /// Decodes a key.
    pub fn decode_key(&self, key: &[u8]) -> Result<TypedValue, BtfError> {
        self.btf.decode(self.key, key)
    }

    /// Decodes one value (one CPU's slot of a per-CPU value).
    pub fn decode_value(&self, value: &[u8]) -> Result<TypedValue, BtfError> {
        self.btf.decode(self.value, value)
    }

    /// Decodes a per-CPU value in syscall layout: `slot`-byte slots, one per
    /// possible CPU.
    pub fn decode_per_cpu(&self, value: &[u8], slot: usize) -> Result<TypedValue, BtfError> {
        value
            .chunks(slot.max(1))
            .map(|one| self.decode_value(one))
            .collect::<Result<_, _>>()
            .map(TypedValue::PerCpu)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn types(key: &str, value: &str, key_size: u32, value_size: u32) -> Result<MapTypes, BtfError> {
        let btf = testdata::object_btf();
        let key = btf.find(key).expect("key type");
        let value = btf.find(value).expect("value type");
        MapTypes::new(Arc::new(btf), 1, key, value, key_size, value_size)
    }

    #[test]
    fn sizes_must_match_the_map() {
        assert!(types("typed_flow_key", "typed_flow_value", 8, 32).is_ok());
        let error = types("typed_flow_key", "typed_flow_value", 8, 16).expect_err("mismatch");
        assert_eq!(
            error.to_string(),
            "the map's value is 16 bytes but its BTF type struct typed_flow_value is 32"
        );
    }

    #[test]
    fn per_cpu_values_decode_slot_by_slot() {
        let types = types("typed_pair", "typed_pair", 8, 8).expect("types");
        let mut bytes = Vec::new();
        for cpu in 0..2u32 {
            bytes.extend(cpu.to_ne_bytes());
            bytes.extend((cpu + 10).to_ne_bytes());
        }
        assert_eq!(
            types.decode_per_cpu(&bytes, 8).expect("decode"),
            TypedValue::PerCpu(vec![
                testdata::fields(&[
                    ("first", TypedValue::Int(0)),
                    ("second", TypedValue::Int(10))
                ]),
                testdata::fields(&[
                    ("first", TypedValue::Int(1)),
                    ("second", TypedValue::Int(11))
                ]),
            ])
        );
        assert!(!types.value_is_integer());
        assert_eq!(types.value_type_name(), "struct typed_pair");
    }
}
