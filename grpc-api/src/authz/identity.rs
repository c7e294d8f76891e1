//! What a request says about its caller: the connection's [`Peer`] and an
//! optional `authorization: Bearer TOKEN` metadata entry, of which only the
//! sha256 is kept (a token is never stored or logged); and who that is under
//! a [`Policy`].

use std::sync::Arc;

use subtle::ConstantTimeEq;
use tonic::metadata::MetadataMap;

use super::AuthError;
use super::policy::Policy;
use crate::peer::Peer;

/// A request's credentials.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// The connection's identity (`None`: the request came another way).
    pub peer: Option<Peer>,
    /// The bearer token sent, if any.
    pub token: Option<Token>,
}

/// A bearer token as the server keeps it.
#[derive(Clone, PartialEq, Eq)]
pub enum Token {
    /// The sha256 of a well-formed `Bearer TOKEN`.
    Sha256([u8; 32]),
    /// `authorization` metadata that is not `Bearer TOKEN` (non-ASCII, another
    /// scheme, an empty token).
    Malformed,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // the hash is no secret, but it is no use in a log either
        f.write_str(match self {
            Token::Sha256(_) => "Token::Sha256(..)",
            Token::Malformed => "Token::Malformed",
        })
    }
}

/// The sha256 of `token`.
pub fn sha256(token: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, token);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

impl Credentials {
    /// The credentials of `request`.
    pub fn of<T>(request: &tonic::Request<T>) -> Credentials {
        Credentials {
            peer: Peer::of(request).cloned(),
            token: token_of(request.metadata()),
        }
    }
}

/// The token of `authorization` metadata, if there is one.
fn token_of(metadata: &MetadataMap) -> Option<Token> {
    let value = metadata.get("authorization")?;
    let Ok(text) = value.to_str() else {
        return Some(Token::Malformed);
    };
    let token = text
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|token| !token.is_empty());
    Some(token.map_or(Token::Malformed, |token| {
        Token::Sha256(sha256(token.as_bytes()))
    }))
}

/// Who a caller is.
#[derive(Debug, Clone)]
pub enum Caller {
    /// No policy is loaded: everyone who can connect may read; writes are
    /// up to the server's [`WritePolicy`](crate::peer::WritePolicy).
    Open,
    /// Root over the Unix socket: everything.
    Root,
    /// Users of the policy (several when a token, subject or group matches
    /// more than one), checked against that same policy.
    Users {
        /// The policy they were found in.
        policy: Arc<Policy>,
        /// Indexes of the users in it.
        users: Vec<usize>,
    },
}

impl Caller {
    /// The users' names, for logs (`root`, `anyone` for the others).
    pub fn name(&self) -> String {
        match self {
            Caller::Open => "anyone".into(),
            Caller::Root => "root".into(),
            Caller::Users { policy, users } => users
                .iter()
                .filter_map(|index| policy.users.get(*index))
                .map(|user| user.name.as_str())
                .collect::<Vec<_>>()
                .join(","),
        }
    }
}

