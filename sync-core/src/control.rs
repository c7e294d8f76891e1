//! The command channel into the kernel task, and the **write contract**: the
//! one path by which a caller asks the side that owns the map fds to act on
//! the kernel.
//!
//! The kernel task (in `mapsync-kernel`) owns the capture object, the map
//! fds and the ring; nothing else may touch them. A caller holds a
//! [`CommandHandle`] (cheap to clone) and sends it a [`Command`]; the task
//! takes requests from a bounded queue between two bounded steps of its
//! loop, carries each out after the mirror has caught up with the kernel,
//! and replies with an [`Outcome`] (above all the [`Revision`] at which the
//! result is visible in the [`Store`](crate::Store)) or a [`CommandError`].
//!
//! Every write request ([`Command::Put`], [`Command::Delete`],
//! [`Command::Txn`], [`Command::Apply`]) is published as **one** revision
//! whose events all carry [`EventSource::Api`](crate::EventSource::Api):
//! no reader sees half of it.
//!
//! ```no_run
//! # async fn example(handle: mapsync_core::control::CommandHandle,
//! #                  store: mapsync_core::Store) -> Result<(), mapsync_core::control::CommandError> {
//! use mapsync_core::control::{Put, PutMode};
//! let outcome = handle
//!     .put(Put::new("flows", &[1u8, 0, 0, 0][..], &[9u8; 8][..]).mode(PutMode::NoExist))
//!     .await?;
//! // read-your-writes: the mirror holds the write at outcome.revision
//! assert!(store.revision() >= outcome.revision);
//! # Ok(()) }
//! ```

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::event::Revision;

/// Requests queued at most before [`CommandHandle`] callers wait.
pub const COMMAND_QUEUE: usize = 64;

/// Most compares, and most ops per branch, in one [`Txn`] (etcd's default
/// `--max-txn-ops`).
pub const MAX_TXN_OPS: usize = 128;

/// Most ops in one [`Command::Batch`]: a whole etcd transaction (or a
/// follower's relist difference) as one revision, bounded.
pub const MAX_BATCH_OPS: usize = 65_536;

/// What a caller asks the kernel task to do.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Command {
    /// Re-read maps in full from the kernel and publish the difference as
    /// `resync` events: the map named, or every map (`None`).
    Resync {
        /// The mirrored map's name; `None`: every map.
        map: Option<String>,
    },
    /// Write one key.
    Put(Put),
    /// Remove one key.
    Delete(Delete),
    /// Compares, then ops across keys and maps.
    Txn(Txn),
    /// Replace (or merge into) the whole set of a switchable map atomically.
    Apply(Apply),
    /// Unconditional ops on plain maps, up to [`MAX_BATCH_OPS`], published
    /// as one revision (a [`Txn`] without compares and without the
    /// [`MAX_TXN_OPS`] limit; for internal writers such as the fleet
    /// follower, not exposed over gRPC).
    Batch(Vec<WriteOp>),
}

/// How a put treats an existing key: the kernel's `BPF_ANY`, `BPF_NOEXIST`,
/// `BPF_EXIST`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PutMode {
    /// Create or replace.
    #[default]
    Any,
    /// Only create ([`Refusal::AlreadyExists`] if present; array maps:
    /// always).
    NoExist,
    /// Only replace ([`Refusal::NotFound`] if absent).
    Exist,
}

/// One key's new value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Put {
    /// The mirrored map's name.
    pub map: String,
    /// Key bytes (the map's key size).
    pub key: Bytes,
    /// Value bytes as the syscall carries them (per-CPU maps: one slot per
    /// possible CPU, each rounded up to 8 bytes).
    pub value: Bytes,
    /// The kernel flag.
    pub mode: PutMode,
    /// Compare-and-swap: write only if the key's mod revision is this
    /// (0: only if absent); `None`: no check.
    pub expect_mod_revision: Option<Revision>,
}

impl Put {
    /// A put with [`PutMode::Any`] and no compare-and-swap.
    pub fn new(map: &str, key: impl Into<Bytes>, value: impl Into<Bytes>) -> Self {
        Self {
            map: map.to_owned(),
            key: key.into(),
            value: value.into(),
            mode: PutMode::Any,
            expect_mod_revision: None,
        }
    }

    /// With the kernel flag `mode`.
    pub fn mode(mut self, mode: PutMode) -> Self {
        self.mode = mode;
        self
    }

    /// Only if the key's mod revision is `revision` (0: only if absent).
    pub fn expect_mod_revision(mut self, revision: Revision) -> Self {
        self.expect_mod_revision = Some(revision);
        self
    }
}

