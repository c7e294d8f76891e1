//! Why a write RPC was refused, and the one mapping of those reasons (the
//! server's own checks and the kernel task's [`CommandError`]) to gRPC
//! statuses with machine-readable metadata.
//!
//! Metadata (ASCII, decimal) beside the message, for clients that act on
//! them:
//! - [`CURRENT_MOD_REVISION`]: a compare-and-swap mismatch, the key's mod
//!   revision now (0: absent);
//! - [`LIVE_VERSION`]: an Apply's version mismatch, the live version;
//! - [`FAILED_OP`]: in a Txn, the index of the refused op in the branch
//!   that ran;
//! - [`ERRNO`]: the kernel's errno of a refused write.

use mapsync_core::control::{CommandError, Refusal};
use mapsync_core::{Epoch, Revision};
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

use crate::peer::WriteDenied;

/// Metadata key: the key's current mod revision (`ModRevisionMismatch`).
pub const CURRENT_MOD_REVISION: &str = "mapsync-current-mod-revision";
/// Metadata key: the switchable map's live version (`VersionMismatch`).
pub const LIVE_VERSION: &str = "mapsync-live-version";
/// Metadata key: the index of the refused op of a Txn.
pub const FAILED_OP: &str = "mapsync-failed-op";
/// Metadata key: the kernel's errno of a refused write.
pub const ERRNO: &str = "mapsync-errno";

/// Why a write request was not carried out; nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The server was started without a command handle.
    #[error("this server does not accept writes")]
    NotAccepted,
    /// The caller may not write.
    #[error(transparent)]
    Denied(#[from] WriteDenied),
    /// The policy file refused the caller (unknown, or without write on a map).
    #[error(transparent)]
    Auth(#[from] crate::authz::AuthError),
    /// The initial dumps are not done yet.
    #[error("mapsync is still taking its initial dumps; retry shortly")]
    NotReady,
    /// No map of that name is mirrored.
    #[error("unknown map `{name}`")]
    UnknownMap {
        /// The name given.
        name: String,
    },
    /// A key or value of the wrong size.
    #[error("{field}: map `{map}` takes {expected} bytes, got {size}")]
    WrongSize {
        /// The map.
        map: String,
        /// The request field, e.g. `value` or `success[2].put.key`.
        field: String,
        /// Bytes given.
        size: usize,
        /// Bytes the map takes.
        expected: u32,
    },
    /// An enum field with a value this server does not know.
    #[error("{field}: unknown value {value}")]
    UnknownEnum {
        /// The request field.
        field: String,
        /// The number given.
        value: i32,
    },
    /// A `oneof` left unset.
    #[error("{field}: {what} is not set")]
    Missing {
        /// The request field.
        field: String,
        /// What must be set.
        what: &'static str,
    },
    /// A Txn with no compare and no op.
    #[error("empty Txn: give at least one compare or op")]
    EmptyTxn,
    /// More compares or ops than allowed.
    #[error("{field}: {count} given, at most {max} allowed")]
    TooMany {
        /// `compare`, `success` or `failure`.
        field: &'static str,
        /// How many were given.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// An `exists` compare with GREATER or LESS.
    #[error("{field}: an exists compare takes EQUAL or NOT_EQUAL only")]
    OrderedExists {
        /// The request field.
        field: String,
    },
    /// The same key written twice by one request.
    #[error("{field}: key {key} of map `{map}` appears twice in one request")]
    DuplicateKey {
        /// The request field of the second occurrence.
        field: String,
        /// The map.
        map: String,
        /// The key, hex.
        key: String,
    },
    /// The first message of an Apply stream does not name the map.
    #[error("the first ApplyRequest must name the map")]
    ApplyWithoutMap,
    /// A later message of an Apply stream names another map.
    #[error("ApplyRequest {message}: names map `{got}`, but this Apply is for `{map}`")]
    ApplyMapChanged {
        /// The map of the first message.
        map: String,
        /// The map named later.
        got: String,
        /// The index of the message in the stream.
        message: usize,
    },
    /// An Apply stream that ended without a message.
    #[error("an Apply stream needs at least one message naming the map")]
    EmptyApply,
    /// A delete entry in replace mode.
    #[error("{field}: delete entries are only allowed with APPLY_MODE_MERGE")]
    DeleteInReplace {
        /// The request field.
        field: String,
    },
    /// Apply on a map that is not switchable.
    #[error("map `{map}` is not switchable (serve it with --switch to use Apply)")]
    NotSwitchable {
        /// The map.
        map: String,
    },
    /// More Apply entries than the map holds.
    #[error("Apply to map `{map}`: more than its {max} entries (max_entries)")]
    TooManyEntries {
        /// The map.
        map: String,
        /// Its capacity.
        max: u32,
    },
    /// An expected revision of another server lifetime.
    #[error(
        "epoch {requested} is not this server's ({}): the server restarted; read the key again",
        current.0
    )]
    EpochChanged {
        /// The epoch given.
        requested: u64,
        /// The server's.
        current: Epoch,
    },
    /// The Apply stream failed (a message too large or undecodable, or the
    /// client went away): its own status.
    #[error("{}", .0.message())]
    Stream(Status),
    /// The kernel task refused or failed.
    #[error(transparent)]
    Command(#[from] CommandError),
}

impl WriteError {
    /// The gRPC status code.
    pub fn code(&self) -> Code {
        match self {
            WriteError::NotAccepted => Code::Unimplemented,
            WriteError::Denied(_) => Code::PermissionDenied,
            WriteError::Auth(error) => error.code(),
            WriteError::NotReady => Code::Unavailable,
            WriteError::UnknownMap { .. } => Code::NotFound,
            WriteError::WrongSize { .. }
            | WriteError::UnknownEnum { .. }
            | WriteError::Missing { .. }
            | WriteError::EmptyTxn
            | WriteError::TooMany { .. }
            | WriteError::OrderedExists { .. }
            | WriteError::DuplicateKey { .. }
            | WriteError::ApplyWithoutMap
            | WriteError::ApplyMapChanged { .. }
            | WriteError::EmptyApply
            | WriteError::DeleteInReplace { .. } => Code::InvalidArgument,
            WriteError::NotSwitchable { .. } | WriteError::EpochChanged { .. } => {
                Code::FailedPrecondition
            }
            WriteError::TooManyEntries { .. } => Code::ResourceExhausted,
            WriteError::Stream(status) => status.code(),
            WriteError::Command(error) => command_code(error),
        }
    }

    /// A short name of the outcome, for spans.
    pub fn outcome(&self) -> &'static str {
        match self {
            WriteError::Denied(_) | WriteError::Auth(_) => "denied",
            WriteError::Command(CommandError::Refused { .. }) => "refused",
            WriteError::Command(
                CommandError::ModRevisionMismatch { .. } | CommandError::VersionMismatch { .. },
            ) => "conflict",
            WriteError::Command(_) => "failed",
            _ => "invalid",
        }
    }
}

