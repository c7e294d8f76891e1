//! The kernel task's write path on plain (non-switchable) maps:
//! [`Command::Put`](mapsync_core::control::Command::Put),
//! [`Command::Delete`](mapsync_core::control::Command::Delete) and
//! [`Command::Txn`](mapsync_core::control::Command::Txn) and
//! [`Command::Batch`](mapsync_core::control::Command::Batch) (a Txn's one
//! branch without compares, up to [`MAX_BATCH_OPS`] ops).
//!
//! Every request takes the same steps, all on the ingest thread:
//! 1. **Validation**, before any syscall: the map is known and not
//!    switchable, key and value sizes are the map's, a Txn has at most
//!    [`MAX_TXN_OPS`] compares and ops per branch, writes each key at most
//!    once per branch and carries no per-op expected revision.
//! 2. **Catch-up**: the ring is drained up to now and owed resyncs are made,
//!    so the mirror reflects every write completed before the request.
//! 3. **Checks** against that caught-up snapshot: an expected mod revision
//!    (Put, Delete), or a Txn's compares (which pick the branch).
//! 4. **Ops** in the kernel, in order, one `BPF_MAP_UPDATE_ELEM` /
//!    `BPF_MAP_DELETE_ELEM` each. If the kernel refuses op `i`, ops
//!    `0..i` are undone in reverse (each key's value read from the kernel
//!    just before its op is put back, a key that was absent is deleted),
//!    nothing is published, and the reply is
//!    [`CommandError::Refused`] naming op `i` and the errno.
//! 5. **Publication**: one revision for the whole request
//!    ([`Publisher::apply_as_one`](mapsync_core::store::Publisher::apply_as_one)),
//!    every event with source [`EventSource::Api`](mapsync_core::EventSource::Api), observed at the time
//!    taken right after the last syscall.
//!
//! The syscall trace does not see these writes: the ingest thread is the
//! trace's quiet thread ([`Capture::quiet_current_thread`](crate::Capture::quiet_current_thread)),
//! so mapsync's own writes (and a Txn's undone intermediate states) are
//! published by this path only, never echoed as `trace` events.
//!
//! Layout: `plan` validates and checks (step 1 and 3), `ops` writes,
//! undoes and publishes (4 and 5).
//!
//! If an undo itself fails (the kernel refused to put a value back), the
//! kernel may keep some of the Txn's ops: the failure is logged (at most one
//! line a second), the map is resynced from the kernel *before* the reply
//! (its true content is then in the mirror, as `resync` events), and the
//! reply is still the original [`CommandError::Refused`].

mod ops;
mod plan;

use mapsync_core::control::{
    CommandError, Delete, MAX_BATCH_OPS, MAX_TXN_OPS, Outcome, Put, PutMode, Txn, WriteOp,
};

use crate::error::KernelError;
use crate::ingest::Ingest;
use crate::sys;
use plan::{Planned, holds, invalid, prefixed, previous_of};

/// A write request's answer, or the kernel error that stops the task.
pub(crate) type Reply = Result<Result<Outcome, CommandError>, KernelError>;

/// Why a write was not carried out: an answer for the caller, or an error
/// that stops the task.
enum Failure {
    Command(CommandError),
    Kernel(KernelError),
}

impl From<CommandError> for Failure {
    fn from(error: CommandError) -> Self {
        Self::Command(error)
    }
}

impl From<KernelError> for Failure {
    fn from(error: KernelError) -> Self {
        Self::Kernel(error)
    }
}

/// The span's outcome field for a reply.
fn outcome_text(reply: &Reply) -> &'static str {
    match reply {
        Ok(Ok(outcome)) if outcome.succeeded => "written",
        Ok(Ok(_)) => "compare failed",
        Ok(Err(CommandError::Refused { .. })) => "refused by the kernel",
        Ok(Err(CommandError::ModRevisionMismatch { .. })) => "mod revision mismatch",
        Ok(Err(CommandError::UnknownMap { .. })) => "unknown map",
        Ok(Err(CommandError::InvalidArgument { .. })) => "invalid argument",
        Ok(Err(_)) => "not done",
        Err(_) => "kernel error",
    }
}

impl Ingest {
    /// Serves [`Command::Put`](mapsync_core::control::Command::Put).
    pub(crate) fn put(&mut self, put: Put) -> Reply {
        let map = put.map.clone();
        self.traced("put", &map, 1, |ingest| ingest.put_inner(put))
    }

    /// Serves [`Command::Delete`](mapsync_core::control::Command::Delete).
    pub(crate) fn delete(&mut self, delete: Delete) -> Reply {
        let map = delete.map.clone();
        self.traced("delete", &map, 1, |ingest| ingest.delete_inner(delete))
    }