/// Who `credentials` are under `policy`: a token decides if one was sent,
/// then a client certificate's subject, then uid 0 (root), then the uid,
/// then the gid or supplementary groups.
pub(crate) fn resolve(
    policy: &Arc<Policy>,
    credentials: &Credentials,
) -> Result<Caller, AuthError> {
    let users = |matches: &dyn Fn(&super::policy::User) -> bool| -> Vec<usize> {
        let found = policy.users.iter().enumerate();
        found
            .filter(|(_, user)| matches(user))
            .map(|(i, _)| i)
            .collect()
    };
    let found = |users: Vec<usize>| Caller::Users {
        policy: policy.clone(),
        users,
    };
    match &credentials.token {
        Some(Token::Malformed) => return Err(AuthError::MalformedToken),
        Some(Token::Sha256(hash)) => {
            // every stored hash is compared, each in constant time
            let users = users(&|user| {
                user.token_hashes
                    .iter()
                    .fold(false, |seen, stored| seen | bool::from(stored.ct_eq(hash)))
            });
            if users.is_empty() {
                return Err(AuthError::UnknownToken);
            }
            return Ok(found(users));
        }
        None => {}
    }
    match &credentials.peer {
        None => Err(AuthError::NoIdentity),
        Some(Peer::Tls {
            subject: Some(subject),
            ..
        }) => {
            let users = users(&|user| user.cert_cns.iter().any(|cn| cn == subject));
            if users.is_empty() {
                return Err(AuthError::UnknownSubject {
                    subject: subject.clone(),
                });
            }
            Ok(found(users))
        }
        Some(Peer::Tcp { .. } | Peer::Tls { subject: None, .. }) => Err(AuthError::NoCredentials),
        Some(Peer::Unix { uid: 0, .. }) => Ok(Caller::Root),
        Some(Peer::Unix {
            uid, gid, groups, ..
        }) => {
            let by_uid = users(&|user| user.uids.contains(uid));
            if !by_uid.is_empty() {
                return Ok(found(by_uid));
            }
            let by_group = users(&|user| user.gids.iter().any(|g| g == gid || groups.contains(g)));
            if by_group.is_empty() {
                return Err(AuthError::UnknownUnixUser { uid: *uid });
            }
            Ok(found(by_group))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::authz::Access;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn policy() -> Arc<Policy> {
        let text = format!(
            r#"
[users.reader]
uids = [1001]
gids = [2000]
cert_cns = ["reader-svc"]
roles = ["r"]
[users.ci]
tokens_sha256 = ["{}"]
roles = ["w"]
[roles.r]
read = ["flows"]
[roles.w]
write = ["flows"]
"#,
            hex(&sha256(b"s3cret"))
        );
        Arc::new(Policy::parse(Path::new("p"), &text).expect("policy"))
    }

    fn unix(uid: u32, gid: u32, groups: &[u32]) -> Credentials {
        Credentials {
            peer: Some(Peer::Unix {
                uid,
                gid,
                pid: None,
                groups: groups.to_vec(),
            }),
            token: None,
        }
    }

    fn request(authorization: Option<&str>) -> tonic::Request<()> {
        let mut request = tonic::Request::new(());
        if let Some(value) = authorization {
            request
                .metadata_mut()
                .insert("authorization", value.parse().expect("ascii"));
        }
        request
    }

    fn names(result: Result<Caller, AuthError>) -> String {
        result.map_or_else(|error| format!("error: {error}"), |caller| caller.name())
    }

    #[test]
    fn bearer_tokens_are_kept_as_their_hash() {
        let token = |value| Credentials::of(&request(value)).token;
        assert_eq!(token(None), None);
        assert_eq!(
            token(Some("Bearer s3cret")),
            Some(Token::Sha256(sha256(b"s3cret")))
        );
        assert_eq!(
            token(Some("bearer  s3cret ")),
            Some(Token::Sha256(sha256(b"s3cret")))
        );
        assert_eq!(token(Some("Basic abc")), Some(Token::Malformed));
        assert_eq!(token(Some("Bearer ")), Some(Token::Malformed));
        assert!(!format!("{:?}", token(Some("Bearer s3cret"))).contains("s3cret"));
    }

    #[test]
    fn tokens_subjects_uids_and_groups_name_users() {
        let policy = policy();
        let with_token = |token: &str| Credentials {
            token: Credentials::of(&request(Some(&format!("Bearer {token}")))).token,
            ..unix(1001, 1001, &[])
        };
        assert_eq!(names(resolve(&policy, &with_token("s3cret"))), "ci");
        assert_eq!(
            names(resolve(&policy, &with_token("wrong"))),
            "error: unknown bearer token",
            "a token decides even for a known uid"
        );
        assert_eq!(names(resolve(&policy, &unix(1001, 5, &[]))), "reader");
        assert_eq!(
            names(resolve(&policy, &unix(1500, 5, &[7, 2000]))),
            "reader"
        );
        assert_eq!(names(resolve(&policy, &unix(1500, 2000, &[]))), "reader");
        assert!(matches!(
            resolve(&policy, &unix(0, 0, &[])),
            Ok(Caller::Root)
        ));
        assert!(matches!(
            resolve(&policy, &unix(1500, 5, &[])),
            Err(AuthError::UnknownUnixUser { uid: 1500 })
        ));
        let tls = |subject: Option<&str>| Credentials {
            peer: Some(Peer::Tls {
                addr: "127.0.0.1:1".parse().expect("addr"),
                subject: subject.map(str::to_owned),
            }),
            token: None,
        };
        assert_eq!(names(resolve(&policy, &tls(Some("reader-svc")))), "reader");
        assert!(matches!(
            resolve(&policy, &tls(Some("other"))),
            Err(AuthError::UnknownSubject { .. })
        ));
        assert!(matches!(
            resolve(&policy, &tls(None)),
            Err(AuthError::NoCredentials)
        ));
        assert!(matches!(
            resolve(&policy, &Credentials::default()),
            Err(AuthError::NoIdentity)
        ));
        let Ok(Caller::Users { policy: p, users }) = resolve(&policy, &unix(1001, 5, &[])) else {
            panic!("a user");
        };
        assert!(p.allows(&users, "flows", Access::Read));
        assert!(!p.allows(&users, "flows", Access::Write));
    }
}
