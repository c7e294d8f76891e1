//! Validating write requests before any syscall, and checking them against
//! the caught-up mirror: sizes, kinds, Txn shape, compares, previous states.

use std::collections::HashSet;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use bytes::Bytes;
use mapsync_core::control::{
    CommandError, Compare, CompareResult, CompareTarget, Previous, PutMode, WriteOp,
};
use mapsync_core::map_info::MapKind;
use mapsync_core::snapshot::Snapshot;

use crate::ingest::Ingest;
use crate::sys;

pub(super) const BPF_ANY: u64 = 0;
pub(super) const BPF_NOEXIST: u64 = 1;
pub(super) const BPF_EXIST: u64 = 2;

/// One validated kernel write.
#[derive(Debug)]
pub(super) struct Planned {
    pub(super) map_id: u32,
    pub(super) map: Arc<str>,
    pub(super) kind: MapKind,
    pub(super) max_entries: u32,
    pub(super) key: Bytes,
    /// The value as the mirror holds it; `None`: a delete.
    pub(super) value: Option<Bytes>,
    /// The value as the syscall takes it: the same bytes, except for a
    /// map-of-maps, whose mirror value is an inner map id and whose syscall
    /// value is an fd of that map (held in `_inner`).
    pub(super) syscall_value: Option<Vec<u8>>,
    _inner: Option<OwnedFd>,
    pub(super) flags: u64,
    pub(super) value_bytes: usize,
}

impl Planned {
    /// The write, as the reply names it.
    pub(super) fn what(&self) -> &'static str {
        match (&self.value, self.flags) {
            (None, _) => "delete",
            (Some(_), BPF_NOEXIST) => "put (no-exist)",
            (Some(_), BPF_EXIST) => "put (exist)",
            (Some(_), _) => "put",
        }
    }

    /// An array index past the end (the kernel would say E2BIG).
    pub(super) fn index_out_of_range(&self) -> bool {
        self.kind.is_array_like()
            && self.key.len() == 4
            && u32::from_ne_bytes(self.key[..4].try_into().expect("4 bytes")) >= self.max_entries
    }
}

/// A map-of-maps value (an inner map id, as lookups give it) as the
/// syscall takes it: an fd of that map, kept open by the caller until the
/// write is made.
pub(super) fn inner_map_fd(id_bytes: &[u8]) -> std::io::Result<(Vec<u8>, OwnedFd)> {
    let id = u32::from_ne_bytes(id_bytes.try_into().map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "an inner map id has 4 bytes",
        )
    })?);
    let fd = sys::map_fd_by_id(id)?;
    Ok(((fd.as_raw_fd() as u32).to_ne_bytes().to_vec(), fd))
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(super) fn invalid(reason: String) -> CommandError {
    CommandError::InvalidArgument { reason }
}

/// `error` with its reason prefixed by where in a Txn it is.
pub(super) fn prefixed(error: CommandError, at: &str) -> CommandError {
    match error {
        CommandError::InvalidArgument { reason } => invalid(format!("{at}: {reason}")),
        other => other,
    }
}

/// The key's state in `snapshot` (absent: no value, mod revision 0).
pub(super) fn previous_of(snapshot: &Snapshot, map: &str, key: &[u8]) -> Previous {
    match snapshot.map(map).and_then(|view| view.entry(key)) {
        Some(entry) => Previous {
            value: Some(entry.value_bytes()),
            mod_revision: entry.mod_revision,
        },
        None => Previous {
            value: None,
            mod_revision: 0,
        },
    }
}

/// Whether `compare` (validated) holds in `snapshot`.
pub(super) fn holds(snapshot: &Snapshot, compare: &Compare) -> bool {
    use std::cmp::Ordering;
    let entry = snapshot
        .map(&compare.map)
        .and_then(|view| view.entry(&compare.key));
    let order = match &compare.target {
        CompareTarget::ModRevision(target) => entry.map_or(0, |e| e.mod_revision).cmp(target),
        // an absent key never compares true
        CompareTarget::Value(target) => match entry {
            Some(entry) => entry.value.cmp(target),
            None => return false,
        },
        // validated: Equal or NotEqual only
        CompareTarget::Exists(target) => {
            return (entry.is_some() == *target) == (compare.result == CompareResult::Equal);
        }
    };
    match compare.result {
        CompareResult::Equal => order == Ordering::Equal,
        CompareResult::NotEqual => order != Ordering::Equal,
        CompareResult::Greater => order == Ordering::Greater,
        CompareResult::Less => order == Ordering::Less,
    }
}