/// The status code of a kernel task's refusal.
pub fn command_code(error: &CommandError) -> Code {
    match error {
        CommandError::UnknownMap { .. } => Code::NotFound,
        CommandError::InvalidArgument { .. } => Code::InvalidArgument,
        CommandError::ModRevisionMismatch { .. }
        | CommandError::VersionMismatch { .. }
        | CommandError::NotSwitchable { .. } => Code::FailedPrecondition,
        CommandError::Refused { refusal, errno, .. } => match refusal {
            Refusal::AlreadyExists => Code::AlreadyExists,
            Refusal::NotFound => Code::NotFound,
            Refusal::MapFull => Code::ResourceExhausted,
            Refusal::IndexOutOfRange => Code::InvalidArgument,
            // a transient refusal: the caller may retry
            _ if matches!(*errno, libc::EAGAIN | libc::EBUSY | libc::EINTR) => Code::Aborted,
            _ => Code::Internal,
        },
        CommandError::Kernel { .. } | CommandError::Stopped => Code::Unavailable,
        CommandError::Unsupported { .. } => Code::Unimplemented,
        _ => Code::Internal,
    }
}

impl From<WriteError> for Status {
    fn from(error: WriteError) -> Self {
        let code = error.code();
        let error = match error {
            WriteError::Stream(status) => return status,
            error => error,
        };
        let mut status = Status::new(code, error.to_string());
        let metadata = status.metadata_mut();
        let mut set = |key: &'static str, value: u64| {
            metadata.insert(key, MetadataValue::from(value));
        };
        match &error {
            WriteError::Command(CommandError::ModRevisionMismatch { current, .. }) => {
                set(CURRENT_MOD_REVISION, *current);
            }
            WriteError::Command(CommandError::VersionMismatch { live, .. }) => {
                set(LIVE_VERSION, *live);
            }
            WriteError::Command(CommandError::Refused { op, errno, .. }) => {
                if let Some(op) = op {
                    set(FAILED_OP, *op as u64);
                }
                metadata.insert(ERRNO, MetadataValue::from(*errno));
            }
            _ => {}
        }
        status
    }
}

/// The check of an expected revision's epoch: `requested` 0 means unknown.
pub(super) fn check_epoch(requested: u64, current: Epoch) -> Result<(), WriteError> {
    if requested != 0 && requested != current.0 {
        return Err(WriteError::EpochChanged { requested, current });
    }
    Ok(())
}

