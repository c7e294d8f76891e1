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
}

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
            _ => None,
        }
    }
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
