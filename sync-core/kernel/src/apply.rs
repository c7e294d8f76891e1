//! The atomic apply on a switchable map (`switch.rs`), carried out by the
//! kernel task:
//!
//! 1. catch up with the ring, then check the map is switchable and the
//!    expected version is the live one ([`CommandError::VersionMismatch`]
//!    names the live version otherwise);
//! 2. build the new set: the entries given (replace), or the active inner
//!    map as the kernel holds it now plus the puts and minus the deletes
//!    (merge). Array maps always hold every index: indices a replace does
//!    not give are zero, and an array entry cannot be deleted. More entries
//!    than the map holds is [`Refusal::MapFull`] (errno E2BIG), an index
//!    past an array's end [`Refusal::IndexOutOfRange`]; nothing is written;
//! 3. fill the shadow: it is dumped, keys the new set lacks are deleted and
//!    keys whose value differs are written with `BPF_MAP_UPDATE_BATCH`
//!    (not atomic, but nobody reads the shadow). A refusal leaves only the
//!    shadow half-filled: the next apply dumps it again;
//! 4. stamp the shadow's version (`version + 1`) in the version store,
//!    start capturing writes into the shadow, then point slot 0 at it: the
//!    one step programs can see. The kernel waits for running programs to
//!    leave the old active map before the syscall returns;
//! 5. the old active map becomes the shadow (capture stops watching it),
//!    and the store publishes the difference between the mirror's view of
//!    the old set and the new set as one revision, with the new version
//!    and the new active map's id.
//!
//! A kill at any moment leaves slot 0 pointing at the old or the new set.

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Instant;

use bytes::Bytes;

use crate::error::KernelError;
use crate::ingest::Ingest;
use crate::{dump, sys};
use mapsync_core::control::{Applied, Apply, ApplyMode, CommandError, Outcome, Refusal};
use mapsync_core::map_info::{MapInfo, MapKind};

/// Entries per `BPF_MAP_UPDATE_BATCH` / `BPF_MAP_DELETE_BATCH` call while
/// filling the shadow.
const FILL_BATCH: usize = 4096;

type Answer = Result<Result<Outcome, CommandError>, KernelError>;

/// A kernel refusal while filling or switching: what, and the errno.
struct Refused {
    what: &'static str,
    errno: i32,
}

impl Refused {
    fn from_io(what: &'static str, error: &std::io::Error) -> Self {
        Self {
            what,
            errno: error.raw_os_error().unwrap_or(0),
        }
    }

    fn into_error(self, info: &MapInfo) -> CommandError {
        CommandError::Refused {
            map: info.name.clone(),
            op: None,
            what: self.what.into(),
            refusal: classify(info.kind, self.errno),
            errno: self.errno,
        }
    }
}

/// The refusal an errno means on a map of `kind`.
fn classify(kind: MapKind, errno: i32) -> Refusal {
    let array = matches!(kind, MapKind::Array | MapKind::PercpuArray);
    match errno {
        libc::E2BIG if array => Refusal::IndexOutOfRange,
        libc::E2BIG => Refusal::MapFull,
        libc::EEXIST => Refusal::AlreadyExists,
        libc::ENOENT => Refusal::NotFound,
        _ => Refusal::Other,
    }
}

fn invalid(reason: String) -> CommandError {
    CommandError::InvalidArgument { reason }
}

