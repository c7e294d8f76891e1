//! Carrying out checked writes in the kernel, in order, undoing them all
//! when the kernel refuses one, and publishing them as one revision.

use std::collections::HashSet;
use std::os::fd::AsFd;
use std::sync::Mutex;

use bytes::Bytes;
use mapsync_core::control::{CommandError, Outcome, Previous, Refusal};
use mapsync_core::event::EventSource;
use mapsync_core::map_info::MapKind;
use mapsync_core::ratelimit::LogLimiter;
use mapsync_core::store::Change;

use super::Failure;
use super::plan::{BPF_ANY, Planned, hex, inner_map_fd};
use crate::ingest::{Ingest, Repair};
use crate::sys;

/// At most one "undo failed" line a second, whoever causes them.
static UNDO_LOG: Mutex<Option<LogLimiter>> = Mutex::new(None);

/// How to put a key back as it was before an op.
struct Undo {
    map_id: u32,
    kind: MapKind,
    key: Bytes,
    /// The kernel's value just before the op (lookup layout); `None`: the
    /// key was absent.
    before: Option<Vec<u8>>,
}

/// The refusal the kernel's errno means on a map of `kind`.
pub(super) fn refusal(kind: MapKind, errno: i32) -> Refusal {
    match errno {
        libc::EEXIST => Refusal::AlreadyExists,
        libc::ENOENT => Refusal::NotFound,
        libc::E2BIG if kind.is_array_like() => Refusal::IndexOutOfRange,
        libc::E2BIG => Refusal::MapFull,
        _ => Refusal::Other,
    }
}

impl Ingest {
    /// Carries out checked ops in order (undoing them all on a refusal) and
    /// publishes them as one revision observed right after the last syscall.
    /// `previous` (one per op) and `succeeded` go into the outcome as given.
    pub(super) fn write(
        &mut self,
        ops: Vec<Planned>,
        previous: Vec<Previous>,
        in_txn: bool,
        succeeded: bool,
    ) -> Result<Outcome, Failure> {
        if ops.is_empty() {
            return Ok(Outcome {
                revision: self.writer.store().revision(),
                succeeded,
                previous,
                applied: None,
            });
        }
        // the trace must not report these writes, nor the states an undo
        // passes through: this path publishes them itself
        self.capture.quiet_current_thread()?;
        let mut done: Vec<Undo> = Vec::with_capacity(ops.len());
        let last = ops.len() - 1;
        for (index, op) in ops.iter().enumerate() {
            let refused = |what: &str, errno: i32| CommandError::Refused {
                map: op.map.to_string(),
                op: in_txn.then_some(index),
                what: what.into(),
                refusal: refusal(op.kind, errno),
                errno,
            };
            if op.index_out_of_range() {
                self.undo(done);
                return Err(refused(op.what(), libc::E2BIG).into());
            }
            let Some(map) = self.maps.get(&op.map_id) else {
                // planned on a mirrored map, which nothing removes meanwhile
                self.undo(done);
                return Err(CommandError::UnknownMap {
                    name: op.map.to_string(),
                }
                .into());
            };
            let fd = map.fd.as_fd();
            // what to put back if a later op is refused
            let before = if index < last {
                let mut value = vec![0u8; op.value_bytes];
                match sys::lookup(fd, &op.key, &mut value) {
                    Ok(present) => present.then_some(value),
                    Err(error) => {
                        let errno = error.raw_os_error().unwrap_or(0);
                        self.undo(done);
                        return Err(refused("lookup before write", errno).into());
                    }
                }
            } else {
                None
            };
            let result = match &op.syscall_value {
                Some(value) => sys::update(fd, &op.key, value, op.flags),
                None => sys::delete(fd, &op.key),
            };
            if let Err(error) = result {
                let errno = error.raw_os_error().unwrap_or(0);
                self.undo(done);
                return Err(refused(op.what(), errno).into());
            }
            done.push(Undo {
                map_id: op.map_id,
                kind: op.kind,
                key: op.key.clone(),
                before,
            });
        }
        // after the last syscall: a write another writer makes later is
        // observed later, and wins in the mirror
        let observed_ns = sys::monotonic_ns();
        let changes = ops.into_iter().map(|op| Change {
            map: op.map,
            key: op.key,
            value: op.value,
            source: EventSource::Api,
            observed_ns,
        });
        let before = self.writer.store().revision();
        let revision = self.writer.apply_as_one(changes);
        self.stats
            .count_published(&self.writer.store().load(), before);
        Ok(Outcome {
            revision,
            succeeded,
            previous,
            applied: None,
        })
    }

    /// Puts back, in reverse, what the ops in `done` changed. A key the
    /// kernel refuses to put back is logged (rate-limited) and its map
    /// resynced at once, so that the mirror shows what the kernel really
    /// holds before the reply.
    fn undo(&mut self, done: Vec<Undo>) {
        let mut unsure = HashSet::new();
        for undo in done.into_iter().rev() {
            let Some(map) = self.maps.get(&undo.map_id) else {
                continue;
            };
            let fd = map.fd.as_fd();
            let result = match &undo.before {
                Some(id) if undo.kind.is_map_of_maps() => inner_map_fd(id)
                    .and_then(|(fd_bytes, _inner)| sys::update(fd, &undo.key, &fd_bytes, BPF_ANY)),
                Some(value) => sys::update(fd, &undo.key, value, BPF_ANY),
                None => match sys::delete(fd, &undo.key) {
                    // gone already (another writer removed it): as wanted
                    Err(error) if error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
                    other => other,
                },
            };
            if let Err(error) = result {
                let mut limiter = UNDO_LOG.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(not_logged) = limiter.get_or_insert_with(LogLimiter::default).check() {
                    tracing::error!(
                        map = %map.name, key = %hex(&undo.key), %error,
                        undo_failures_not_logged = not_logged,
                        "cannot undo a refused transaction's write: the kernel keeps it; resyncing the map"
                    );
                }
                unsure.insert(undo.map_id);
            }
        }
        for map_id in unsure {
            if let Err(error) =
                self.resync(map_id, Repair::Resync("a transaction could not be undone"))
            {
                // the loop's next resync of owed maps retries it
                tracing::debug!(%error, "resync after a failed undo");
                self.pending_resyncs.insert(map_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errnos_map_to_refusals_by_map_kind() {
        assert_eq!(refusal(MapKind::Hash, libc::EEXIST), Refusal::AlreadyExists);
        assert_eq!(
            refusal(MapKind::Array, libc::EEXIST),
            Refusal::AlreadyExists
        );
        assert_eq!(refusal(MapKind::LruHash, libc::ENOENT), Refusal::NotFound);
        assert_eq!(refusal(MapKind::Hash, libc::E2BIG), Refusal::MapFull);
        assert_eq!(refusal(MapKind::PercpuHash, libc::E2BIG), Refusal::MapFull);
        assert_eq!(refusal(MapKind::HashOfMaps, libc::E2BIG), Refusal::MapFull);
        assert_eq!(
            refusal(MapKind::Array, libc::E2BIG),
            Refusal::IndexOutOfRange
        );
        assert_eq!(
            refusal(MapKind::PercpuArray, libc::E2BIG),
            Refusal::IndexOutOfRange
        );
        assert_eq!(
            refusal(MapKind::ArrayOfMaps, libc::E2BIG),
            Refusal::IndexOutOfRange
        );
        assert_eq!(refusal(MapKind::Hash, libc::EINVAL), Refusal::Other);
        assert_eq!(refusal(MapKind::Hash, libc::ENOMEM), Refusal::Other);
    }
}
