//! Request and server errors, and the one mapping of errors to gRPC status
//! codes.
//!
//! [`RequestError`] owns every reason a request is refused, including those
//! the mirror raises while answering it ([`SyncError`]: unknown map,
//! compacted or future revision, stopped), which convert into it with
//! `From`. The server never constructs a core error itself.

use mapsync_core::{Epoch, Revision, SyncError};
use tonic::{Code, Status};

use crate::pb;

/// Why a request was refused.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// No map of that name is mirrored.
    #[error("unknown map `{name}`")]
    UnknownMap {
        /// The name asked for.
        name: String,
    },
    /// A revision older than the change log was asked for.
    #[error("revision {requested} is compacted; the oldest available revision is {oldest}")]
    Compacted {
        /// The revision asked for.
        requested: Revision,
        /// The oldest revision still in the log.
        oldest: Revision,
    },
    /// A revision newer than the mirror has reached was asked for.
    #[error("revision {requested} is in the future; the current revision is {current}")]
    FutureRevision {
        /// The revision asked for.
        requested: Revision,
        /// The current revision.
        current: Revision,
    },
    /// A revision of another server lifetime was given.
    #[error("epoch changed (asked {requested}, now {current}): start over from a snapshot")]
    EpochChanged {
        /// The epoch given.
        requested: Epoch,
        /// This instance's epoch.
        current: Epoch,
    },
    /// The mirror has stopped following the kernel (its ingest task ended).
    #[error("mapsync's ingest task has stopped")]
    Stopped,
    /// A key of the wrong size was given for a map.
    #[error("map `{map}` has {expected}-byte keys, got {size} bytes")]
    WrongKeySize {
        /// The map's name.
        map: String,
        /// Size given.
        size: usize,
        /// The map's key size.
        expected: u32,
    },
    /// The initial dumps are not done yet.
    #[error("mapsync is still taking its initial dumps; retry shortly")]
    NotReady,
    /// A page size over the limit.
    #[error("page_size {requested} is larger than the limit {max}")]
    PageTooLarge {
        /// The size asked for.
        requested: u32,
        /// The limit.
        max: u32,
    },
    /// `key`, `range_end` and `key_prefix` of a watch do not make a selection.
    #[error("bad key selection: {reason}")]
    BadKeySelection {
        /// What is wrong.
        reason: &'static str,
    },
    /// A `WatchRequest` with none of create, cancel or progress set.
    #[error("empty WatchRequest: set one of create, cancel or progress")]
    EmptyWatchRequest,
    /// The stream already carries the most watches it may.
    #[error("too many watches on this stream (at most {max}); cancel some or open another stream")]
    TooManyWatches {
        /// The limit.
        max: usize,
    },
    /// A create asked for a watch id that is open on the stream.
    #[error("watch id {id} is already in use on this stream")]
    WatchIdInUse {
        /// The id.
        id: u64,
    },
    /// A cancel or progress request named a watch that is not open on the stream.
    #[error("no watch with id {id} is open on this stream")]
    UnknownWatch {
        /// The id.
        id: u64,
    },
    /// The server already carries the most watches it may.
    #[error("too many watches on this server (at most {max}); retry later")]
    TooManyWatchesOnServer {
        /// The limit.
        max: usize,
    },
    /// A watch with `start_revision > 0` and no epoch: a resume must say
    /// which server lifetime its revision belongs to.
    #[error(
        "start_revision {start_revision} needs the epoch it belongs to (resuming needs the epoch); use start_revision 0 for the current state"
    )]
    ResumeWithoutEpoch {
        /// The revision asked for.
        start_revision: Revision,
    },
    /// A Watch stream kept sending requests that were refused.
    #[error(
        "too many refused requests on this stream (more than {burst} at once or {per_second} per second)"
    )]
    RefusalFlood {
        /// Refusals allowed at once.
        burst: u32,
        /// Refusals allowed per second after that.
        per_second: u32,
    },
    /// A Watch request that does not decode (the stream ends).
    #[error("undecodable WatchRequest: {detail}")]
    UndecodableRequest {
        /// The decoder's description.
        detail: String,
    },
    /// A request message larger than the server accepts (the stream ends).
    #[error("request larger than the {max}-byte limit: {detail}")]
    RequestTooLarge {
        /// The limit.
        max: usize,
        /// The transport's description.
        detail: String,
    },
    /// `min_revision` was not reached before the call's deadline.
    #[error("revision {requested} not reached before the deadline (current revision {current})")]
    MinRevisionDeadline {
        /// The revision waited for.
        requested: Revision,
        /// The revision reached.
        current: Revision,
    },
    /// `min_revision` was not reached within the server's maximum wait.
    #[error(
        "revision {requested} not reached within the server's maximum wait of {max_wait_ms} ms (current revision {current}); retry"
    )]
    MinRevisionMaxWait {
        /// The revision waited for.
        requested: Revision,
        /// The revision reached.
        current: Revision,
        /// The server's maximum wait.
        max_wait_ms: u64,
    },
    /// The caller is unknown (`UNAUTHENTICATED`) or may not read a map it
    /// names (`PERMISSION_DENIED`).
    #[error(transparent)]
    Auth(#[from] crate::authz::AuthError),
}