impl Ingest {
    /// Validates one compare (the map, the key size, the target).
    pub(super) fn check_compare(&self, compare: &Compare) -> Result<(), CommandError> {
        let map = self
            .maps
            .values()
            .find(|map| *map.name == *compare.map)
            .ok_or_else(|| CommandError::UnknownMap {
                name: compare.map.clone(),
            })?;
        let info = &map.info;
        if compare.key.len() != info.key_size as usize {
            return Err(invalid(format!(
                "key: {} bytes, map `{}` has {}-byte keys",
                compare.key.len(),
                info.name,
                info.key_size
            )));
        }
        match &compare.target {
            CompareTarget::Exists(_)
                if matches!(compare.result, CompareResult::Greater | CompareResult::Less) =>
            {
                Err(invalid(
                    "an existence compare takes Equal or NotEqual, not Greater or Less".into(),
                ))
            }
            CompareTarget::Value(value) if value.len() != info.value_bytes as usize => {
                Err(invalid(format!(
                    "value: {} bytes, map `{}` has {}-byte values",
                    value.len(),
                    info.name,
                    info.value_bytes
                )))
            }
            _ => Ok(()),
        }
    }

    /// Validates one branch of a Txn: no per-op expected revision, each key
    /// written at most once, each op valid for its map.
    pub(super) fn plan_branch(
        &self,
        ops: Vec<WriteOp>,
        branch: &str,
    ) -> Result<Vec<Planned>, CommandError> {
        let mut written = HashSet::with_capacity(ops.len());
        let mut planned = Vec::with_capacity(ops.len());
        for (index, op) in ops.into_iter().enumerate() {
            let at = format!("{branch}[{index}]");
            let (map, key, value, mode, expect) = match op {
                WriteOp::Put(put) => (
                    put.map,
                    put.key,
                    Some(put.value),
                    put.mode,
                    put.expect_mod_revision,
                ),
                WriteOp::Delete(delete) => (
                    delete.map,
                    delete.key,
                    None,
                    PutMode::Any,
                    delete.expect_mod_revision,
                ),
            };
            if expect.is_some() {
                return Err(invalid(format!(
                    "{at}: expect_mod_revision is not taken inside a Txn (put a ModRevision compare in compares)"
                )));
            }
            if !written.insert((map.clone(), key.clone())) {
                return Err(invalid(format!(
                    "{at}: key {} of map `{map}` is written twice (a Txn writes a key at most once per branch)",
                    hex(&key)
                )));
            }
            planned.push(
                self.plan(&map, key, value, mode)
                    .map_err(|error| prefixed(error, &at))?,
            );
        }
        Ok(planned)
    }

