//! Typed replies: protobuf messages turned into plain Rust values.

use bytes::Bytes;
use mapsync_api as pb;

use crate::error::ClientError;

/// A mirrored map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapDescription {
    /// Name to use in requests.
    pub name: String,
    /// Kernel map id.
    pub id: u32,
    /// Kind, as the kernel names it.
    pub kind: String,
    /// Key size in bytes.
    pub key_size: u32,
    /// Declared value size (one CPU's value for per-CPU maps).
    pub value_size: u32,
    /// Value bytes as reads carry them (per-CPU maps: one slot per possible
    /// CPU, each rounded up to 8 bytes).
    pub value_bytes: u32,
    /// Capacity.
    pub max_entries: u32,
    /// Entries in the mirror.
    pub entries: u64,
    /// Whether keys and values can be decoded with the map's BTF.
    pub has_btf: bool,
    /// Name the kernel knows the map by (a switchable map: its outer map's).
    pub kernel_name: String,
    /// Whether the map is switchable (written atomically with
    /// [`Client::apply`](crate::Client::apply)).
    pub switchable: bool,
    /// The live version of a switchable map (0 for others).
    pub version: u64,
}

impl MapDescription {
    /// Whether values hold one slot per possible CPU.
    pub fn is_per_cpu(&self) -> bool {
        self.kind.contains("percpu")
    }
}

/// Every mirrored map, at one revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Maps {
    /// The server's epoch.
    pub epoch: u64,
    /// The revision of the listing.
    pub revision: u64,
    /// The maps.
    pub maps: Vec<MapDescription>,
}

impl Maps {
    /// The description of map `name`.
    pub fn get(&self, name: &str) -> Option<&MapDescription> {
        self.maps.iter().find(|m| m.name == name)
    }
}

/// One key's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetResult {
    /// The value, if the key is present.
    pub value: Option<Bytes>,
    /// Revision of the change that set it (0 if absent).
    pub mod_revision: u64,
    /// The revision the read reflects.
    pub revision: u64,
    /// The value decoded with the map's BTF, as JSON text, when asked
    /// ([`Client::get_decoded`](crate::Client::get_decoded)) and the map has BTF.
    pub value_json: Option<String>,
}

/// Every entry of a map at one revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// The server's epoch.
    pub epoch: u64,
    /// The revision every entry is read at.
    pub revision: u64,
    /// Keys and values, in key order.
    pub entries: Vec<(Bytes, Bytes)>,
    /// The same keys and values decoded with the map's BTF, as JSON text:
    /// one pair per entry, in the same order, when asked
    /// ([`Client::list_decoded`](crate::Client::list_decoded)), else none.
    /// Empty strings where the map has no BTF.
    pub decoded: Vec<(String, String)>,
}

/// What happened to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Created or replaced.
    Put,
    /// Removed.
    Delete,
}

impl Op {
    /// `"put"` or `"delete"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Put => "put",
            Op::Delete => "delete",
        }
    }
}

/// One change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Its revision.
    pub revision: u64,
    /// The map.
    pub map: String,
    /// Put or delete.
    pub op: Op,
    /// Key bytes.
    pub key: Bytes,
    /// New value; `None` on delete.
    pub value: Option<Bytes>,
    /// Who saw it: "initial", "emit", "trace", "resync", "poll" or "api" (a
    /// write through the API).
    pub source: &'static str,
    /// The key decoded with the map's BTF, as JSON text, when the watch
    /// asked for it ([`WatchOptions::decoded`]) and the map has BTF.
    pub key_json: Option<String>,
    /// The value decoded likewise (`None` on delete).
    pub value_json: Option<String>,
    /// With [`WatchOptions::prev_value`]: the value before this change
    /// (`None` if the key was absent, and always without the option).
    pub prev_value: Option<Bytes>,
}

/// What a watch yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchItem {
    /// Changes in revision order (or entries of the initial state).
    Events(Vec<Event>),
    /// The initial state is complete as of `revision`.
    InitialStateDone {
        /// The server's epoch, which `revision` belongs to (resume with both).
        epoch: u64,
        /// Live changes follow from `revision + 1`.
        revision: u64,
    },
    /// Every selected change up to `revision` has been delivered.
    Progress {
        /// The revision the watch is complete up to.
        revision: u64,
    },
    /// The watch could not continue where it was (history compacted, server
    /// restarted, or the initial state was interrupted): `entries` is the
    /// complete selected state as of `revision` of `epoch`, to replace
    /// whatever the consumer holds; live changes follow from `revision + 1`.
    StartOver {
        /// Why.
        reason: StartOverReason,
        /// The epoch the state belongs to.
        epoch: u64,
        /// The revision the state was read at.
        revision: u64,
        /// Every selected entry, as puts with source "initial".
        entries: Vec<Event>,
    },
}