impl RequestError {
    /// The epoch check of a resume: `requested` 0 means "any".
    pub fn check_epoch(requested: u64, current: Epoch) -> Result<(), RequestError> {
        if requested != 0 && requested != current.0 {
            return Err(RequestError::EpochChanged {
                requested: Epoch(requested),
                current,
            });
        }
        Ok(())
    }

    /// The gRPC status code of this error.
    pub fn code(&self) -> Code {
        match self {
            RequestError::NotReady => Code::Unavailable,
            RequestError::PageTooLarge { .. }
            | RequestError::WrongKeySize { .. }
            | RequestError::BadKeySelection { .. }
            | RequestError::EmptyWatchRequest
            | RequestError::ResumeWithoutEpoch { .. }
            | RequestError::UndecodableRequest { .. } => Code::InvalidArgument,
            RequestError::TooManyWatches { .. }
            | RequestError::TooManyWatchesOnServer { .. }
            | RequestError::RefusalFlood { .. }
            | RequestError::RequestTooLarge { .. } => Code::ResourceExhausted,
            RequestError::WatchIdInUse { .. } => Code::AlreadyExists,
            RequestError::UnknownWatch { .. } => Code::NotFound,
            RequestError::MinRevisionDeadline { .. } => Code::DeadlineExceeded,
            RequestError::MinRevisionMaxWait { .. } => Code::Unavailable,
            RequestError::UnknownMap { .. } => Code::NotFound,
            RequestError::Compacted { .. } | RequestError::FutureRevision { .. } => {
                Code::OutOfRange
            }
            RequestError::EpochChanged { .. } => Code::FailedPrecondition,
            RequestError::Stopped => Code::Unavailable,
            RequestError::Auth(error) => error.code(),
        }
    }
}

impl From<SyncError> for RequestError {
    /// What the mirror raised while answering a request, as the request's
    /// error (the same facts and message).
    fn from(error: SyncError) -> Self {
        match error {
            SyncError::UnknownMap { name } => RequestError::UnknownMap { name },
            SyncError::Compacted { requested, oldest } => {
                RequestError::Compacted { requested, oldest }
            }
            SyncError::FutureRevision { requested, current } => {
                RequestError::FutureRevision { requested, current }
            }
            SyncError::Stopped => RequestError::Stopped,
        }
    }
}

impl From<RequestError> for Status {
    fn from(error: RequestError) -> Self {
        Status::new(error.code(), error.to_string())
    }
}

