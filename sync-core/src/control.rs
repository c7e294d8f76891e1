//! The command channel into the kernel task: the one path by which a caller
//! asks the side that owns the map fds to act on the kernel.
//!
//! The kernel task (in `mapsync-kernel`) owns the capture object, the map
//! fds and the ring; nothing else may touch them. A caller holds a
//! [`CommandHandle`] (cheap to clone) and sends it a [`Command`]; the task
//! takes requests from a bounded queue between two bounded steps of its
//! loop, carries each out, and replies with the [`Revision`] at which the
//! result is visible in the [`Store`](crate::Store), or a [`CommandError`].
//!
//! Today it serves [`Command::Resync`]. The write contract (put, delete, a
//! multi-key transaction, an atomic apply) plugs in here: new `Command`
//! variants, new `CommandError` variants (both are non-exhaustive), the
//! same reply ("visible at revision R").

use tokio::sync::{mpsc, oneshot};

use crate::event::Revision;

/// Requests queued at most before [`CommandHandle`] callers wait.
pub const COMMAND_QUEUE: usize = 64;

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
}

/// Why a command was not carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// No map of that name is mirrored.
    #[error("unknown map `{name}`")]
    UnknownMap {
        /// The name asked for.
        name: String,
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
    pub reply: oneshot::Sender<Result<Revision, CommandError>>,
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
    pub async fn call(&self, command: Command) -> Result<Revision, CommandError> {
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
                    Command::Resync { map: Some(name) } if name == "flows" => Ok(7),
                    Command::Resync { map: None } => Ok(8),
                    Command::Resync { map: Some(name) } => {
                        Err(CommandError::UnknownMap { name: name.clone() })
                    }
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
            let _ = request.reply.send(Ok(revision));
        }
        assert_eq!(first.await.expect("first"), Ok(1));
        assert_eq!(second.await.expect("second"), Ok(2));
        assert!(rx.try_recv().is_none(), "nothing else was queued");
    }
}
