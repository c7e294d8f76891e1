//! The policy file: users (who a caller is: unix uids and gids, client
//! certificate subject CNs, bearer tokens stored as sha256 hex) and roles
//! (which maps a user may read and write, by name or glob).
//!
//! ```toml
//! [users.flows-reader]
//! uids = [1001]                 # Unix-socket peers with this uid
//! gids = [1002]                 # ... or this gid (primary or supplementary)
//! cert_cns = ["flows-reader"]   # TLS client certificate subject CN
//! tokens_sha256 = ["9f86d0..."] # sha256 hex of a bearer token
//! roles = ["read-flows"]
//!
//! [roles.read-flows]
//! read = ["flows", "flows_*"]   # ListMaps, Get, List, Watch, Status
//! write = []                    # Put, Delete, Txn, Apply
//! ```
//!
//! A file that does not parse, has a field not listed here, names a role
//! that is not defined, a user without any identity or a token hash that is
//! not 64 hex digits is refused as a whole, with its line and field.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::glob::Pattern;

/// Why a policy file was refused.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file could not be read.
    #[error("cannot read policy {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not TOML of the policy's shape (the message names the
    /// field: unknown, missing or of the wrong type).
    #[error("policy {}:{line}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The line (1-based) the parser stopped at.
        line: usize,
        /// The parser's description.
        message: String,
    },
    /// A field has a value the policy cannot use.
    #[error("policy {}:{line}: {field}: {reason}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The line (1-based) of the value.
        line: usize,
        /// The field, as a dotted path (`users.NAME.roles`).
        field: String,
        /// What is wrong with it.
        reason: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    users: BTreeMap<String, Spanned<UserEntry>>,
    #[serde(default)]
    roles: BTreeMap<String, RoleEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserEntry {
    #[serde(default)]
    uids: Vec<u32>,
    #[serde(default)]
    gids: Vec<u32>,
    #[serde(default)]
    cert_cns: Vec<String>,
    #[serde(default)]
    tokens_sha256: Vec<Spanned<String>>,
    #[serde(default)]
    roles: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleEntry {
    #[serde(default)]
    read: Vec<Spanned<String>>,
    #[serde(default)]
    write: Vec<Spanned<String>>,
}

/// One user of the policy: how it is recognised and its roles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct User {
    pub(crate) name: String,
    pub(crate) uids: Vec<u32>,
    pub(crate) gids: Vec<u32>,
    pub(crate) cert_cns: Vec<String>,
    pub(crate) token_hashes: Vec<[u8; 32]>,
    pub(crate) roles: Vec<String>,
}

/// What a role may do.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Role {
    read: Vec<Pattern>,
    write: Vec<Pattern>,
}

/// A checked policy: every role a user names exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub(crate) users: Vec<User>,
    roles: BTreeMap<String, Role>,
}

/// Read or write access to a map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// `ListMaps`, `Get`, `List`, `Watch`, `Status`.
    Read,
    /// `Put`, `Delete`, `Txn`, `Apply`.
    Write,
}

impl std::fmt::Display for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Access::Read => "read",
            Access::Write => "write",
        })
    }
}

