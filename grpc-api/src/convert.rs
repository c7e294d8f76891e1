//! Protobuf <-> domain, both directions: mirror types as protobuf messages
//! (events, map descriptions, entries, decoded fields), and requests as
//! mirror types (a watch's subscription filter), checked. The services
//! build their replies from these. (The write RPCs' conversions are still in
//! `service/write*.rs`, and the watch batching in `service/watcher.rs` /
//! `outbound.rs`, until they move here.)

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex, PoisonError};

use bytes::Bytes;
use mapsync_core::ratelimit::LogLimiter;
use mapsync_core::{
    ChangeEvent, Entry, EventSource, KeyRange, MapInfo, MapView, Op, Snapshot, SubscribeFilter,
};

use crate::error::RequestError;
use crate::pb;

/// A change as a protobuf event, with its previous value if `prev` is set.
pub fn event_with_prev(event: &ChangeEvent, prev: bool) -> pb::Event {
    pb::Event {
        revision: event.revision,
        map: event.map.to_string(),
        op: op(event.op) as i32,
        key: event.key.clone(),
        value: event.value.clone().unwrap_or_default(),
        source: source(event.source) as i32,
        prev_value: if prev {
            event.prev_value.clone().unwrap_or_default()
        } else {
            Default::default()
        },
        has_prev: prev && event.prev_value.is_some(),
        ..pb::Event::default()
    }
}

/// An operation as its protobuf enum.
pub fn op(op: Op) -> pb::Op {
    match op {
        Op::Put => pb::Op::Put,
        Op::Delete => pb::Op::Delete,
    }
}

/// A capture source as its protobuf enum.
pub fn source(source: EventSource) -> pb::Source {
    match source {
        EventSource::Initial => pb::Source::Initial,
        EventSource::Emit => pb::Source::Emit,
        EventSource::Trace => pb::Source::Trace,
        EventSource::Resync => pb::Source::Resync,
        EventSource::Poll => pb::Source::Poll,
        EventSource::Api => pb::Source::Api,
    }
}

/// A mirrored map's description.
pub fn map_description(name: &str, view: &MapView) -> pb::MapDescription {
    let info = view.info();
    pb::MapDescription {
        name: name.to_owned(),
        id: info.id,
        kind: info.kind.name(),
        key_size: info.key_size,
        value_size: info.value_size,
        value_bytes: info.value_bytes,
        max_entries: info.max_entries,
        entries: view.len() as u64,
        kernel_name: info.kernel_name.clone(),
        has_btf: info.types.is_some(),
        switchable: info.switchable,
        version: view.version(),
    }
}

/// Fills the decoded (`*_json`) fields of replies to a request that asked
/// for them (`decode = true`), for maps that carry BTF. Holds only the
/// maps' types, never a snapshot, so a long watch keeps no old data alive.
#[derive(Debug, Clone, Default)]
pub struct Decoder {
    maps: HashMap<String, MapInfo>,
}

impl Decoder {
    /// A decoder for the typed maps of `snapshot`; one that fills nothing
    /// when `decode` is false.
    pub fn new(decode: bool, snapshot: &Snapshot) -> Self {
        let maps = snapshot
            .maps()
            .filter(|(_, view)| decode && view.info().types.is_some())
            .map(|(name, view)| (name.to_string(), view.info().clone()))
            .collect();
        Self { maps }
    }

    /// Whether this decoder fills nothing (decoding not asked, or no map has
    /// BTF): its events are the plain ones every such watch shares.
    pub fn fills_nothing(&self) -> bool {
        self.maps.is_empty()
    }

    /// JSON text of `key` of `map`; empty when not asked or untyped.
    pub fn key(&self, map: &str, key: &[u8]) -> String {
        self.maps
            .get(map)
            .and_then(|info| json(map, "key", info.decode_key(key)))
            .unwrap_or_default()
    }

    /// JSON text of `value` (syscall layout) of `map`; empty when not asked
    /// or untyped.
    pub fn value(&self, map: &str, value: &[u8]) -> String {
        self.maps
            .get(map)
            .and_then(|info| json(map, "value", info.decode_value(value)))
            .unwrap_or_default()
    }

    /// A mirrored entry of `map` as a protobuf entry, decoded if asked.
    pub fn entry(&self, map: &str, key: &[u8], entry: &Entry) -> pb::Entry {
        pb::Entry {
            key: Bytes::copy_from_slice(key),
            value: entry.value_bytes(),
            mod_revision: entry.mod_revision,
            key_json: self.key(map, key),
            value_json: self.value(map, entry.value),
        }
    }

    /// A change as a protobuf event, with its previous value if `prev` is
    /// set, and its decoded key and value.
    pub fn event(&self, change: &ChangeEvent, prev: bool) -> pb::Event {
        let mut pb = event_with_prev(change, prev);
        pb.key_json = self.key(&change.map, &change.key);
        if let Some(value) = &change.value {
            pb.value_json = self.value(&change.map, value);
        }
        pb
    }
}