/// One key's removal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delete {
    /// The mirrored map's name.
    pub map: String,
    /// Key bytes.
    pub key: Bytes,
    /// Compare-and-swap, as [`Put::expect_mod_revision`].
    pub expect_mod_revision: Option<Revision>,
}

impl Delete {
    /// A delete with no compare-and-swap.
    pub fn new(map: &str, key: impl Into<Bytes>) -> Self {
        Self {
            map: map.to_owned(),
            key: key.into(),
            expect_mod_revision: None,
        }
    }

    /// Only if the key's mod revision is `revision`.
    pub fn expect_mod_revision(mut self, revision: Revision) -> Self {
        self.expect_mod_revision = Some(revision);
        self
    }
}

/// One write inside a [`Txn`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOp {
    /// A put (its `expect_mod_revision` must be `None`: compares go in
    /// [`Txn::compares`]).
    Put(Put),
    /// A delete (likewise without `expect_mod_revision`).
    Delete(Delete),
}

impl WriteOp {
    /// The map the op writes.
    pub fn map(&self) -> &str {
        match self {
            WriteOp::Put(put) => &put.map,
            WriteOp::Delete(delete) => &delete.map,
        }
    }

    /// The key the op writes.
    pub fn key(&self) -> &Bytes {
        match self {
            WriteOp::Put(put) => &put.key,
            WriteOp::Delete(delete) => &delete.key,
        }
    }
}

/// What a [`Compare`] looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompareTarget {
    /// The key's mod revision (an absent key's is 0).
    ModRevision(Revision),
    /// The key's value, bytewise (an absent key never compares true).
    Value(Bytes),
    /// Whether the key is present (`Equal` / `NotEqual` only).
    Exists(bool),
}

/// How the key's current state must relate to the target.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CompareResult {
    /// Equal to the target.
    #[default]
    Equal,
    /// Not equal to the target.
    NotEqual,
    /// Greater than the target.
    Greater,
    /// Less than the target.
    Less,
}

/// One condition of a [`Txn`], checked against the mirror once it has
/// caught up with the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compare {
    /// The mirrored map's name.
    pub map: String,
    /// Key bytes.
    pub key: Bytes,
    /// The relation that must hold.
    pub result: CompareResult,
    /// What is compared.
    pub target: CompareTarget,
}

/// Compares, then ops, like etcd's Txn: if every compare holds, `success`
/// runs, otherwise `failure`; a failed compare is not an error.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    /// All must hold for `success` to run.
    pub compares: Vec<Compare>,
    /// Ops run, in order, when every compare holds.
    pub success: Vec<WriteOp>,
    /// Ops run, in order, otherwise.
    pub failure: Vec<WriteOp>,
}

/// How [`Apply`] treats its entries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ApplyMode {
    /// The entries are the whole new set.
    #[default]
    Replace,
    /// The entries are puts (`Some`) and deletes (`None`) on top of the live
    /// set.
    Merge,
}

/// A new set for a switchable map, made live in one atomic switch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Apply {
    /// The switchable map's name.
    pub map: String,
    /// Replace or merge.
    pub mode: ApplyMode,
    /// Keys and values (`None`: delete, merge mode only).
    pub entries: Vec<(Bytes, Option<Bytes>)>,
    /// Switch only if the live version is this; `None`: no check.
    pub expect_version: Option<u64>,
}

/// A key's state just before a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Previous {
    /// The value, `None` if the key was absent.
    pub value: Option<Bytes>,
    /// The revision that set it (0 when absent).
    pub mod_revision: Revision,
}

/// What a carried-out command produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The revision at which the result is visible in the store (the
    /// current revision when nothing changed).
    pub revision: Revision,
    /// [`Command::Txn`]: whether the compares held; `true` otherwise.
    pub succeeded: bool,
    /// Per op carried out, in order: its key's state before it (Put and
    /// Delete: one; Txn: one per op of the branch that ran; empty for
    /// Resync and Apply).
    pub previous: Vec<Previous>,
    /// [`Command::Apply`]: the version now live and what the switch did.
    pub applied: Option<Applied>,
}

impl Outcome {
    /// An outcome that only names a revision.
    pub fn at(revision: Revision) -> Self {
        Self {
            revision,
            succeeded: true,
            ..Self::default()
        }
    }
}

/// What an [`Apply`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    /// The version now live.
    pub version: u64,
    /// Entries of the new set.
    pub entries: u64,
    /// Keys that changed (events of the revision).
    pub changed: u64,
    /// How long the one outer-slot update took, in nanoseconds.
    pub switch_ns: u64,
}