    /// Serves [`Command::Txn`](mapsync_core::control::Command::Txn).
    pub(crate) fn txn(&mut self, txn: Txn) -> Reply {
        let maps: Vec<&str> = txn
            .compares
            .iter()
            .map(|c| c.map.as_str())
            .chain(txn.success.iter().chain(&txn.failure).map(WriteOp::map))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let maps = maps.join(",");
        let ops = txn.success.len().max(txn.failure.len());
        self.traced("txn", &maps, ops, |ingest| ingest.txn_inner(txn))
    }

    /// Serves [`Command::Batch`](mapsync_core::control::Command::Batch).
    pub(crate) fn batch(&mut self, ops: Vec<WriteOp>) -> Reply {
        let maps: std::collections::BTreeSet<&str> = ops.iter().map(WriteOp::map).collect();
        let maps = maps.into_iter().collect::<Vec<_>>().join(",");
        let count = ops.len();
        self.traced("batch", &maps, count, |ingest| ingest.batch_inner(ops))
    }

    /// Runs one write request inside its span and records the outcome.
    fn traced(
        &mut self,
        op: &'static str,
        map: &str,
        ops: usize,
        run: impl FnOnce(&mut Self) -> Result<Outcome, Failure>,
    ) -> Reply {
        let span = tracing::info_span!("write", op, map, ops, outcome = tracing::field::Empty);
        let _entered = span.enter();
        let reply = match run(self) {
            Ok(outcome) => Ok(Ok(outcome)),
            Err(Failure::Command(error)) => Ok(Err(error)),
            Err(Failure::Kernel(error)) => Err(error),
        };
        let outcome = outcome_text(&reply);
        span.record("outcome", outcome);
        tracing::debug!(outcome, "write request");
        reply
    }

    fn put_inner(&mut self, put: Put) -> Result<Outcome, Failure> {
        let Put {
            map,
            key,
            value,
            mode,
            expect_mod_revision,
        } = put;
        let planned = self.plan(&map, key, Some(value), mode)?;
        self.checked_single(planned, expect_mod_revision)
    }

    fn delete_inner(&mut self, delete: Delete) -> Result<Outcome, Failure> {
        let Delete {
            map,
            key,
            expect_mod_revision,
        } = delete;
        let planned = self.plan(&map, key, None, PutMode::Any)?;
        self.checked_single(planned, expect_mod_revision)
    }

    /// A Put or Delete: catch up, check the expected mod revision, write.
    fn checked_single(
        &mut self,
        planned: Planned,
        expect_mod_revision: Option<u64>,
    ) -> Result<Outcome, Failure> {
        self.catch_up()?;
        let previous = previous_of(&self.writer.store().snapshot(), &planned.map, &planned.key);
        if let Some(expected) = expect_mod_revision
            && previous.mod_revision != expected
        {
            return Err(CommandError::ModRevisionMismatch {
                map: planned.map.to_string(),
                expected,
                current: previous.mod_revision,
            }
            .into());
        }
        self.write(vec![planned], vec![previous], false, true)
    }

    fn txn_inner(&mut self, txn: Txn) -> Result<Outcome, Failure> {
        let Txn {
            compares,
            success,
            failure,
        } = txn;
        for (what, count) in [
            ("compares", compares.len()),
            ("success", success.len()),
            ("failure", failure.len()),
        ] {
            if count > MAX_TXN_OPS {
                return Err(invalid(format!(
                    "{what}: {count} entries, a Txn takes at most {MAX_TXN_OPS}"
                ))
                .into());
            }
        }
        for (index, compare) in compares.iter().enumerate() {
            self.check_compare(compare)
                .map_err(|error| prefixed(error, &format!("compares[{index}]")))?;
        }
        let success = self.plan_branch(success, "success")?;
        let failure = self.plan_branch(failure, "failure")?;
        self.catch_up()?;
        let snapshot = self.writer.store().snapshot();
        let held = compares.iter().all(|compare| holds(&snapshot, compare));
        let ops = if held { success } else { failure };
        let previous = ops
            .iter()
            .map(|op| previous_of(&snapshot, &op.map, &op.key))
            .collect();
        drop(snapshot);
        self.write(ops, previous, true, held)
    }

    fn batch_inner(&mut self, ops: Vec<WriteOp>) -> Result<Outcome, Failure> {
        if ops.len() > MAX_BATCH_OPS {
            return Err(invalid(format!(
                "ops: {} entries, a Batch takes at most {MAX_BATCH_OPS}",
                ops.len()
            ))
            .into());
        }
        let ops = self.plan_branch(ops, "ops")?;
        self.catch_up()?;
        let snapshot = self.writer.store().snapshot();
        let previous = ops
            .iter()
            .map(|op| previous_of(&snapshot, &op.map, &op.key))
            .collect();
        drop(snapshot);
        self.write(ops, previous, true, true)
    }

    /// Makes the mirror reflect every write completed before now: the ring
    /// drained up to now, then any resync it owes.
    fn catch_up(&mut self) -> Result<(), KernelError> {
        self.drain_until(sys::monotonic_ns())?;
        self.resync_pending()
    }
}