fn json(
    map: &str,
    what: &str,
    decoded: Option<Result<mapsync_core::btf::TypedValue, mapsync_core::btf::BtfError>>,
) -> Option<String> {
    match decoded? {
        Ok(value) => Some(crate::json::to_json(&value)),
        Err(error) => {
            // a client asking to decode a large map with odd BTF would
            // otherwise log a line per entry and request
            static WARNINGS: LazyLock<Mutex<LogLimiter>> = LazyLock::new(Default::default);
            let mut warnings = WARNINGS.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(suppressed) = warnings.check() {
                tracing::warn!(
                    map,
                    %error,
                    suppressed,
                    "cannot decode a {what} with the map's BTF (sent undecoded)"
                );
            }
            None
        }
    }
}

/// The `Canceled` a watch gets when its client canceled it, complete up to
/// `complete`.
pub fn canceled_by_client(complete: u64) -> pb::WatchCanceled {
    pb::WatchCanceled {
        reason: pb::CancelReason::ClientRequested as i32,
        message: "canceled by the client".into(),
        revision: complete,
        ..Default::default()
    }
}

/// What a watch create selects, as the mirror's subscription filter: maps
/// (none: every map), puts and deletes, and keys: one key (`key`), a range
/// (`key`, `range_end`: `[key, range_end)`), or a prefix (`key_prefix`,
/// which excludes the other two).
pub fn subscribe_filter(create: &pb::WatchCreateRequest) -> Result<SubscribeFilter, RequestError> {
    Ok(SubscribeFilter {
        maps: create.maps.clone(),
        key_prefix: (!create.key_prefix.is_empty()).then(|| create.key_prefix.clone()),
        key_range: key_range(create)?,
        no_put: create.no_put,
        no_delete: create.no_delete,
    })
}