/// Why the kernel refused a write, from its errno and the map's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// EEXIST: the key is present (`NoExist`; array maps: always).
    AlreadyExists,
    /// ENOENT: the key is absent (`Exist`, delete).
    NotFound,
    /// E2BIG on a hash-like map: it is full.
    MapFull,
    /// E2BIG (or EINVAL on a delete) on an array map: the index is past the
    /// end (array entries cannot be deleted either).
    IndexOutOfRange,
    /// Any other errno.
    Other,
}

/// Why a command was not carried out. Nothing was written when a write
/// command fails.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// No map of that name is mirrored.
    #[error("unknown map `{name}`")]
    UnknownMap {
        /// The name asked for.
        name: String,
    },
    /// The request is malformed for the map (key or value size, a delete in
    /// replace mode, a compare that cannot apply, too many ops, ...).
    #[error("invalid request: {reason}")]
    InvalidArgument {
        /// What is wrong, naming the field.
        reason: String,
    },
    /// A compare-and-swap expectation did not hold.
    #[error("map `{map}`: the key's mod revision is {current}, not the expected {expected}")]
    ModRevisionMismatch {
        /// The map.
        map: String,
        /// What the caller expected.
        expected: Revision,
        /// The key's mod revision now (0: absent).
        current: Revision,
    },
    /// An Apply's expected version is not the live one.
    #[error("map `{map}`: the live version is {live}, not the expected {expected}")]
    VersionMismatch {
        /// The map.
        map: String,
        /// What the caller expected.
        expected: u64,
        /// The version live now.
        live: u64,
    },
    /// Apply on a map that is not switchable.
    #[error("map `{map}` is not switchable (serve it with --switch to use Apply)")]
    NotSwitchable {
        /// The map.
        map: String,
    },
    /// The kernel refused a write; in a Txn, the ops before it were undone.
    #[error("map `{map}`: the kernel refused {what}{}: {refusal:?} (errno {errno})",
        op.map(|op| format!(" (op {op})")).unwrap_or_default())]
    Refused {
        /// The map written.
        map: String,
        /// In a Txn: the index of the refused op in the branch that ran.
        op: Option<usize>,
        /// The write, as text ("put", "delete", ...).
        what: String,
        /// The refusal, classified.
        refusal: Refusal,
        /// The kernel's errno.
        errno: i32,
    },
    /// The kernel refused or failed (the task then stops: its error is what
    /// `MapSync::stopped` reports).
    #[error("the kernel side failed: {reason}")]
    Kernel {
        /// The kernel side's error, as text.
        reason: String,
    },
    /// This kernel side does not serve that command (yet).
    #[error("the kernel task does not serve {command}")]
    Unsupported {
        /// The command, as debug text.
        command: String,
    },
    /// The kernel task has stopped (or was never started): nothing follows
    /// the kernel any more.
    #[error("mapsync's ingest task has stopped")]
    Stopped,
}

/// One queued command and where its answer goes.
#[derive(Debug)]
pub struct Request {
    /// What to do.
    pub command: Command,
    /// Where the task sends the outcome: the revision at which it is
    /// visible, or why it was not done. A dropped sender reads as
    /// [`CommandError::Stopped`].
    pub reply: oneshot::Sender<Result<Outcome, CommandError>>,
}

/// The caller's end of the command channel. Cheap to clone; every clone
/// feeds the same bounded queue.
#[derive(Debug, Clone)]
pub struct CommandHandle {
    tx: mpsc::Sender<Request>,
}

/// The kernel task's end of the command channel.
#[derive(Debug)]
pub struct CommandReceiver {
    rx: mpsc::Receiver<Request>,
}

/// A command channel of `capacity` queued requests (at least 1).
pub fn channel(capacity: usize) -> (CommandHandle, CommandReceiver) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    (CommandHandle { tx }, CommandReceiver { rx })
}

