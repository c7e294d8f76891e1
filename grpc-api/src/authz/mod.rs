//! Who may read and write which map.
//!
//! Authentication has two halves: the accept loop takes each connection's
//! [`Peer`](crate::peer::Peer) (Unix credentials, TLS client certificate
//! subject), and every request adds its bearer token, if any
//! ([`Credentials::of`]). Authorization is per request, in the service:
//! [`Authorizer::caller`] says who the credentials are (or
//! `UNAUTHENTICATED`), [`Authorizer::check`] whether that caller may read or
//! write each map it names (or `PERMISSION_DENIED`).
//!
//! Without a policy file everyone who can connect may read (the Unix
//! socket's mode and group, or TLS with client certificates, decide who can:
//! the `mapsync` binary refuses TCP whose callers nobody authenticates unless
//! told `--insecure-listen`), and writes are decided by the server's
//! [`WritePolicy`](crate::peer::WritePolicy) (root and `--write-uid` /
//! `--write-gid` over the Unix socket). With a policy file
//! ([`Authorizer::from_file`]) every caller must be one of its users (root
//! over the Unix socket always is, with every permission), and may do only
//! what its roles allow. [`Authorizer::reload`] swaps in a changed file
//! whole; a file that does not check keeps the old policy.
//!
//! Every refusal is counted ([`Authorizer::refusals`]) and logged, at most one
//! line a second.
//!
//! # Layout
//! - [`policy`]: the policy file and its checks.
//! - [`identity`]: credentials of a request and who they are.
//! - `glob`: map-name patterns.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwapOption;
use mapsync_core::ratelimit::LogLimiter;

mod glob;
pub mod identity;
pub mod policy;

pub use identity::{Caller, Credentials, Token, sha256};
pub use policy::{Access, Policy, PolicyError};

/// Why a request was refused by authentication or authorization.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// A bearer token that is no user's.
    #[error("unknown bearer token")]
    UnknownToken,
    /// `authorization` metadata that is not `Bearer TOKEN`.
    #[error("the authorization metadata is not `Bearer TOKEN`")]
    MalformedToken,
    /// A token was sent to a server without a policy to check it against.
    #[error("a bearer token was sent, but this server has no --policy to check tokens against")]
    TokenWithoutPolicy,
    /// A client certificate whose subject is no user's.
    #[error("client certificate subject `{subject}` is not a user of the policy")]
    UnknownSubject {
        /// The subject common name.
        subject: String,
    },
    /// A Unix-socket peer whose uid and groups are no user's.
    #[error("unix uid {uid} (and its groups) is not a user of the policy")]
    UnknownUnixUser {
        /// The peer's uid.
        uid: u32,
    },
    /// A TCP caller without token or client certificate.
    #[error("no credentials: send a bearer token or connect with a client certificate")]
    NoCredentials,
    /// The request carries no connection identity.
    #[error("the caller's identity is unknown")]
    NoIdentity,
    /// A known caller without the permission.
    #[error("{caller} may not {access} map `{map}`")]
    Denied {
        /// The caller's name(s).
        caller: String,
        /// What was asked.
        access: Access,
        /// The map.
        map: String,
    },
    /// A watch of every map by a caller who may not read them all.
    #[error("{caller} may not read every map: name the maps to watch")]
    NotEveryMap {
        /// The caller's name(s).
        caller: String,
    },
}

impl AuthError {
    /// The gRPC status code: `PERMISSION_DENIED` for a known caller,
    /// `UNAUTHENTICATED` otherwise.
    pub fn code(&self) -> tonic::Code {
        match self {
            AuthError::Denied { .. } | AuthError::NotEveryMap { .. } => {
                tonic::Code::PermissionDenied
            }
            _ => tonic::Code::Unauthenticated,
        }
    }

    /// The `reason` label of the refusal counter.
    pub fn reason(&self) -> &'static str {
        match self.code() {
            tonic::Code::PermissionDenied => "permission_denied",
            _ => "unauthenticated",
        }
    }
}

impl From<AuthError> for tonic::Status {
    fn from(error: AuthError) -> Self {
        tonic::Status::new(error.code(), error.to_string())
    }
}

/// Refusals counted by reason.
#[derive(Debug, Default)]
pub struct Refusals {
    unauthenticated: AtomicU64,
    permission_denied: AtomicU64,
}

impl Refusals {
    /// Requests refused `UNAUTHENTICATED`.
    pub fn unauthenticated(&self) -> u64 {
        self.unauthenticated.load(Ordering::Relaxed)
    }

    /// Requests (or watches) refused `PERMISSION_DENIED`, writes refused by
    /// the write policy included.
    pub fn permission_denied(&self) -> u64 {
        self.permission_denied.load(Ordering::Relaxed)
    }
}

/// The policy in force, swapped whole on reload, and the refusal counters.
#[derive(Debug, Default)]
pub struct Authorizer {
    file: Option<PathBuf>,
    policy: ArcSwapOption<Policy>,
    refusals: Refusals,
    log: Mutex<LogLimiter>,
}

impl Authorizer {
    /// Without a policy: see the module docs.
    pub fn open() -> Arc<Authorizer> {
        Arc::default()
    }

    /// With the policy in `path`, which [`reload`](Self::reload) reads again.
    pub fn from_file(path: &Path) -> Result<Arc<Authorizer>, PolicyError> {
        let policy = Policy::load(path)?;
        Ok(Arc::new(Authorizer {
            file: Some(path.to_owned()),
            policy: ArcSwapOption::from_pointee(policy),
            ..Authorizer::default()
        }))
    }

    /// With `policy` (not from a file: `reload` keeps it).
    pub fn with_policy(policy: Policy) -> Arc<Authorizer> {
        Arc::new(Authorizer {
            policy: ArcSwapOption::from_pointee(policy),
            ..Authorizer::default()
        })
    }

