//! The client's error type.

use tonic::Code;

/// What went wrong talking to mapsync.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The endpoint is neither `HOST:PORT`, `http(s)://HOST:PORT` nor `unix:PATH`.
    #[error("invalid endpoint `{endpoint}`: expected HOST:PORT, http://HOST:PORT or unix:PATH")]
    InvalidEndpoint {
        /// The endpoint given.
        endpoint: String,
    },
    /// The server could not be reached.
    #[error("cannot reach mapsync at {endpoint}: {reason}")]
    Connect {
        /// The endpoint.
        endpoint: String,
        /// Why, as the transport says it (innermost cause).
        reason: String,
        /// The transport error.
        #[source]
        source: tonic::transport::Error,
    },
    /// The server refused or failed the request.
    #[error("{} ({})", .0.message(), code_name(.0.code()))]
    Status(#[from] tonic::Status),
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

impl ClientError {
    /// The gRPC status code, for errors the server returned.
    pub fn code(&self) -> Option<Code> {
        match self {
            ClientError::Status(status) => Some(status.code()),
            ClientError::WatchRefused { code, .. } => Some(*code),
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
