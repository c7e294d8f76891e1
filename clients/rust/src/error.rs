//! The client's error type.

use tonic::Code;

/// What went wrong talking to mapsync.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The endpoint is neither `HOST:PORT`, `http://HOST:PORT` nor `unix:PATH`.
    #[error("invalid endpoint `{endpoint}`: {reason}")]
    InvalidEndpoint {
        /// The endpoint given.
        endpoint: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The server could not be reached. (The transport error is not kept as
    /// a `source`: `reason` is its innermost cause, and a CLI printing the
    /// chain would say it twice.)
    #[error("cannot reach mapsync at {endpoint}: {reason}")]
    Connect {
        /// The endpoint.
        endpoint: String,
        /// Why, as the transport says it (innermost cause).
        reason: String,
    },
    /// The TLS files could not be used (unreadable, not PEM, a key that does
    /// not match its certificate).
    #[error("TLS setup: {reason}")]
    Tls {
        /// What is wrong, with the file's path.
        reason: String,
    },
    /// The bearer token is empty or not visible ASCII (it cannot be sent
    /// as `authorization` metadata). The token itself is never in a message.
    #[error("the bearer token is empty or holds characters other than visible ASCII")]
    InvalidToken,
    /// The server refused or failed the request. (Not a `source`: the
    /// message already says all the status says, and a CLI printing the
    /// error chain would say it twice.)
    #[error("{} ({})", .0.message(), code_name(.0.code()))]
    Status(tonic::Status),
    /// A call failed in the transport: the connection broke or was closed
    /// (a server at its connection limit or shutting down closes it), or a
    /// keep-alive ping went unanswered.
    #[error("the connection to mapsync failed: {reason}")]
    Transport {
        /// The status code the transport gave the call.
        code: Code,
        /// The innermost cause ("connection closed", "keep-alive timed out").
        reason: String,
    },
    /// The server sent a message this client does not understand.
    #[error("unexpected reply from the server: {0}")]
    Protocol(&'static str),
    /// The server refused a watch (bad request, unknown map, limits) or ended
    /// it for a reason no resume can fix.
    #[error("watch refused: {message} ({})", code_name(*.code))]
    WatchRefused {
        /// The status code a unary call would have got.
        code: Code,
        /// The server's explanation.
        message: String,
    },
    /// A write named a map the server does not mirror (`NOT_FOUND`).
    #[error("{message} (not found)")]
    UnknownMap {
        /// The server's explanation (it names the map).
        message: String,
    },
    /// The key is present: a put with [`PutMode::NoExist`](crate::PutMode)
    /// (on array maps, always) (`ALREADY_EXISTS`).
    #[error("{message} (already exists)")]
    AlreadyExists {
        /// The server's explanation.
        message: String,
        /// In a Txn: the index of the refused op in the branch that ran.
        failed_op: Option<u32>,
    },
    /// The key is absent: a put with [`PutMode::Exist`](crate::PutMode) or a
    /// delete (`NOT_FOUND`).
    #[error("{message} (not found)")]
    NotFound {
        /// The server's explanation.
        message: String,
        /// In a Txn: the index of the refused op in the branch that ran.
        failed_op: Option<u32>,
    },
    /// A compare-and-swap expectation did not hold; nothing was written
    /// (`FAILED_PRECONDITION`).
    #[error("{message} (failed precondition)")]
    ModRevisionMismatch {
        /// The key's mod revision now (0: absent), from the server's
        /// `mapsync-current-mod-revision` metadata (or its message).
        current: u64,
        /// The server's explanation.
        message: String,
    },
    /// An Apply's expected version is not the live one; nothing was switched
    /// (`FAILED_PRECONDITION`).
    #[error("{message} (failed precondition)")]
    VersionMismatch {
        /// The version live now, from the server's `mapsync-live-version`
        /// metadata (or its message).
        live: u64,
        /// The server's explanation.
        message: String,
    },
    /// Apply on a map that is not switchable (`FAILED_PRECONDITION`).
    #[error("{message} (failed precondition)")]
    NotSwitchable {
        /// The server's explanation.
        message: String,
    },
    /// The revision or epoch of the request belongs to another server
    /// lifetime (`FAILED_PRECONDITION`).
    #[error("{message} (failed precondition)")]
    EpochChanged {
        /// The server's explanation.
        message: String,
    },
    /// The caller may not write (`PERMISSION_DENIED`): without a policy
    /// file, over the Unix socket only root and the uids/gids `serve
    /// --write-uid/--write-gid` allows, over TCP nobody; with one, the
    /// caller's roles do not give write access to the map.
    #[error("{message} (permission denied)")]
    PermissionDenied {
        /// The server's explanation.
        message: String,
    },
    /// The map is full, or an Apply has more entries than it holds
    /// (`RESOURCE_EXHAUSTED`).
    #[error("{message} (resource exhausted)")]
    MapFull {
        /// The server's explanation.
        message: String,
        /// In a Txn: the index of the refused op in the branch that ran.
        failed_op: Option<u32>,
    },
    /// The request does not fit the map: key or value size, an array index
    /// past the end, a delete in replace mode, too many ops
    /// (`INVALID_ARGUMENT`).
    #[error("{message} (invalid argument)")]
    InvalidArgument {
        /// The server's explanation.
        message: String,
        /// In a Txn: the index of the refused op in the branch that ran.
        failed_op: Option<u32>,
    },
    /// One Apply entry is too large for a request message on its own.
    #[error("an Apply entry of {bytes} bytes does not fit in one request of at most {max} bytes")]
    EntryTooLarge {
        /// The entry's encoded size.
        bytes: usize,
        /// The request cap.
        max: usize,
    },
}

/// Metadata key: the key's mod revision now, on a compare-and-swap mismatch.
pub const CURRENT_MOD_REVISION_KEY: &str = "mapsync-current-mod-revision";
/// Metadata key: the live version, on an Apply version mismatch.
pub const LIVE_VERSION_KEY: &str = "mapsync-live-version";
/// Metadata key: the index of the refused op of a Txn.
pub const FAILED_OP_KEY: &str = "mapsync-failed-op";

impl From<tonic::Status> for ClientError {
    fn from(status: tonic::Status) -> Self {
        // a status made by the transport (not sent by the server) carries
        // its cause; the status message is then hyper's generic one
        match std::error::Error::source(&status) {
            Some(cause) => {
                let mut cause = cause;
                while let Some(next) = cause.source() {
                    cause = next;
                }
                ClientError::Transport {
                    code: status.code(),
                    reason: cause.to_string(),
                }
            }
            None => ClientError::Status(status),
        }
    }
}

impl ClientError {
    /// The gRPC status code, for errors the server returned.
    pub fn code(&self) -> Option<Code> {
        match self {
            ClientError::Status(status) => Some(status.code()),
            ClientError::WatchRefused { code, .. } | ClientError::Transport { code, .. } => {
                Some(*code)
            }
            ClientError::UnknownMap { .. } | ClientError::NotFound { .. } => Some(Code::NotFound),
            ClientError::AlreadyExists { .. } => Some(Code::AlreadyExists),
            ClientError::ModRevisionMismatch { .. }
            | ClientError::VersionMismatch { .. }
            | ClientError::NotSwitchable { .. }
            | ClientError::EpochChanged { .. } => Some(Code::FailedPrecondition),
            ClientError::PermissionDenied { .. } => Some(Code::PermissionDenied),
            ClientError::MapFull { .. } => Some(Code::ResourceExhausted),
            ClientError::InvalidArgument { .. } => Some(Code::InvalidArgument),
            _ => None,
        }
    }
}

impl ClientError {
    /// The typed error of a failed write call: the status code and the
    /// metadata the server sets (`mapsync-current-mod-revision`,
    /// `mapsync-live-version`, `mapsync-failed-op`) pick the variant; a
    /// status with none of them that only says it in its message is read
    /// from the message. Anything else stays [`ClientError::Status`].
    pub fn from_write_status(status: tonic::Status) -> Self {
        let metadata = |key: &str| -> Option<u64> {
            status
                .metadata()
                .get(key)?
                .to_str()
                .ok()?
                .trim()
                .parse()
                .ok()
        };
        let failed_op = metadata(FAILED_OP_KEY).and_then(|op| u32::try_from(op).ok());
        let message = status.message().to_owned();
        match status.code() {
            Code::AlreadyExists => ClientError::AlreadyExists { message, failed_op },
            Code::NotFound if failed_op.is_none() && message.contains("unknown map") => {
                ClientError::UnknownMap { message }
            }
            Code::NotFound => ClientError::NotFound { message, failed_op },
            Code::PermissionDenied => ClientError::PermissionDenied { message },
            Code::InvalidArgument => ClientError::InvalidArgument { message, failed_op },
            Code::ResourceExhausted
                if !message.contains("request larger") && !message.contains("too large") =>
            {
                ClientError::MapFull { message, failed_op }
            }
            Code::FailedPrecondition => {
                let current = metadata(CURRENT_MOD_REVISION_KEY)
                    .or_else(|| number_after(&message, "mod revision is "));
                let live = metadata(LIVE_VERSION_KEY)
                    .or_else(|| number_after(&message, "live version is "));
                if let Some(current) = current {
                    ClientError::ModRevisionMismatch { current, message }
                } else if let Some(live) = live {
                    ClientError::VersionMismatch { live, message }
                } else if message.contains("not switchable") {
                    ClientError::NotSwitchable { message }
                } else if message.contains("epoch") {
                    ClientError::EpochChanged { message }
                } else {
                    ClientError::Status(status)
                }
            }
            _ => ClientError::from(status),
        }
    }

    /// In a Txn refused by the kernel: the index of the op (in the branch
    /// that ran) that was refused; the ops before it were undone.
    pub fn failed_op(&self) -> Option<u32> {
        match self {
            ClientError::AlreadyExists { failed_op, .. }
            | ClientError::NotFound { failed_op, .. }
            | ClientError::MapFull { failed_op, .. }
            | ClientError::InvalidArgument { failed_op, .. } => *failed_op,
            _ => None,
        }
    }
}

/// The decimal number right after `marker` in `text`.
fn number_after(text: &str, marker: &str) -> Option<u64> {
    let rest = &text[text.find(marker)? + marker.len()..];
    let digits = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..digits].parse().ok()
}

fn code_name(code: Code) -> &'static str {
    match code {
        Code::NotFound => "not found",
        Code::InvalidArgument => "invalid argument",
        Code::OutOfRange => "out of range",
        Code::FailedPrecondition => "failed precondition",
        Code::Unavailable => "unavailable",
        Code::ResourceExhausted => "resource exhausted",
        Code::AlreadyExists => "already exists",
        Code::PermissionDenied => "permission denied",
        Code::Unauthenticated => "unauthenticated",
        Code::Internal => "internal error",
        Code::DeadlineExceeded => "deadline exceeded",
        _ => "error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_reads_once_with_its_code_and_has_no_source() {
        let error = ClientError::from(tonic::Status::not_found("unknown map `nope`"));
        assert_eq!(error.to_string(), "unknown map `nope` (not found)");
        assert!(std::error::Error::source(&error).is_none());
        assert_eq!(error.code(), Some(Code::NotFound));
    }

    #[test]
    fn a_transport_failure_names_its_innermost_cause_once() {
        let io = std::io::Error::other("connection closed");
        let status = tonic::Status::from_error(Box::new(io));
        let error = ClientError::from(status);
        assert!(matches!(error, ClientError::Transport { .. }), "{error:?}");
        assert_eq!(
            error.to_string(),
            "the connection to mapsync failed: connection closed"
        );
    }
}
