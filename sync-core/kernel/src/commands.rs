//! The kernel task's end of the command channel (`mapsync_core::control`):
//! each request is carried out between two bounded steps of the ingest
//! loop, by the task that owns the map fds, and answered with the revision
//! at which its result is visible.
//!
//! Served: [`Command::Resync`] here; [`Command::Put`], [`Command::Delete`]
//! [`Command::Txn`] and [`Command::Batch`] on plain maps in `write.rs`. [`Command::Apply`]
//! (switchable maps) answers [`CommandError::Unsupported`] until it is
//! served.

use mapsync_core::control::{Command, CommandError, Outcome, Request};

use crate::error::KernelError;
use crate::ingest::{Ingest, Repair};

impl Ingest {
    /// Carries out one request and answers it. A kernel error is sent to
    /// the caller as text and returned: it stops the task, as it would have
    /// during the task's own work.
    pub(crate) fn serve(&mut self, request: Request) -> Result<(), KernelError> {
        let Request { command, reply } = request;
        match &command {
            // bounded: an apply may carry a whole set
            Command::Batch(ops) => tracing::debug!(ops = ops.len(), "command: batch"),
            Command::Apply(apply) => tracing::debug!(
                map = %apply.map, mode = ?apply.mode, entries = apply.entries.len(),
                expect_version = ?apply.expect_version, "command: apply"
            ),
            other => tracing::debug!(command = ?other, "command"),
        }
        let outcome = match command {
            Command::Resync { map } => self.requested_resync(map.as_deref()),
            Command::Put(put) => self.put(put),
            Command::Delete(delete) => self.delete(delete),
            Command::Txn(txn) => self.txn(txn),
            Command::Batch(ops) => self.batch(ops),
            Command::Apply(apply) => self.apply(apply),
            other => Ok(Err(CommandError::Unsupported {
                command: format!("{other:?}"),
            })),
        };
        match outcome {
            Ok(answer) => {
                // a caller that gave up waiting is no error of ours
                let _ = reply.send(answer);
                Ok(())
            }
            Err(error) => {
                let _ = reply.send(Err(CommandError::Kernel {
                    reason: error.to_string(),
                }));
                Err(error)
            }
        }
    }

    /// A requested full re-read of one map or of every map.
    fn requested_resync(
        &mut self,
        map: Option<&str>,
    ) -> Result<Result<Outcome, CommandError>, KernelError> {
        const WHY: &str = "requested";
        match map {
            None => self.resync_all(WHY)?,
            Some(name) => {
                let Some(map_id) = self
                    .maps
                    .iter()
                    .find(|(_, map)| &*map.name == name)
                    .map(|(id, _)| *id)
                else {
                    return Ok(Err(CommandError::UnknownMap { name: name.into() }));
                };
                self.resync(map_id, Repair::Resync(WHY))?;
            }
        }
        Ok(Ok(Outcome::at(self.writer.store().revision())))
    }
}