impl Ingest {
    /// Serves [`mapsync_core::control::Command::Apply`] (see the module doc).
    /// A kernel refusal is the caller's error; only a failure of the task's
    /// own work (the ring, capture) is returned as a [`KernelError`].
    pub(crate) fn apply(&mut self, apply: Apply) -> Answer {
        // the difference is computed against a mirror that holds what the
        // kernel held when the request was taken
        self.drain_until(sys::monotonic_ns())?;
        self.resync_pending()?;
        let Some(map_id) = self
            .maps
            .iter()
            .find(|(_, map)| *map.name == *apply.map)
            .map(|(id, _)| *id)
        else {
            return Ok(Err(CommandError::UnknownMap { name: apply.map }));
        };
        let map = &self.maps[&map_id];
        let Some(set) = &map.switch else {
            return Ok(Err(CommandError::NotSwitchable { map: apply.map }));
        };
        if let Some(expected) = apply.expect_version
            && expected != set.version
        {
            return Ok(Err(CommandError::VersionMismatch {
                map: apply.map,
                expected,
                live: set.version,
            }));
        }
        let t0 = Instant::now(); // phases, for the debug line
        let info = map.info.clone();
        let new_set = match new_set(&info, map.fd.as_fd(), apply.mode, apply.entries) {
            Ok(Ok(new_set)) => new_set,
            Ok(Err(error)) => return Ok(Err(error)),
            Err(refused) => return Ok(Err(refused.into_error(&info))),
        };
        match set.slot_id() {
            Ok(Some(id)) if id == map_id => {}
            Ok(other) => {
                tracing::warn!(
                    map = %info.name, pin = %set.outer_pin.display(), mirrored = map_id, slot = ?other,
                    "slot 0 of the outer map no longer holds the mirrored inner map: something else switched it; apply refused"
                );
                return Ok(Err(Refused {
                    what: "apply: slot 0 was switched by someone else",
                    errno: libc::EBUSY,
                }
                .into_error(&info)));
            }
            Err(error) => {
                return Ok(Err(
                    Refused::from_io("reading slot 0", &error).into_error(&info)
                ));
            }
        }
        let t1 = t0.elapsed();
        if let Err(refused) = fill(set.shadow.as_fd(), &info, &new_set) {
            return Ok(Err(refused.into_error(&info)));
        }
        let version = set.version + 1;
        let shadow_id = set.shadow_id;
        if let Err(error) = set.stamp_shadow(version) {
            return Ok(Err(
                Refused::from_io("writing the version", &error).into_error(&info)
            ));
        }
        let mut active = info.clone();
        active.id = shadow_id;
        // watched before it goes live: a write into it by anyone once it is
        // active is captured; the shadow was not watched while filled
        if let Err(error) = self.capture.watch(&active) {
            // the watch table is full: refuse this apply, keep following
            tracing::warn!(map = %info.name, %error, "cannot watch the shadow: apply refused");
            return Ok(Err(Refused {
                what: "watching the shadow in the syscall trace",
                errno: libc::E2BIG,
            }
            .into_error(&info)));
        }
        let observed_ns = sys::monotonic_ns();
        let started = Instant::now();
        let switched = self
            .maps
            .get(&map_id)
            .and_then(|map| map.switch.as_ref())
            .expect("checked above")
            .switch_to_shadow();
        let switch_ns = started.elapsed().as_nanos() as u64;
        if let Err(error) = switched {
            self.capture.unwatch(shadow_id);
            return Ok(Err(
                Refused::from_io("switching slot 0", &error).into_error(&info)
            ));
        }
        // the old active map is the next shadow: no program uses it now
        let mut mirrored = self.maps.remove(&map_id).expect("checked above");
        let set = mirrored.switch.as_mut().expect("checked above");
        std::mem::swap(&mut mirrored.fd, &mut set.shadow);
        set.shadow_id = map_id;
        set.version = version;
        mirrored.info = active.clone();
        self.maps.insert(shadow_id, mirrored);
        self.capture.unwatch(map_id);
        let t2 = t0.elapsed();
        let entries = new_set.len() as u64;
        let before = self.writer.store().revision();
        let (revision, changed) = self
            .writer
            .apply_switch(active, new_set, observed_ns, version);
        self.stats
            .count_published(&self.writer.store().load(), before);
        tracing::debug!(
            map = %info.name, version, entries, changed, switch_us = switch_ns / 1000,
            build_us = t1.as_micros() as u64,
            fill_and_switch_us = (t2 - t1).as_micros() as u64,
            publish_us = (t0.elapsed() - t2).as_micros() as u64,
            active_id = shadow_id, "applied"
        );
        Ok(Ok(Outcome {
            revision,
            succeeded: true,
            previous: Vec::new(),
            applied: Some(Applied {
                version,
                entries,
                changed,
                switch_ns,
            }),
        }))
    }
}

