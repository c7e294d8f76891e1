//! An `Apply` client stream collected into one [`control::Apply`], within
//! bounds a hostile stream cannot grow past.
//!
//! The first message names the map; it must be mirrored and switchable
//! before any entry is kept. Every entry is checked as it arrives (key and
//! value sizes, no delete in replace mode, no key twice), and more entries
//! than the map's `max_entries` end the call with `RESOURCE_EXHAUSTED`. So
//! the collected set never holds more than `max_entries * (key_size +
//! value_bytes)` bytes of keys and values (plus a fixed overhead per entry),
//! and each message is at most the server's request cap (64 KiB).

use std::collections::HashSet;

use bytes::Bytes;
use mapsync_core::Snapshot;
use mapsync_core::control::{self, ApplyMode};
use tonic::Streaming;

use super::{check_size, hex, view};
use crate::pb;
use crate::service::write_status::WriteError;

/// Reads the whole stream into an Apply for `snapshot`'s maps, once
/// `authorize` has accepted the map its first message names.
pub(super) async fn collect(
    snapshot: &Snapshot,
    stream: &mut Streaming<pb::ApplyRequest>,
    authorize: impl FnOnce(&str) -> Result<(), WriteError>,
) -> Result<control::Apply, WriteError> {
    let first = next(stream).await?.ok_or(WriteError::EmptyApply)?;
    if first.map.is_empty() {
        return Err(WriteError::ApplyWithoutMap);
    }
    authorize(&first.map)?;
    tracing::Span::current().record("map", first.map.as_str());
    let mut apply = Collector::new(snapshot, &first)?;
    apply.add(first.entries)?;
    let mut message = 0;
    while let Some(request) = next(stream).await? {
        message += 1;
        if !request.map.is_empty() && request.map != apply.map {
            return Err(WriteError::ApplyMapChanged {
                map: apply.map,
                got: request.map,
                message,
            });
        }
        apply.add(request.entries)?;
    }
    Ok(apply.finish())
}

/// The next message, or the stream's own status (a message too large or
/// undecodable, a client gone).
async fn next(
    stream: &mut Streaming<pb::ApplyRequest>,
) -> Result<Option<pb::ApplyRequest>, WriteError> {
    stream.message().await.map_err(|status| {
        if status.code() == tonic::Code::OutOfRange {
            // tonic's decode-limit refusal: OUT_OF_RANGE means revisions here
            WriteError::Stream(tonic::Status::resource_exhausted(
                status.message().to_owned(),
            ))
        } else {
            WriteError::Stream(status)
        }
    })
}

/// The entries collected so far, and the map's shape they are checked against.
struct Collector {
    map: String,
    mode: ApplyMode,
    expect_version: Option<u64>,
    key_size: u32,
    value_bytes: u32,
    max_entries: u32,
    keys: HashSet<Bytes>,
    entries: Vec<(Bytes, Option<Bytes>)>,
}

impl Collector {
    fn new(snapshot: &Snapshot, first: &pb::ApplyRequest) -> Result<Self, WriteError> {
        let info = view(snapshot, &first.map)?.info();
        if !info.switchable {
            return Err(WriteError::NotSwitchable {
                map: first.map.clone(),
            });
        }
        let mode = match pb::ApplyMode::try_from(first.mode) {
            Ok(pb::ApplyMode::Replace) => ApplyMode::Replace,
            Ok(pb::ApplyMode::Merge) => ApplyMode::Merge,
            Err(_) => {
                return Err(WriteError::UnknownEnum {
                    field: "mode".into(),
                    value: first.mode,
                });
            }
        };
        Ok(Self {
            map: first.map.clone(),
            mode,
            expect_version: first.expect_version,
            key_size: info.key_size,
            value_bytes: info.value_bytes,
            max_entries: info.max_entries,
            keys: HashSet::new(),
            entries: Vec::new(),
        })
    }

    fn add(&mut self, entries: Vec<pb::ApplyEntry>) -> Result<(), WriteError> {
        for entry in entries {
            let index = self.entries.len();
            if index >= self.max_entries as usize {
                return Err(WriteError::TooManyEntries {
                    map: self.map.clone(),
                    max: self.max_entries,
                });
            }
            let field = || format!("entries[{index}]");
            check_size(
                &self.map,
                || format!("{}.key", field()),
                &entry.key,
                self.key_size,
            )?;
            let value = if entry.delete {
                if self.mode == ApplyMode::Replace {
                    return Err(WriteError::DeleteInReplace { field: field() });
                }
                None
            } else {
                check_size(
                    &self.map,
                    || format!("{}.value", field()),
                    &entry.value,
                    self.value_bytes,
                )?;
                Some(entry.value)
            };
            if !self.keys.insert(entry.key.clone()) {
                return Err(WriteError::DuplicateKey {
                    field: field(),
                    map: self.map.clone(),
                    key: hex(&entry.key),
                });
            }
            self.entries.push((entry.key, value));
        }
        Ok(())
    }

    fn finish(self) -> control::Apply {
        control::Apply {
            map: self.map,
            mode: self.mode,
            entries: self.entries,
            expect_version: self.expect_version,
        }
    }
}