/// Why a watch delivered a [`WatchItem::StartOver`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartOverReason {
    /// The changes after the last delivered revision are no longer in the
    /// server's change log (it kept from `oldest`).
    Compacted {
        /// The oldest revision the server still had.
        oldest: u64,
    },
    /// The server restarted: revisions of the old epoch mean nothing now.
    EpochChanged,
    /// The connection broke while the initial state was being delivered.
    InitialStateInterrupted,
}

/// What to watch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchOptions {
    /// Map names; empty: every map.
    pub maps: Vec<String>,
    /// 0: current state first, then live; N: changes from revision N (at
    /// most one past the server's current revision).
    pub start_revision: u64,
    /// The epoch `start_revision` belongs to: required when it is > 0 (the
    /// server refuses a resume without one, `INVALID_ARGUMENT`); ignored
    /// for 0.
    pub epoch: u64,
    /// Only keys starting with these bytes.
    pub key_prefix: Bytes,
    /// Also receive keys and values decoded with their map's BTF.
    pub decode: bool,
    /// One key, or with `range_end` the start of the range `[key, range_end)`.
    pub key: Bytes,
    /// The end of the key range (exclusive).
    pub range_end: Bytes,
    /// Skip puts.
    pub no_put: bool,
    /// Skip deletes.
    pub no_delete: bool,
    /// Deliver each change's previous value ([`Event::prev_value`]).
    pub prev_value: bool,
    /// Ask for [`WatchItem::Progress`] this often (`None`: never).
    pub progress_interval: Option<std::time::Duration>,
}

/// Where a read stands in history.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadOptions {
    /// Read as of this revision (0: current); it must still be in the
    /// server's change log.
    pub revision: u64,
    /// Wait until the server has reached this revision (read-your-writes).
    pub min_revision: u64,
    /// The epoch the revisions belong to (0: any).
    pub epoch: u64,
    /// The call's deadline (bounds the wait for `min_revision`).
    pub timeout: Option<std::time::Duration>,
    /// Also receive keys and values decoded with the map's BTF.
    pub decode: bool,
}

impl WatchOptions {
    /// Every change of the named maps, current state first.
    pub fn maps(names: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            maps: names.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }

    /// The same, with keys and values also decoded with their map's BTF
    /// (for maps that have it).
    pub fn decoded(mut self, decode: bool) -> Self {
        self.decode = decode;
        self
    }

    /// The same, from revision `revision` of epoch `epoch`.
    pub fn from_revision(mut self, revision: u64, epoch: u64) -> Self {
        self.start_revision = revision;
        self.epoch = epoch;
        self
    }
}

impl From<pb::MapDescription> for MapDescription {
    fn from(map: pb::MapDescription) -> Self {
        Self {
            name: map.name,
            id: map.id,
            kind: map.kind,
            key_size: map.key_size,
            value_size: map.value_size,
            value_bytes: map.value_bytes,
            max_entries: map.max_entries,
            entries: map.entries,
            has_btf: map.has_btf,
            kernel_name: map.kernel_name,
            switchable: map.switchable,
            version: map.version,
        }
    }
}

impl TryFrom<pb::Event> for Event {
    type Error = ClientError;

    fn try_from(event: pb::Event) -> Result<Self, ClientError> {
        let op = match pb::Op::try_from(event.op) {
            Ok(pb::Op::Put) => Op::Put,
            Ok(pb::Op::Delete) => Op::Delete,
            _ => return Err(ClientError::Protocol("event with an unknown op")),
        };
        let source = match pb::Source::try_from(event.source) {
            Ok(pb::Source::Initial) => "initial",
            Ok(pb::Source::Emit) => "emit",
            Ok(pb::Source::Trace) => "trace",
            Ok(pb::Source::Resync) => "resync",
            Ok(pb::Source::Poll) => "poll",
            Ok(pb::Source::Api) => "api",
            _ => "unknown",
        };
        Ok(Self {
            revision: event.revision,
            map: event.map,
            op,
            key: event.key,
            value: (op == Op::Put).then_some(event.value),
            source,
            key_json: non_empty(event.key_json),
            value_json: non_empty(event.value_json),
            prev_value: event.has_prev.then_some(event.prev_value),
        })
    }
}

/// The events of a batch, typed.
pub(crate) fn events(batch: pb::EventBatch) -> Result<Vec<Event>, ClientError> {
    batch.events.into_iter().map(Event::try_from).collect()
}

/// `None` for the empty string (protobuf's "not set").
pub(crate) fn non_empty(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}