/// The set an apply makes live, checked against the map's shape; `Err` is a
/// kernel refusal reading the active map (merge mode).
fn new_set(
    info: &MapInfo,
    active: BorrowedFd<'_>,
    mode: ApplyMode,
    entries: Vec<(Bytes, Option<Bytes>)>,
) -> Result<Result<Vec<(Bytes, Bytes)>, CommandError>, Refused> {
    let array = matches!(info.kind, MapKind::Array | MapKind::PercpuArray);
    let mut seen = HashSet::with_capacity(entries.len());
    for (index, (key, value)) in entries.iter().enumerate() {
        if key.len() != info.key_size as usize {
            return Ok(Err(invalid(format!(
                "entry {index}: a key of {} bytes; map `{}` has {}-byte keys",
                key.len(),
                info.name,
                info.key_size
            ))));
        }
        match value {
            Some(value) if value.len() != info.value_bytes as usize => {
                return Ok(Err(invalid(format!(
                    "entry {index}: a value of {} bytes; map `{}` has {}-byte values",
                    value.len(),
                    info.name,
                    info.value_bytes
                ))));
            }
            None if mode == ApplyMode::Replace => {
                return Ok(Err(invalid(format!(
                    "entry {index}: a delete (no value) needs merge mode"
                ))));
            }
            None if array => {
                return Ok(Err(invalid(format!(
                    "entry {index}: array map `{}` entries cannot be deleted",
                    info.name
                ))));
            }
            _ => {}
        }
        if !seen.insert(key.clone()) {
            return Ok(Err(invalid(format!(
                "entry {index}: key {} is given twice",
                hex(key)
            ))));
        }
        if array && u32::from_ne_bytes(key[..4].try_into().expect("4 bytes")) >= info.max_entries {
            return Err(Refused {
                what: "apply: an index past the end of the array",
                errno: libc::E2BIG,
            });
        }
    }
    if mode == ApplyMode::Replace && !array {
        // keys checked distinct and every value present: the entries are the set
        if entries.len() > info.max_entries as usize {
            return Err(Refused {
                what: "apply: more entries than the map holds",
                errno: libc::E2BIG,
            });
        }
        return Ok(Ok(entries
            .into_iter()
            .filter_map(|(key, value)| value.map(|value| (key, value)))
            .collect()));
    }
    let mut set: HashMap<Bytes, Bytes> = match (mode, array) {
        (ApplyMode::Merge, _) => {
            let dump = dump::dump(active, info).map_err(|error| Refused {
                what: "reading the active map",
                errno: kernel_errno(&error),
            })?;
            dump.entries.into_iter().map(|(k, v, _)| (k, v)).collect()
        }
        (ApplyMode::Replace, true) => (0..info.max_entries)
            .map(|index| {
                (
                    Bytes::copy_from_slice(&index.to_ne_bytes()),
                    Bytes::from(vec![0u8; info.value_bytes as usize]),
                )
            })
            .collect(),
        (ApplyMode::Replace, false) => HashMap::with_capacity(entries.len()),
    };
    for (key, value) in entries {
        match value {
            Some(value) => set.insert(key, value),
            None => set.remove(&key),
        };
    }
    if set.len() > info.max_entries as usize {
        return Err(Refused {
            what: "apply: more entries than the map holds",
            errno: libc::E2BIG,
        });
    }
    Ok(Ok(set.into_iter().collect()))
}

fn kernel_errno(error: &KernelError) -> i32 {
    match error {
        KernelError::Syscall { source, .. } => source.raw_os_error().unwrap_or(0),
        _ => 0,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Makes the shadow hold exactly `set`: deletes what it holds beyond it,
/// writes what differs (batch calls; per key where batches are refused).
fn fill(shadow: BorrowedFd<'_>, info: &MapInfo, set: &[(Bytes, Bytes)]) -> Result<(), Refused> {
    let held = dump::dump(shadow, info).map_err(|error| Refused {
        what: "reading the shadow",
        errno: kernel_errno(&error),
    })?;
    let held: HashMap<Bytes, Bytes> = held.entries.into_iter().map(|(k, v, _)| (k, v)).collect();
    let array = matches!(info.kind, MapKind::Array | MapKind::PercpuArray);
    if !array {
        let wanted: HashSet<&[u8]> = set.iter().map(|(key, _)| &key[..]).collect();
        let stale: Vec<&Bytes> = held
            .keys()
            .filter(|key| !wanted.contains(&key[..]))
            .collect();
        for chunk in stale.chunks(FILL_BATCH) {
            let mut keys = Vec::with_capacity(chunk.len() * info.key_size as usize);
            for key in chunk {
                keys.extend_from_slice(key);
            }
            let (_, result) = sys::delete_batch(shadow, &keys, chunk.len() as u32);
            if let Err(error) = result {
                // older kernels without batch deletes: one by one
                if error.raw_os_error() != Some(libc::EINVAL) {
                    return Err(Refused::from_io("clearing the shadow", &error));
                }
                for key in chunk {
                    match sys::delete(shadow, key) {
                        Ok(()) => {}
                        Err(error) if error.raw_os_error() == Some(libc::ENOENT) => {}
                        Err(error) => return Err(Refused::from_io("clearing the shadow", &error)),
                    }
                }
            }
        }
    }
    let changed: Vec<&(Bytes, Bytes)> = set
        .iter()
        .filter(|(key, value)| held.get(key) != Some(value))
        .collect();
    for chunk in changed.chunks(FILL_BATCH) {
        let mut keys = Vec::with_capacity(chunk.len() * info.key_size as usize);
        let mut values = Vec::with_capacity(chunk.len() * info.value_bytes as usize);
        for (key, value) in chunk {
            keys.extend_from_slice(key);
            values.extend_from_slice(value);
        }
        let (_, result) = sys::update_batch(shadow, &keys, &values, chunk.len() as u32);
        if let Err(error) = result {
            return Err(Refused::from_io("filling the shadow", &error));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errnos_are_classified_by_the_map_kind() {
        assert_eq!(classify(MapKind::Hash, libc::E2BIG), Refusal::MapFull);
        assert_eq!(
            classify(MapKind::Array, libc::E2BIG),
            Refusal::IndexOutOfRange
        );
        assert_eq!(classify(MapKind::Hash, libc::EPERM), Refusal::Other);
    }
}
