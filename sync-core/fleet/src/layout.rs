//! The key layout: `PREFIX/HEXKEY` -> raw value bytes, or, for a map
//! followed with the JSON value format, `PREFIX/HEXKEY` -> the value as
//! typed JSON (encoded through the map's BTF value type, see
//! [`crate::typed_json`]).

use bytes::Bytes;
use mapsync_core::btf::MapTypes;

use crate::typed_json::{self, InputError};

/// How etcd values are written under a prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ValueFormat {
    /// The value's bytes, as the map holds them.
    #[default]
    Raw,
    /// The value as JSON, typed by the map's BTF value type (as
    /// `mapsync list --format json` shows it).
    Json,
}

/// Why an etcd key under the prefix is not an entry of the map.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Undecodable {
    /// The part after `PREFIX/` is not hex.
    #[error("key suffix is not lowercase hex")]
    BadHex,
    /// The key decodes to the wrong number of bytes.
    #[error("key is {got} bytes, the map's keys are {want}")]
    KeySize {
        /// Bytes decoded.
        got: usize,
        /// The map's key size.
        want: usize,
    },
    /// The value has the wrong number of bytes.
    #[error("value is {got} bytes, the map's values are {want}")]
    ValueSize {
        /// Bytes given.
        got: usize,
        /// The map's value bytes.
        want: usize,
    },
    /// The key is not under `PREFIX/`.
    #[error("key is not under the prefix")]
    OutsidePrefix,
    /// A JSON-format value is not JSON.
    #[error("value is not JSON: {0}")]
    NotJson(String),
    /// A JSON-format value does not fit the map's value type.
    #[error("value does not fit the map's value type: {0}")]
    Typed(#[from] InputError),
}

/// One map's layout under one etcd prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The prefix with its trailing `/` (`fleet/flows/`).
    dir: String,
    key_size: usize,
    value_bytes: usize,
    /// The map's types when values are typed JSON.
    json: Option<MapTypes>,
}

impl Layout {
    /// The layout of a map with these sizes under `prefix` (a trailing `/` is
    /// optional).
    pub fn new(prefix: &str, key_size: usize, value_bytes: usize) -> Self {
        Self {
            dir: format!("{}/", prefix.trim_end_matches('/')),
            key_size,
            value_bytes,
            json: None,
        }
    }

    /// The same layout with values as typed JSON, encoded through `types`'
    /// value type.
    pub fn with_json(mut self, types: MapTypes) -> Self {
        self.json = Some(types);
        self
    }

    /// The etcd prefix every entry's key starts with (ends in `/`).
    pub fn dir(&self) -> &str {
        &self.dir
    }

    /// The etcd key of a map key.
    pub fn etcd_key(&self, key: &[u8]) -> String {
        format!("{}{}", self.dir, hex::encode(key))
    }

    /// The map key of an etcd key.
    pub fn decode_key(&self, etcd_key: &[u8]) -> Result<Bytes, Undecodable> {
        let suffix = etcd_key
            .strip_prefix(self.dir.as_bytes())
            .ok_or(Undecodable::OutsidePrefix)?;
        if suffix.iter().any(|b| b.is_ascii_uppercase()) {
            return Err(Undecodable::BadHex);
        }
        let key = hex::decode(suffix).map_err(|_| Undecodable::BadHex)?;
        if key.len() != self.key_size {
            return Err(Undecodable::KeySize {
                got: key.len(),
                want: self.key_size,
            });
        }
        Ok(key.into())
    }

    /// The map entry of an etcd key and value.
    pub fn decode(&self, etcd_key: &[u8], value: &[u8]) -> Result<(Bytes, Bytes), Undecodable> {
        let key = self.decode_key(etcd_key)?;
        let encoded;
        let value = match &self.json {
            None => value,
            Some(types) => {
                let json: serde_json::Value = serde_json::from_slice(value)
                    .map_err(|e| Undecodable::NotJson(e.to_string()))?;
                encoded = typed_json::encode(types.btf(), types.value_type_id(), &json, "value")?;
                &encoded[..]
            }
        };
        if value.len() != self.value_bytes {
            return Err(Undecodable::ValueSize {
                got: value.len(),
                want: self.value_bytes,
            });
        }
        Ok((key, Bytes::copy_from_slice(value)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_bad_ones_are_named() {
        let layout = Layout::new("fleet/flows/", 4, 8);
        assert_eq!(layout.dir(), "fleet/flows/");
        assert_eq!(layout.etcd_key(&[1, 0, 0, 0xab]), "fleet/flows/010000ab");
        let (k, v) = layout
            .decode(b"fleet/flows/010000ab", &[7; 8])
            .expect("decodes");
        assert_eq!((&k[..], &v[..]), (&[1, 0, 0, 0xab][..], &[7u8; 8][..]));
        assert_eq!(
            layout.decode(b"fleet/flows/zz000000", &[0; 8]),
            Err(Undecodable::BadHex)
        );
        assert_eq!(
            layout.decode(b"fleet/flows/010000AB", &[0; 8]),
            Err(Undecodable::BadHex)
        );
        assert_eq!(
            layout.decode(b"fleet/flows/0100", &[0; 8]),
            Err(Undecodable::KeySize { got: 2, want: 4 })
        );
        assert_eq!(
            layout.decode(b"fleet/flows/01000000", &[0; 3]),
            Err(Undecodable::ValueSize { got: 3, want: 8 })
        );
        assert_eq!(
            layout.decode(b"other/01000000", &[0; 8]),
            Err(Undecodable::OutsidePrefix)
        );
    }
}
