//! Who is on the other end of a connection: the one place caller identities
//! come from.
//!
//! The accept loop takes the identity of each accepted connection once
//! ([`Peer::of_unix`], [`Peer::Tcp`]) and attaches it to every request of
//! that connection as a request extension; handlers read it back with
//! [`Peer::of`]. A request without one (a service driven by another
//! transport) has no identity and is treated as nobody.

use std::collections::BTreeSet;
use std::net::SocketAddr;

/// The caller of a request, as the transport knows it (a request's bearer
/// token is added per request: [`crate::authz::Credentials`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Peer {
    /// A Unix-socket peer, from `SO_PEERCRED` (the credentials of the
    /// process that connected, taken when it connected).
    Unix {
        /// Its effective user id.
        uid: u32,
        /// Its effective group id.
        gid: u32,
        /// Its process id, as this process's pid namespace sees it (`None`
        /// when the peer's is not visible here).
        pid: Option<i32>,
        /// Its supplementary groups, read from `/proc/PID/status` just after
        /// the connection was accepted, if that process still had `uid`
        /// then; empty when they could not be read.
        groups: Vec<u32>,
    },
    /// A TCP peer.
    Tcp {
        /// Its address.
        addr: SocketAddr,
    },
    /// A TCP peer over TLS.
    Tls {
        /// Its address.
        addr: SocketAddr,
        /// The subject common name of its client certificate (mTLS: the
        /// certificate was verified against `--tls-client-ca`), `None`
        /// without a client certificate or without a CN in it.
        subject: Option<String>,
    },
}

impl Peer {
    /// The peer attached to `request` by the server, if any.
    pub fn of<T>(request: &tonic::Request<T>) -> Option<&Peer> {
        request.extensions().get::<Peer>()
    }

    /// The identity of a TLS connection from `addr`: the subject of its
    /// verified client certificate, if it sent one.
    pub fn of_tls<IO>(addr: SocketAddr, stream: &tokio_rustls::server::TlsStream<IO>) -> Peer {
        let subject = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|certs| certs.first())
            .and_then(|cert| crate::tls::subject_common_name(cert));
        Peer::Tls { addr, subject }
    }

    /// The identity of an accepted Unix-socket connection.
    pub fn of_unix(stream: &tokio::net::UnixStream) -> std::io::Result<Peer> {
        let cred = stream.peer_cred()?;
        let pid = cred.pid().filter(|pid| *pid > 0);
        let groups = pid
            .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
            .and_then(|status| groups_of(&status, cred.uid()))
            .unwrap_or_default();
        Ok(Peer::Unix {
            uid: cred.uid(),
            gid: cred.gid(),
            pid,
            groups,
        })
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peer::Unix { uid, gid, pid, .. } => {
                write!(f, "unix uid {uid} gid {gid}")?;
                match pid {
                    Some(pid) => write!(f, " pid {pid}"),
                    None => Ok(()),
                }
            }
            Peer::Tcp { addr } => write!(f, "tcp {addr}"),
            Peer::Tls { addr, subject } => match subject {
                Some(subject) => write!(f, "tls {addr} cn {subject}"),
                None => write!(f, "tls {addr}"),
            },
        }
    }
}

/// The supplementary groups in a `/proc/PID/status` text, if its effective
/// uid (the second field of `Uid:`) is `uid`: a pid reused by another user's
/// process since the connect is not believed.
fn groups_of(status: &str, uid: u32) -> Option<Vec<u32>> {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .map(str::split_whitespace)
    };
    let effective: u32 = field("Uid:")?.nth(1)?.parse().ok()?;
    if effective != uid {
        return None;
    }
    field("Groups:")?.map(|g| g.parse().ok()).collect()
}

/// Who may call the write RPCs (`Put`, `Delete`, `Txn`, `Apply`).
///
/// Over the Unix socket: a peer whose uid is 0, or is in `uids`, or whose
/// gid or one of whose supplementary groups is in `gids`. Over TCP: nobody.
/// A request without a peer: nobody. This is the rule without a policy file;
/// with one, its roles decide instead ([`crate::authz`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WritePolicy {
    /// User ids allowed to write, besides 0.
    pub uids: BTreeSet<u32>,
    /// Group ids whose members may write.
    pub gids: BTreeSet<u32>,
}