impl RequestError {
    /// How a Watch stream reports this error about one watch (instead of
    /// ending the stream): a compacted start or an epoch change are their own
    /// reasons; anything else is `REJECTED` with the status code a unary call
    /// would get. `complete` is the revision up to which the watch was
    /// complete.
    pub fn watch_canceled(&self, complete: Revision) -> pb::WatchCanceled {
        let (reason, oldest_revision) = match self {
            RequestError::Compacted { oldest, .. } => (pb::CancelReason::Compacted, *oldest),
            RequestError::EpochChanged { .. } => (pb::CancelReason::EpochChanged, 0),
            _ => (pb::CancelReason::Rejected, 0),
        };
        pb::WatchCanceled {
            reason: reason as i32,
            oldest_revision,
            message: self.to_string(),
            revision: complete,
            code: if reason == pb::CancelReason::Rejected {
                self.code() as i32
            } else {
                0
            },
        }
    }
}

/// Why the server could not run. Each message names its cause once: a
/// wrapped error is the `source`, not repeated in the message.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The listen address is not `HOST:PORT` or `unix:PATH`.
    #[error("invalid listen address `{addr}`: expected HOST:PORT or unix:PATH")]
    InvalidAddress {
        /// The address given.
        addr: String,
    },
    /// Binding the listener failed.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A server answers on the Unix socket: it is not taken over.
    #[error(
        "another server is listening on unix:{}; stop it or choose another --listen",
        path.display()
    )]
    SocketInUse {
        /// The socket's path.
        path: std::path::PathBuf,
    },
    /// The Unix socket path exists and is not a socket: it is not removed.
    #[error("cannot listen on unix:{}: the path exists and is not a socket", path.display())]
    NotASocket {
        /// The path.
        path: std::path::PathBuf,
    },
    /// The reflection service could not be built.
    #[error("cannot build the reflection service")]
    Reflection(#[from] tonic_reflection::server::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_has_its_precise_code() {
        let cases: Vec<(RequestError, Code)> = vec![
            (
                RequestError::UnknownMap { name: "x".into() },
                Code::NotFound,
            ),
            (
                RequestError::WrongKeySize {
                    map: "x".into(),
                    size: 2,
                    expected: 4,
                },
                Code::InvalidArgument,
            ),
            (
                RequestError::Compacted {
                    requested: 1,
                    oldest: 5,
                },
                Code::OutOfRange,
            ),
            (
                RequestError::FutureRevision {
                    requested: 9,
                    current: 5,
                },
                Code::OutOfRange,
            ),
            (
                RequestError::check_epoch(3, Epoch(5)).unwrap_err(),
                Code::FailedPrecondition,
            ),
            (RequestError::Stopped, Code::Unavailable),
            (RequestError::NotReady, Code::Unavailable),
            (
                RequestError::PageTooLarge {
                    requested: 1,
                    max: 0,
                },
                Code::InvalidArgument,
            ),
        ];
        for (error, code) in cases {
            assert_eq!(Status::from(error).code(), code);
        }
        assert!(RequestError::check_epoch(0, Epoch(5)).is_ok());
        assert!(RequestError::check_epoch(5, Epoch(5)).is_ok());
    }

    #[test]
    fn what_the_mirror_raises_keeps_its_facts_and_message() {
        let cases = [
            SyncError::UnknownMap { name: "x".into() },
            SyncError::Compacted {
                requested: 1,
                oldest: 5,
            },
            SyncError::FutureRevision {
                requested: 9,
                current: 5,
            },
            SyncError::Stopped,
        ];
        for error in cases {
            let message = error.to_string();
            let request = RequestError::from(error);
            assert_eq!(request.to_string(), message);
            assert_ne!(request.code(), Code::Internal, "{request}");
        }
        assert!(matches!(
            RequestError::from(SyncError::Compacted {
                requested: 1,
                oldest: 5
            }),
            RequestError::Compacted {
                requested: 1,
                oldest: 5
            }
        ));
    }

    #[test]
    fn the_compacted_status_names_the_oldest_revision() {
        let status = Status::from(RequestError::from(SyncError::Compacted {
            requested: 1,
            oldest: 5,
        }));
        assert_eq!(
            status.message(),
            "revision 1 is compacted; the oldest available revision is 5"
        );
    }
}
