//! Request and server errors, and the one mapping of errors to gRPC status
//! codes.

use mapsync_core::{Epoch, SyncError};
use tonic::{Code, Status};

/// Why a request was refused.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// An error of the sync core (unknown map, wrong key size, compacted
    /// revision, epoch changed, ingest stopped...).
    #[error(transparent)]
    Sync(#[from] SyncError),
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
}

impl RequestError {
    /// The epoch check of a resume: `requested` 0 means "any".
    pub fn check_epoch(requested: u64, current: Epoch) -> Result<(), RequestError> {
        if requested != 0 && requested != current.0 {
            return Err(SyncError::EpochChanged {
                requested: Epoch(requested),
                current,
            }
            .into());
        }
        Ok(())
    }

    /// The gRPC status code of this error.
    pub fn code(&self) -> Code {
        match self {
            RequestError::NotReady => Code::Unavailable,
            RequestError::PageTooLarge { .. } => Code::InvalidArgument,
            RequestError::Sync(error) => match error {
                SyncError::UnknownMap { .. } => Code::NotFound,
                SyncError::WrongKeySize { .. } => Code::InvalidArgument,
                SyncError::Compacted { .. } => Code::OutOfRange,
                SyncError::EpochChanged { .. } => Code::FailedPrecondition,
                SyncError::Stopped => Code::Unavailable,
                _ => Code::Internal,
            },
        }
    }
}

impl From<RequestError> for Status {
    fn from(error: RequestError) -> Self {
        Status::new(error.code(), error.to_string())
    }
}

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The listen address is not `HOST:PORT` or `unix:PATH`.
    #[error("invalid listen address `{addr}`: expected HOST:PORT or unix:PATH")]
    InvalidAddress {
        /// The address given.
        addr: String,
    },
    /// Binding the listener failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The transport failed while serving.
    #[error("gRPC transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The reflection service could not be built.
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_has_its_precise_code() {
        let cases: Vec<(RequestError, Code)> = vec![
            (
                SyncError::UnknownMap { name: "x".into() }.into(),
                Code::NotFound,
            ),
            (
                SyncError::WrongKeySize {
                    map: "x".into(),
                    size: 2,
                    expected: 4,
                }
                .into(),
                Code::InvalidArgument,
            ),
            (
                SyncError::Compacted {
                    requested: 1,
                    oldest: 5,
                }
                .into(),
                Code::OutOfRange,
            ),
            (
                RequestError::check_epoch(3, Epoch(5)).unwrap_err(),
                Code::FailedPrecondition,
            ),
            (SyncError::Stopped.into(), Code::Unavailable),
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