    /// Whether a policy is in force.
    pub fn has_policy(&self) -> bool {
        self.policy.load().is_some()
    }

    /// Reads the policy file again: from the next request on, the new policy
    /// decides (open streams stay open; their new watches are checked
    /// against it). A file that does not check leaves the current policy.
    pub fn reload(&self) -> Result<(), PolicyError> {
        if let Some(path) = &self.file {
            self.policy.store(Some(Arc::new(Policy::load(path)?)));
        }
        Ok(())
    }

    /// The refusal counters.
    pub fn refusals(&self) -> &Refusals {
        &self.refusals
    }

    /// Who `credentials` are, or why they are refused (counted and logged).
    pub fn caller(
        &self,
        credentials: &Credentials,
        rpc: &'static str,
    ) -> Result<Caller, AuthError> {
        let result = match (self.policy.load_full(), &credentials.token) {
            (None, None) => Ok(Caller::Open),
            (None, Some(_)) => Err(AuthError::TokenWithoutPolicy),
            (Some(policy), _) => identity::resolve(&policy, credentials),
        };
        result.map_err(|error| self.refused(error, credentials, rpc))
    }

    /// Whether `caller` may `access` `map` (no count, no log: for filtering
    /// what `ListMaps` and `Status` show).
    pub fn allows(caller: &Caller, map: &str, access: Access) -> bool {
        match caller {
            Caller::Root => true,
            Caller::Open => access == Access::Read,
            Caller::Users { policy, users } => policy.allows(users, map, access),
        }
    }

    /// Checks that `caller` may `access` every map of `maps`; a refusal is
    /// counted and logged. `Open` callers pass for writes too: the write
    /// policy decides those.
    pub fn check<'a>(
        &self,
        caller: &Caller,
        credentials: &Credentials,
        rpc: &'static str,
        access: Access,
        maps: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), AuthError> {
        if matches!(caller, Caller::Open | Caller::Root) {
            return Ok(());
        }
        for map in maps {
            if !Self::allows(caller, map, access) {
                let error = AuthError::Denied {
                    caller: caller.name(),
                    access,
                    map: map.to_owned(),
                };
                return Err(self.refused(error, credentials, rpc));
            }
        }
        Ok(())
    }

    /// Counts and logs a refusal made elsewhere (the write policy's).
    pub fn count_denied(&self) {
        self.refusals
            .permission_denied
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Counts `error`, logs it at most once a second, and returns it.
    pub(crate) fn refused(
        &self,
        error: AuthError,
        credentials: &Credentials,
        rpc: &'static str,
    ) -> AuthError {
        let counter = match error.code() {
            tonic::Code::PermissionDenied => &self.refusals.permission_denied,
            _ => &self.refusals.unauthenticated,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let suppressed = self.log.lock().expect("not poisoned").check();
        if let Some(suppressed) = suppressed {
            let peer = credentials
                .peer
                .as_ref()
                .map_or_else(|| "unknown".to_owned(), ToString::to_string);
            let token = credentials.token.is_some();
            tracing::warn!(%peer, token, rpc, reason = error.reason(), suppressed, "refused: {error}");
        }
        error
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::Peer;

    fn unix(uid: u32) -> Credentials {
        Credentials {
            peer: Some(Peer::Unix {
                uid,
                gid: uid,
                pid: None,
                groups: Vec::new(),
            }),
            token: None,
        }
    }

    #[test]
    fn refusals_are_counted_by_reason_and_a_reload_keeps_a_good_policy() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("policy.toml");
        let write = |text: &str| std::fs::write(&path, text).expect("write");
        write("[users.a]\nuids = [1001]\nroles = [\"r\"]\n[roles.r]\nread = [\"flows\"]\n");
        let authz = Authorizer::from_file(&path).expect("policy");
        let caller = authz.caller(&unix(1001), "get").expect("known");
        assert_eq!(caller.name(), "a");
        assert_eq!(
            authz.check(&caller, &unix(1001), "get", Access::Read, ["flows"]),
            Ok(())
        );
        let denied = authz
            .check(&caller, &unix(1001), "put", Access::Write, ["flows"])
            .unwrap_err();
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        assert_eq!(denied.to_string(), "a may not write map `flows`");
        let unknown = authz.caller(&unix(1002), "get").unwrap_err();
        assert_eq!(unknown.code(), tonic::Code::Unauthenticated);
        assert_eq!(authz.refusals().permission_denied(), 1);
        assert_eq!(authz.refusals().unauthenticated(), 1);

        write("[users.a]\nuids = [1001]\nroles = [\"gone\"]\n");
        let error = authz.reload().unwrap_err();
        assert!(error.to_string().contains("users.a.roles"), "{error}");
        assert!(authz.caller(&unix(1001), "get").is_ok(), "old policy kept");
        write("[users.b]\nuids = [1002]\n");
        authz.reload().expect("reload");
        assert!(authz.caller(&unix(1001), "get").is_err());
        assert!(authz.caller(&unix(1002), "get").is_ok());
    }

    #[test]
    fn without_a_policy_anyone_reads_and_tokens_are_refused() {
        let authz = Authorizer::open();
        let caller = authz.caller(&unix(1500), "get").expect("open");
        assert!(Authorizer::allows(&caller, "x", Access::Read));
        assert!(!Authorizer::allows(&caller, "x", Access::Write));
        let with_token = Credentials {
            token: Some(Token::Sha256(sha256(b"t"))),
            ..unix(1500)
        };
        assert_eq!(
            authz.caller(&with_token, "get").unwrap_err(),
            AuthError::TokenWithoutPolicy
        );
    }
}