/// Reads a decimal metadata value, for clients and tests.
pub fn metadata_u64(status: &Status, key: &str) -> Option<Revision> {
    status.metadata().get(key)?.to_str().ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(refusal: Refusal, errno: i32, op: Option<usize>) -> CommandError {
        CommandError::Refused {
            map: "m".into(),
            op,
            what: "put".into(),
            refusal,
            errno,
        }
    }

    #[test]
    fn every_command_error_has_its_precise_code() {
        let cases = [
            (
                CommandError::UnknownMap { name: "m".into() },
                Code::NotFound,
            ),
            (
                CommandError::InvalidArgument { reason: "x".into() },
                Code::InvalidArgument,
            ),
            (
                CommandError::ModRevisionMismatch {
                    map: "m".into(),
                    expected: 1,
                    current: 2,
                },
                Code::FailedPrecondition,
            ),
            (
                CommandError::VersionMismatch {
                    map: "m".into(),
                    expected: 1,
                    live: 2,
                },
                Code::FailedPrecondition,
            ),
            (
                CommandError::NotSwitchable { map: "m".into() },
                Code::FailedPrecondition,
            ),
            (
                refused(Refusal::AlreadyExists, libc::EEXIST, None),
                Code::AlreadyExists,
            ),
            (
                refused(Refusal::NotFound, libc::ENOENT, None),
                Code::NotFound,
            ),
            (
                refused(Refusal::MapFull, libc::E2BIG, None),
                Code::ResourceExhausted,
            ),
            (
                refused(Refusal::IndexOutOfRange, libc::E2BIG, None),
                Code::InvalidArgument,
            ),
            (refused(Refusal::Other, libc::EBUSY, None), Code::Aborted),
            (refused(Refusal::Other, libc::EPERM, None), Code::Internal),
            (
                CommandError::Kernel { reason: "x".into() },
                Code::Unavailable,
            ),
            (CommandError::Stopped, Code::Unavailable),
            (
                CommandError::Unsupported {
                    command: "x".into(),
                },
                Code::Unimplemented,
            ),
        ];
        for (error, code) in cases {
            let message = error.to_string();
            let status = Status::from(WriteError::from(error));
            assert_eq!(status.code(), code, "{message}");
            assert_eq!(status.message(), message);
        }
    }

    #[test]
    fn conflicts_and_refusals_carry_their_numbers_as_metadata() {
        let status = Status::from(WriteError::from(CommandError::ModRevisionMismatch {
            map: "m".into(),
            expected: 3,
            current: 17,
        }));
        assert_eq!(metadata_u64(&status, CURRENT_MOD_REVISION), Some(17));
        assert!(status.message().contains("17"), "{}", status.message());
        let status = Status::from(WriteError::from(CommandError::VersionMismatch {
            map: "m".into(),
            expected: 3,
            live: 9,
        }));
        assert_eq!(metadata_u64(&status, LIVE_VERSION), Some(9));
        let status = Status::from(WriteError::from(refused(
            Refusal::MapFull,
            libc::E2BIG,
            Some(4),
        )));
        assert_eq!(metadata_u64(&status, FAILED_OP), Some(4));
        assert_eq!(metadata_u64(&status, ERRNO), Some(libc::E2BIG as u64));
        assert!(status.message().contains("op 4"), "{}", status.message());
        let status = Status::from(WriteError::from(refused(
            Refusal::NotFound,
            libc::ENOENT,
            None,
        )));
        assert_eq!(metadata_u64(&status, FAILED_OP), None);
    }

    #[test]
    fn the_server_s_own_refusals_have_their_codes() {
        let cases = [
            (WriteError::NotAccepted, Code::Unimplemented),
            (WriteError::Denied(WriteDenied::Tcp), Code::PermissionDenied),
            (WriteError::NotReady, Code::Unavailable),
            (WriteError::UnknownMap { name: "m".into() }, Code::NotFound),
            (WriteError::EmptyTxn, Code::InvalidArgument),
            (
                WriteError::NotSwitchable { map: "m".into() },
                Code::FailedPrecondition,
            ),
            (
                check_epoch(4, Epoch(5)).unwrap_err(),
                Code::FailedPrecondition,
            ),
            (
                WriteError::TooManyEntries {
                    map: "m".into(),
                    max: 3,
                },
                Code::ResourceExhausted,
            ),
            (
                WriteError::Stream(Status::resource_exhausted("big")),
                Code::ResourceExhausted,
            ),
        ];
        for (error, code) in cases {
            assert_eq!(Status::from(error).code(), code);
        }
        assert!(check_epoch(0, Epoch(5)).is_ok());
        assert!(check_epoch(5, Epoch(5)).is_ok());
    }
}
