//! `mapsync fleet apply`: a whole set written into etcd as one transaction.

use std::collections::BTreeMap;

use etcd_client::TxnOp;

use crate::layout::Layout;

/// etcd's default `--max-txn-ops` (3.4 and 3.5).
pub const ETCD_DEFAULT_MAX_TXN_OPS: usize = 128;

/// How a set is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetMode {
    /// The set is the prefix's whole new content: keys not in it are deleted.
    Replace,
    /// Only puts: keys not in the set stay.
    Merge,
}

/// The etcd ops that make the prefix hold `set` (map key bytes -> value
/// bytes), given what it holds now (`current`, etcd keys -> values, as
/// listed): a put for each entry that is new or differs, and in replace mode
/// a delete for each etcd key under the prefix that is not in `set`
/// (undecodable ones included). Nothing that already agrees is written.
pub fn plan_set(
    layout: &Layout,
    current: &BTreeMap<Vec<u8>, Vec<u8>>,
    set: &BTreeMap<Vec<u8>, Vec<u8>>,
    mode: SetMode,
) -> Vec<TxnOp> {
    let mut wanted = std::collections::HashSet::with_capacity(set.len());
    let mut ops = Vec::new();
    for (key, value) in set {
        let etcd_key = layout.etcd_key(key);
        if current.get(etcd_key.as_bytes()) != Some(value) {
            ops.push(TxnOp::put(etcd_key.clone(), value.clone(), None));
        }
        wanted.insert(etcd_key.into_bytes());
    }
    if mode == SetMode::Replace {
        for key in current.keys() {
            if !wanted.contains(key) {
                ops.push(TxnOp::delete(key.clone(), None));
            }
        }
    }
    ops
}

/// Parses a set file: a JSON object `{"HEXKEY": "HEXVALUE", ...}`, checking
/// every key and value against the map's sizes when they are given (0: any).
pub fn parse_hex_set(
    text: &str,
    key_size: usize,
    value_size: usize,
) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, SetFileError> {
    let object: BTreeMap<String, String> =
        serde_json::from_str(text).map_err(|e| SetFileError::Json(e.to_string()))?;
    let mut set = BTreeMap::new();
    for (key, value) in object {
        let bytes = |text: &str, size: usize, what: &'static str| {
            let bytes = hex::decode(text).map_err(|_| SetFileError::Hex {
                what,
                text: text.to_owned(),
            })?;
            if size != 0 && bytes.len() != size {
                return Err(SetFileError::Size {
                    what,
                    text: text.to_owned(),
                    got: bytes.len(),
                    want: size,
                });
            }
            Ok(bytes)
        };
        set.insert(
            bytes(&key, key_size, "key")?,
            bytes(&value, value_size, "value")?,
        );
    }
    Ok(set)
}

/// Parses a set file of typed values: a JSON object `{"HEXKEY": VALUE, ...}`
/// whose values are any JSON (what a map followed with
/// [`crate::ValueFormat::Json`] takes), each written as its compact JSON
/// text. Keys are checked against `key_size` (0: any); the values are
/// checked by each node's follower against the map's BTF (one that does
/// not fit is a bad key there).
pub fn parse_json_set(
    text: &str,
    key_size: usize,
) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, SetFileError> {
    let object: BTreeMap<String, serde_json::Value> =
        serde_json::from_str(text).map_err(|e| SetFileError::Json(e.to_string()))?;
    let mut set = BTreeMap::new();
    for (key, value) in object {
        let bytes = hex::decode(&key).map_err(|_| SetFileError::Hex {
            what: "key",
            text: key.clone(),
        })?;
        if key_size != 0 && bytes.len() != key_size {
            return Err(SetFileError::Size {
                what: "key",
                got: bytes.len(),
                text: key,
                want: key_size,
            });
        }
        set.insert(bytes, value.to_string().into_bytes());
    }
    Ok(set)
}

/// Why a set file was refused (nothing was written).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetFileError {
    /// Not a JSON object (of hex strings, for a raw set).
    #[error("not a JSON object of hex keys (and hex string values, unless --format json): {0}")]
    Json(String),
    /// A key or value is not hex.
    #[error("{what} `{text}` is not hex")]
    Hex {
        /// "key" or "value".
        what: &'static str,
        /// The text.
        text: String,
    },
    /// A key or value has the wrong size.
    #[error("{what} `{text}` is {got} bytes, want {want}")]
    Size {
        /// "key" or "value".
        what: &'static str,
        /// The text.
        text: String,
        /// Bytes given.
        got: usize,
        /// Bytes wanted.
        want: usize,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_deletes_the_rest_merge_only_puts_and_equal_entries_are_skipped() {
        let layout = Layout::new("p", 0, 0);
        let current = BTreeMap::from([
            (b"p/01".to_vec(), vec![1]),
            (b"p/02".to_vec(), vec![2]),
            (b"p/junk".to_vec(), vec![0]),
        ]);
        let set = BTreeMap::from([(vec![1], vec![1]), (vec![3], vec![3])]);
        let replace = plan_set(&layout, &current, &set, SetMode::Replace);
        let merge = plan_set(&layout, &current, &set, SetMode::Merge);
        let text = |ops: &[TxnOp]| format!("{ops:?}");
        assert_eq!(replace.len(), 3, "{}", text(&replace));
        assert_eq!(merge.len(), 1, "{}", text(&merge));
        // which keys: the CLI test against a real etcd (tests/fleet_e2e.rs)
    }

    #[test]
    fn json_set_files_keep_values_as_compact_json_and_check_keys() {
        let set = parse_json_set(r#"{"0100": {"packets": 1, "name": "web"}}"#, 2).expect("ok");
        assert_eq!(
            set,
            BTreeMap::from([(vec![1, 0], br#"{"packets":1,"name":"web"}"#.to_vec())])
        );
        assert!(matches!(
            parse_json_set("[]", 0),
            Err(SetFileError::Json(_))
        ));
        assert_eq!(
            parse_json_set(r#"{"01": 1}"#, 2).unwrap_err().to_string(),
            "key `01` is 1 bytes, want 2"
        );
    }

    #[test]
    fn set_files_are_checked() {
        let set = parse_hex_set(r#"{"0100": "ff"}"#, 2, 1).expect("ok");
        assert_eq!(set, BTreeMap::from([(vec![1, 0], vec![0xff])]));
        assert!(matches!(
            parse_hex_set("[1]", 0, 0),
            Err(SetFileError::Json(_))
        ));
        assert_eq!(
            parse_hex_set(r#"{"zz": "ff"}"#, 0, 0),
            Err(SetFileError::Hex {
                what: "key",
                text: "zz".into()
            })
        );
        assert_eq!(
            parse_hex_set(r#"{"01": "ff"}"#, 2, 0)
                .unwrap_err()
                .to_string(),
            "key `01` is 1 bytes, want 2"
        );
    }
}