impl CommandHandle {
    /// Sends `command` and waits for its outcome. Waits for room while the
    /// queue is full (bounded: callers are slowed, nothing grows).
    pub async fn call(&self, command: Command) -> Result<Outcome, CommandError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Request { command, reply })
            .await
            .map_err(|_| CommandError::Stopped)?;
        answer.await.unwrap_or(Err(CommandError::Stopped))
    }

    /// A full re-read of `map` (or of every map, `None`) from the kernel;
    /// returns the revision at which the mirror holds what was read.
    pub async fn resync(&self, map: Option<&str>) -> Result<Revision, CommandError> {
        self.call(Command::Resync {
            map: map.map(str::to_owned),
        })
        .await
        .map(|outcome| outcome.revision)
    }

    /// Writes one key; the outcome's revision is where the write is visible
    /// and `previous[0]` the key's state before it.
    pub async fn put(&self, put: Put) -> Result<Outcome, CommandError> {
        self.call(Command::Put(put)).await
    }

    /// Removes one key (absent: [`Refusal::NotFound`]).
    pub async fn delete(&self, delete: Delete) -> Result<Outcome, CommandError> {
        self.call(Command::Delete(delete)).await
    }

    /// Runs a transaction; `succeeded` says which branch ran.
    pub async fn txn(&self, txn: Txn) -> Result<Outcome, CommandError> {
        self.call(Command::Txn(txn)).await
    }

    /// Runs up to [`MAX_BATCH_OPS`] unconditional ops as one revision (all
    /// or nothing, like a [`Txn`]'s branch).
    pub async fn batch(&self, ops: Vec<WriteOp>) -> Result<Outcome, CommandError> {
        self.call(Command::Batch(ops)).await
    }

    /// Switches a switchable map to a new set in one atomic update.
    pub async fn apply(&self, apply: Apply) -> Result<Outcome, CommandError> {
        self.call(Command::Apply(apply)).await
    }
}

impl CommandReceiver {
    /// The next request; `None` once every handle is dropped.
    pub async fn recv(&mut self) -> Option<Request> {
        self.rx.recv().await
    }

    /// The next request if one is queued, without waiting.
    pub fn try_recv(&mut self) -> Option<Request> {
        self.rx.try_recv().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_resync_reaches_the_receiver_and_its_reply_comes_back() {
        let (handle, mut rx) = channel(4);
        let fake_task = tokio::spawn(async move {
            let mut seen = Vec::new();
            while let Some(request) = rx.recv().await {
                let outcome = match &request.command {
                    Command::Resync { map: Some(name) } if name == "flows" => Ok(Outcome::at(7)),
                    Command::Resync { map: None } => Ok(Outcome::at(8)),
                    Command::Resync { map: Some(name) } => {
                        Err(CommandError::UnknownMap { name: name.clone() })
                    }
                    other => Err(CommandError::Unsupported {
                        command: format!("{other:?}"),
                    }),
                };
                seen.push(request.command.clone());
                let _ = request.reply.send(outcome);
            }
            seen
        });
        assert_eq!(handle.resync(Some("flows")).await, Ok(7));
        assert_eq!(handle.clone().resync(None).await, Ok(8));
        assert_eq!(
            handle.resync(Some("nope")).await,
            Err(CommandError::UnknownMap {
                name: "nope".into()
            })
        );
        drop(handle);
        // every handle gone: the receiver sees the end, in order
        assert_eq!(
            fake_task.await.expect("fake task"),
            vec![
                Command::Resync {
                    map: Some("flows".into())
                },
                Command::Resync { map: None },
                Command::Resync {
                    map: Some("nope".into())
                },
            ]
        );
    }

    #[tokio::test]
    async fn a_stopped_task_is_a_typed_error_not_a_hang() {
        // receiver gone before the send
        let (handle, rx) = channel(1);
        drop(rx);
        assert_eq!(handle.resync(None).await, Err(CommandError::Stopped));

        // request taken, then dropped unanswered (the task ended mid-way)
        let (handle, mut rx) = channel(1);
        let fake_task = tokio::spawn(async move {
            let request = rx.recv().await.expect("a request");
            drop(request);
        });
        assert_eq!(handle.resync(Some("m")).await, Err(CommandError::Stopped));
        fake_task.await.expect("fake task");
    }

    #[tokio::test]
    async fn the_queue_is_bounded_and_a_caller_waits_for_room() {
        let (handle, mut rx) = channel(1);
        let first = tokio::spawn({
            let handle = handle.clone();
            async move { handle.resync(Some("a")).await }
        });
        // the first request fills the one-slot queue
        while handle.tx.capacity() > 0 {
            tokio::task::yield_now().await;
        }
        let second = tokio::spawn({
            let handle = handle.clone();
            async move { handle.resync(Some("b")).await }
        });
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(!second.is_finished(), "the second caller waits for room");
        assert_eq!(handle.tx.capacity(), 0, "nothing queued past the bound");
        for revision in 1..=2 {
            let request = rx.recv().await.expect("a request");
            let _ = request.reply.send(Ok(Outcome::at(revision)));
        }
        assert_eq!(first.await.expect("first"), Ok(1));
        assert_eq!(second.await.expect("second"), Ok(2));
        assert!(rx.try_recv().is_none(), "nothing else was queued");
    }
}