/// Why a caller may not write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteDenied {
    /// A TCP caller.
    #[error("writes are not accepted over TCP (connect over the Unix socket as a permitted user)")]
    Tcp,
    /// A Unix-socket caller that is not root and not allowed.
    #[error(
        "uid {uid} may not write: only uid 0 and the users and groups given with serve --write-uid / --write-gid may"
    )]
    NotAllowed {
        /// The caller's uid.
        uid: u32,
    },
    /// The request carries no caller identity.
    #[error("the caller's identity is unknown: writes need a Unix-socket connection")]
    Unknown,
}

impl WritePolicy {
    /// Whether `peer` may write.
    pub fn check(&self, peer: Option<&Peer>) -> Result<(), WriteDenied> {
        match peer {
            None => Err(WriteDenied::Unknown),
            Some(Peer::Tcp { .. } | Peer::Tls { .. }) => Err(WriteDenied::Tcp),
            Some(Peer::Unix {
                uid, gid, groups, ..
            }) => {
                let allowed = *uid == 0
                    || self.uids.contains(uid)
                    || self.gids.contains(gid)
                    || groups.iter().any(|group| self.gids.contains(group));
                if allowed {
                    Ok(())
                } else {
                    Err(WriteDenied::NotAllowed { uid: *uid })
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unix(uid: u32, gid: u32, groups: &[u32]) -> Peer {
        Peer::Unix {
            uid,
            gid,
            pid: Some(1),
            groups: groups.to_vec(),
        }
    }

    #[test]
    fn root_and_listed_users_and_groups_may_write_nobody_over_tcp() {
        let policy = WritePolicy {
            uids: [1000].into(),
            gids: [50].into(),
        };
        assert_eq!(policy.check(Some(&unix(0, 0, &[]))), Ok(()));
        assert_eq!(policy.check(Some(&unix(1000, 1000, &[]))), Ok(()));
        assert_eq!(policy.check(Some(&unix(1001, 50, &[]))), Ok(()));
        assert_eq!(policy.check(Some(&unix(1001, 1001, &[7, 50]))), Ok(()));
        assert_eq!(
            policy.check(Some(&unix(1001, 1001, &[7]))),
            Err(WriteDenied::NotAllowed { uid: 1001 })
        );
        let tcp = Peer::Tcp {
            addr: "127.0.0.1:1".parse().expect("addr"),
        };
        assert_eq!(policy.check(Some(&tcp)), Err(WriteDenied::Tcp));
        assert_eq!(policy.check(None), Err(WriteDenied::Unknown));
        assert_eq!(
            WritePolicy::default().check(Some(&unix(1000, 1000, &[1000]))),
            Err(WriteDenied::NotAllowed { uid: 1000 })
        );
    }

    #[test]
    fn groups_are_read_only_from_the_status_of_a_process_with_the_uid() {
        let status =
            "Name:\tx\nUid:\t1000\t1001\t1001\t1001\nGid:\t5\t5\t5\t5\nGroups:\t4 27 100 \n";
        assert_eq!(groups_of(status, 1001), Some(vec![4, 27, 100]));
        assert_eq!(groups_of(status, 1000), None, "the effective uid counts");
        assert_eq!(groups_of("Uid:\t0\t0\t0\t0\nGroups:\t\n", 0), Some(vec![]));
        assert_eq!(groups_of("Groups:\t4\n", 0), None);
    }

    #[tokio::test]
    async fn a_unix_peer_is_this_process_with_its_groups() {
        let (a, _b) = tokio::net::UnixStream::pair().expect("pair");
        let Peer::Unix {
            uid, pid, groups, ..
        } = Peer::of_unix(&a).expect("peer")
        else {
            panic!("a unix peer");
        };
        let status = std::fs::read_to_string("/proc/self/status").expect("status");
        assert_eq!(pid, Some(std::process::id() as i32));
        assert_eq!(Some(groups), groups_of(&status, uid));
    }
}