impl Policy {
    /// Reads and checks the policy at `path`.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.to_owned(),
            source,
        })?;
        Policy::parse(path, &text)
    }

    /// Checks the policy text `text` (read from `path`, for messages).
    pub fn parse(path: &Path, text: &str) -> Result<Policy, PolicyError> {
        let file: PolicyFile = toml::from_str(text).map_err(|error| PolicyError::Parse {
            path: path.to_owned(),
            line: error.span().map_or(1, |span| line_of(text, span.start)),
            message: error.message().trim().to_owned(),
        })?;
        let invalid = |span: Range<usize>, field: String, reason: String| PolicyError::Invalid {
            path: path.to_owned(),
            line: line_of(text, span.start),
            field,
            reason,
        };
        let mut roles = BTreeMap::new();
        for (name, entry) in file.roles {
            let patterns = |list: Vec<Spanned<String>>, what: &str| {
                list.into_iter()
                    .map(|pattern| {
                        let span = pattern.span();
                        Pattern::new(pattern.get_ref()).map_err(|reason| {
                            invalid(span, format!("roles.{name}.{what}"), reason.to_owned())
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()
            };
            let role = Role {
                read: patterns(entry.read, "read")?,
                write: patterns(entry.write, "write")?,
            };
            roles.insert(name, role);
        }
        let mut users = Vec::new();
        for (name, entry) in file.users {
            let span = entry.span();
            let entry = entry.into_inner();
            if entry.uids.is_empty()
                && entry.gids.is_empty()
                && entry.cert_cns.is_empty()
                && entry.tokens_sha256.is_empty()
            {
                return Err(invalid(
                    span,
                    format!("users.{name}"),
                    "no identity: give uids, gids, cert_cns or tokens_sha256".into(),
                ));
            }
            let mut token_hashes = Vec::new();
            for token in entry.tokens_sha256 {
                let hash = parse_sha256(token.get_ref()).ok_or_else(|| {
                    invalid(
                        token.span(),
                        format!("users.{name}.tokens_sha256"),
                        "expected 64 hex digits (the sha256 of the token, e.g. `printf %s TOKEN | sha256sum`)".into(),
                    )
                })?;
                token_hashes.push(hash);
            }
            let mut role_names = Vec::new();
            for role in entry.roles {
                if !roles.contains_key(role.get_ref()) {
                    return Err(invalid(
                        role.span(),
                        format!("users.{name}.roles"),
                        format!("no role `{}` is defined under [roles]", role.get_ref()),
                    ));
                }
                role_names.push(role.into_inner());
            }
            users.push(User {
                name,
                uids: entry.uids,
                gids: entry.gids,
                cert_cns: entry.cert_cns,
                token_hashes,
                roles: role_names,
            });
        }
        Ok(Policy { users, roles })
    }

    /// Whether the users `users` (indexes into this policy) together may
    /// `access` the map `map`.
    pub(crate) fn allows(&self, users: &[usize], map: &str, access: Access) -> bool {
        users
            .iter()
            .filter_map(|index| self.users.get(*index))
            .flat_map(|user| &user.roles)
            .filter_map(|role| self.roles.get(role))
            .any(|role| {
                let patterns = match access {
                    Access::Read => &role.read,
                    Access::Write => &role.write,
                };
                patterns.iter().any(|pattern| pattern.matches(map))
            })
    }
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// 64 hex digits as 32 bytes.
fn parse_sha256(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(hex.chunks(2)) {
        *byte = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[users.reader]
uids = [1001]
roles = ["read-flows"]

[users.ci]
tokens_sha256 = ["9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08"]
roles = ["read-flows", "write-cfg"]

[roles.read-flows]
read = ["flows"]

[roles.write-cfg]
read = ["cfg_*"]
write = ["cfg_*"]
"#;

    fn parse(text: &str) -> Result<Policy, PolicyError> {
        Policy::parse(Path::new("p.toml"), text)
    }

    #[test]
    fn roles_grant_per_map_read_and_write_by_name_or_glob() {
        let policy = parse(GOOD).expect("valid");
        let index = |name: &str| {
            policy
                .users
                .iter()
                .position(|user| user.name == name)
                .expect("user")
        };
        let (reader, ci) = (index("reader"), index("ci"));
        assert!(policy.allows(&[reader], "flows", Access::Read));
        assert!(!policy.allows(&[reader], "flows", Access::Write));
        assert!(!policy.allows(&[reader], "cfg_a", Access::Read));
        assert!(policy.allows(&[ci], "cfg_a", Access::Write));
        assert!(!policy.allows(&[ci], "flows2", Access::Read));
        assert!(policy.allows(&[reader, ci], "cfg_x", Access::Read));
        assert_eq!(
            policy.users[ci].token_hashes[0][..2],
            [0x9f, 0x86],
            "hex of either case"
        );
    }

    #[test]
    fn a_bad_file_names_its_line_and_field() {
        let cases = [
            (
                "[users.a]\nuids = [1]\nroles = [\"nope\"]\n",
                3,
                "users.a.roles",
            ),
            ("[users.a]\nroles = []\n", 1, "no identity"),
            (
                "[users.a]\ntokens_sha256 = [\"abc\"]\n",
                2,
                "users.a.tokens_sha256",
            ),
            ("[roles.r]\nread = [\"a\", \"\"]\n", 2, "roles.r.read"),
            ("[roles.r]\nreed = [\"a\"]\n", 2, "unknown field `reed`"),
            ("[users.a]\nuids = [\"x\"]\n", 2, "invalid type"),
            ("[users.a\n", 1, ""),
        ];
        for (text, line, says) in cases {
            let error = parse(text).expect_err(text).to_string();
            assert!(
                error.starts_with(&format!("policy p.toml:{line}: ")),
                "{text:?}: {error}"
            );
            assert!(error.contains(says), "{text:?}: {error}");
        }
        let missing = Policy::load(Path::new("/nonexistent/policy.toml")).unwrap_err();
        assert!(matches!(missing, PolicyError::Read { .. }), "{missing}");
    }

    proptest::proptest! {
        /// Fuzz target: any text, and the good policy cut or changed at one
        /// byte, is a policy or an error whose line is within the text.
        #[test]
        fn fuzz_policy_parse(text in "\\PC{0,200}", at in 0usize..400, byte in 0u8..128) {
            for text in [text.clone(), mutate(GOOD, at, byte), GOOD[..at % GOOD.len()].to_owned()] {
                if let Err(PolicyError::Parse { line, .. } | PolicyError::Invalid { line, .. }) =
                    parse(&text)
                {
                    proptest::prop_assert!(line >= 1 && line <= text.lines().count().max(1) + 1);
                }
            }
        }
    }

    /// `text` with the byte at `at` (modulo its length) replaced by `byte`
    /// (ASCII, so the text stays UTF-8).
    fn mutate(text: &str, at: usize, byte: u8) -> String {
        let mut bytes = text.as_bytes().to_vec();
        let at = at % bytes.len();
        bytes[at] = byte;
        String::from_utf8(bytes).expect("ascii in, ascii out")
    }

    #[test]
    fn an_empty_policy_allows_nothing() {
        let policy = parse("").expect("valid");
        assert!(policy.users.is_empty());
        assert!(!policy.allows(&[0], "x", Access::Read));
    }
}