/// The key range of a create request, checked.
fn key_range(create: &pb::WatchCreateRequest) -> Result<Option<KeyRange>, RequestError> {
    let has_key = !create.key.is_empty();
    let has_end = !create.range_end.is_empty();
    if !create.key_prefix.is_empty() && (has_key || has_end) {
        return Err(RequestError::BadKeySelection {
            reason: "key_prefix excludes key and range_end",
        });
    }
    if has_end && create.range_end <= create.key {
        return Err(RequestError::BadKeySelection {
            reason: "range_end must be greater than key",
        });
    }
    Ok(match (has_key, has_end) {
        (false, false) => None,
        (true, false) => Some(KeyRange {
            start: create.key.clone(),
            end: None,
        }),
        (_, true) => Some(KeyRange {
            start: create.key.clone(),
            end: Some(create.range_end.clone()),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use mapsync_core::btf::{Btf, MapTypes};
    use mapsync_core::{MapKind, Store};
    use std::sync::Arc;

    fn info(name: &str, types: Option<MapTypes>) -> MapInfo {
        MapInfo {
            name: name.into(),
            id: 1,
            kernel_name: name.into(),
            kind: MapKind::Hash,
            key_size: 8,
            value_size: 32,
            max_entries: 8,
            value_bytes: 32,
            types,
            switchable: false,
        }
    }

    fn typed_snapshot() -> Arc<Snapshot> {
        let btf = Btf::from_elf(mapsync_ebpf::TYPED_OBJECT).expect("typed object BTF");
        let key = btf.find("typed_flow_key").expect("key type");
        let value = btf.find("typed_flow_value").expect("value type");
        let types = MapTypes::new(Arc::new(btf), 1, key, value, 8, 32).expect("sizes fit");
        let (store, mut writer) = Store::new(Default::default());
        writer.add_map(info("typed", Some(types)), Vec::new(), 0);
        writer.add_map(info("plain", None), Vec::new(), 0);
        store.snapshot()
    }

    fn change(map: &str, value: Option<Vec<u8>>) -> ChangeEvent {
        let mut key = 7u32.to_ne_bytes().to_vec();
        key.extend(80u16.to_ne_bytes());
        key.extend(6u16.to_ne_bytes());
        ChangeEvent {
            revision: 1,
            map: map.into(),
            op: if value.is_some() { Op::Put } else { Op::Delete },
            key: key.into(),
            value: value.map(Bytes::from),
            source: EventSource::Trace,
            prev_value: None,
            prev_mod_revision: 0,
        }
    }

    #[test]
    fn decoded_fields_are_filled_only_when_asked_and_typed() {
        let snapshot = typed_snapshot();
        let mut value = vec![0u8; 32];
        value[0] = 3;
        value[8] = b'a';
        let decoder = Decoder::new(true, &snapshot);
        let put = decoder.event(&change("typed", Some(value.clone())), false);
        assert_eq!(put.key_json, r#"{"addr":7,"port":80,"proto":6}"#);
        assert_eq!(
            put.value_json,
            r#"{"packets":3,"name":"a","verdict":"TYPED_PASS"}"#
        );
        let delete = decoder.event(&change("typed", None), false);
        assert!(!delete.key_json.is_empty() && delete.value_json.is_empty());
        let plain = decoder.event(&change("plain", Some(value.clone())), false);
        assert!(plain.key_json.is_empty() && plain.value_json.is_empty());
        let not_asked = Decoder::new(false, &snapshot).event(&change("typed", Some(value)), false);
        assert!(not_asked.key_json.is_empty() && not_asked.value_json.is_empty());
        let described: Vec<(String, bool)> = snapshot
            .maps()
            .map(|(name, view)| (name.to_string(), map_description(name, view).has_btf))
            .collect();
        assert!(described.contains(&("typed".into(), true)));
        assert!(described.contains(&("plain".into(), false)));
    }

    #[test]
    fn a_delete_carries_an_empty_value() {
        let pb = event_with_prev(
            &ChangeEvent {
                revision: 9,
                map: "m".into(),
                op: Op::Delete,
                key: Bytes::from_static(b"k"),
                value: None,
                source: EventSource::Trace,
                prev_value: None,
                prev_mod_revision: 0,
            },
            false,
        );
        assert_eq!(pb.op, pb::Op::Delete as i32);
        assert_eq!(pb.source, pb::Source::Trace as i32);
        assert!(pb.value.is_empty());
        assert_eq!(&pb.key[..], b"k");
    }

    #[test]
    fn a_watch_create_becomes_its_subscription_filter() {
        let create = |key: &'static [u8], range_end: &'static [u8], prefix: &'static [u8]| {
            pb::WatchCreateRequest {
                maps: vec!["m".into()],
                key: Bytes::from_static(key),
                range_end: Bytes::from_static(range_end),
                key_prefix: Bytes::from_static(prefix),
                no_delete: true,
                ..Default::default()
            }
        };
        let all = subscribe_filter(&create(b"", b"", b"")).expect("no selection");
        assert_eq!(all.maps, vec!["m".to_string()]);
        assert!(all.key_range.is_none() && all.key_prefix.is_none());
        assert!(all.no_delete && !all.no_put);
        let one = subscribe_filter(&create(b"k", b"", b"")).expect("one key");
        assert_eq!(
            one.key_range,
            Some(KeyRange {
                start: Bytes::from_static(b"k"),
                end: None
            })
        );
        let range = subscribe_filter(&create(b"a", b"c", b"")).expect("a range");
        assert_eq!(
            range.key_range.and_then(|r| r.end),
            Some(Bytes::from_static(b"c"))
        );
        let from_start = subscribe_filter(&create(b"", b"c", b"")).expect("from the first key");
        assert_eq!(from_start.key_range.map(|r| r.start), Some(Bytes::new()));
        let prefix = subscribe_filter(&create(b"", b"", b"p")).expect("a prefix");
        assert_eq!(prefix.key_prefix, Some(Bytes::from_static(b"p")));
        for (key, end, prefix) in [
            (&b"k"[..], &b""[..], &b"p"[..]),
            (b"", b"z", b"p"),
            (b"c", b"a", b""),
            (b"c", b"c", b""),
        ] {
            let error = subscribe_filter(&create(key, end, prefix)).expect_err("bad selection");
            assert!(
                matches!(error, RequestError::BadKeySelection { .. }),
                "{error}"
            );
        }
    }

    #[test]
    fn an_entry_carries_its_bytes_revision_and_decoded_fields() {
        let key = change("typed", None).key;
        let (store, mut writer) = Store::new(Default::default());
        let types = typed_snapshot().map("typed").expect("typed").info().clone();
        let entries = vec![(key.clone(), Bytes::from(vec![0u8; 32]), 0)];
        writer.add_map(types, entries, 0);
        let snapshot = store.snapshot();
        let view = snapshot.map("typed").expect("added");
        let entry = view.entry(&key).expect("the entry");
        let decoder = Decoder::new(true, &snapshot);
        let pb = decoder.entry("typed", &key, &entry);
        assert_eq!(&pb.key[..], &key[..]);
        assert_eq!(pb.mod_revision, entry.mod_revision);
        assert!(pb.mod_revision > 0);
        assert_eq!(pb.value.len(), 32);
        assert_eq!(pb.key_json, r#"{"addr":7,"port":80,"proto":6}"#);
        assert!(!pb.value_json.is_empty());
        let canceled = canceled_by_client(9);
        assert_eq!(canceled.reason, pb::CancelReason::ClientRequested as i32);
        assert_eq!(canceled.revision, 9);
    }
}