    /// Validates one write against its map.
    pub(super) fn plan(
        &self,
        map: &str,
        key: Bytes,
        value: Option<Bytes>,
        mode: PutMode,
    ) -> Result<Planned, CommandError> {
        let Some((&map_id, mirrored)) = self.maps.iter().find(|(_, m)| &*m.name == map) else {
            return Err(CommandError::UnknownMap { name: map.into() });
        };
        let info = &mirrored.info;
        if info.switchable {
            return Err(invalid(format!(
                "map `{map}` is switchable: write it with Apply (Put, Delete and Txn write plain maps)"
            )));
        }
        if key.len() != info.key_size as usize {
            return Err(invalid(format!(
                "key: {} bytes, map `{map}` has {}-byte keys",
                key.len(),
                info.key_size
            )));
        }
        if let Some(value) = &value
            && value.len() != info.value_bytes as usize
        {
            let slot = info.value_size.div_ceil(8) * 8;
            let layout = if info.kind.is_per_cpu() {
                format!(
                    " ({} possible CPUs x {slot} bytes)",
                    info.value_bytes / slot.max(1)
                )
            } else if info.kind.is_map_of_maps() {
                " (an inner map id)".into()
            } else {
                String::new()
            };
            return Err(invalid(format!(
                "value: {} bytes, map `{map}` has {}-byte values{layout}",
                value.len(),
                info.value_bytes
            )));
        }
        if value.is_none() && info.kind.holds_every_index() {
            return Err(invalid(format!(
                "map `{map}` is a {} map: its entries cannot be deleted (put a zero value instead)",
                info.kind
            )));
        }
        let (syscall_value, inner) = match &value {
            Some(id) if info.kind.is_map_of_maps() => {
                let (fd_bytes, fd) = inner_map_fd(id).map_err(|error| {
                    invalid(format!(
                        "value: no inner map with id {} ({error})",
                        u32::from_ne_bytes(id[..4].try_into().expect("4 bytes"))
                    ))
                })?;
                (Some(fd_bytes), Some(fd))
            }
            Some(value) => (Some(value.to_vec()), None),
            None => (None, None),
        };
        Ok(Planned {
            map_id,
            map: mirrored.name.clone(),
            kind: info.kind,
            max_entries: info.max_entries,
            key,
            value,
            syscall_value,
            _inner: inner,
            flags: match mode {
                PutMode::Any => BPF_ANY,
                PutMode::NoExist => BPF_NOEXIST,
                PutMode::Exist => BPF_EXIST,
            },
            value_bytes: info.value_bytes as usize,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mapsync_core::changelog::LogLimits;
    use mapsync_core::map_info::MapInfo;
    use mapsync_core::store::Store;

    fn compare(key: u8, result: CompareResult, target: CompareTarget) -> Compare {
        Compare {
            map: "m".into(),
            key: Bytes::from(vec![key]),
            result,
            target,
        }
    }

    /// A mirror of map `m` holding key 1 = [5] at revision 1 (key 2 absent).
    fn snapshot() -> Arc<Snapshot> {
        let (store, mut publisher) = Store::new(LogLimits::default());
        let info = MapInfo::new("m", MapKind::Hash, 1, 1, 4);
        publisher.add_map(
            info,
            vec![(Bytes::from(vec![1u8]), Bytes::from(vec![5u8]), 0)],
            0,
        );
        store.snapshot()
    }

    #[test]
    fn mod_revision_compares_order_an_absent_key_as_zero() {
        let snapshot = snapshot();
        use CompareResult::*;
        use CompareTarget::ModRevision;
        for (key, result, target, expected) in [
            (1, Equal, 1, true),
            (1, NotEqual, 1, false),
            (1, Greater, 0, true),
            (1, Less, 2, true),
            (1, Less, 1, false),
            (2, Equal, 0, true),
            (2, Less, 1, true),
            (2, Greater, 0, false),
        ] {
            let c = compare(key, result, ModRevision(target));
            assert_eq!(holds(&snapshot, &c), expected, "{c:?}");
        }
    }

    #[test]
    fn value_compares_are_bytewise_and_never_hold_on_an_absent_key() {
        let snapshot = snapshot();
        use CompareResult::*;
        let value = |v: u8| CompareTarget::Value(Bytes::from(vec![v]));
        for (key, result, target, expected) in [
            (1, Equal, 5, true),
            (1, NotEqual, 5, false),
            (1, NotEqual, 6, true),
            (1, Greater, 4, true),
            (1, Less, 6, true),
            (1, Greater, 5, false),
            (2, Equal, 0, false),
            (2, NotEqual, 0, false),
            (2, Less, 255, false),
        ] {
            let c = compare(key, result, value(target));
            assert_eq!(holds(&snapshot, &c), expected, "{c:?}");
        }
    }

    #[test]
    fn existence_compares_take_equal_and_not_equal() {
        let snapshot = snapshot();
        use CompareResult::*;
        use CompareTarget::Exists;
        for (key, result, target, expected) in [
            (1, Equal, true, true),
            (1, Equal, false, false),
            (1, NotEqual, false, true),
            (2, Equal, false, true),
            (2, NotEqual, false, false),
            (2, NotEqual, true, true),
        ] {
            let c = compare(key, result, Exists(target));
            assert_eq!(holds(&snapshot, &c), expected, "{c:?}");
        }
        assert_eq!(
            previous_of(&snapshot, "m", &[1]),
            Previous {
                value: Some(Bytes::from(vec![5u8])),
                mod_revision: 1
            }
        );
        assert_eq!(previous_of(&snapshot, "m", &[2]).mod_revision, 0);
    }
}
