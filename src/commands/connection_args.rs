//! `mapsync serve`'s connection limits: how many connections, how long
//! they may stay quiet, and how a dead peer is noticed.

use std::time::Duration;

use clap::Args;
use mapsync_grpc::server::ConnectionLimits;

/// File descriptors kept free beyond those open once the maps are: for
/// what the sync and the metrics endpoint open as they run.
pub const FD_HEADROOM: u64 = 32;

/// The connection limits of `mapsync serve`.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Connection limits")]
pub struct ConnectionArgs {
    /// Most client connections at once. At the limit a new one replaces the
    /// oldest without a call or stream, or is refused if all are busy (a
    /// rate-limited log line either way). Never more than the file
    /// descriptors the open-file limit leaves free once the maps are open,
    /// less 32. [default: 1024]
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    /// Seconds a new connection has to complete its HTTP/2 handshake
    /// (preface and SETTINGS) before it is closed.
    #[arg(long, value_name = "SECS", default_value_t = secs(ConnectionLimits::default().handshake_timeout))]
    pub handshake_timeout: f64,
    /// Seconds a connection may have no call or stream open before it is
    /// closed (clients reconnect when they need to); 0: never.
    #[arg(long, value_name = "SECS", default_value_t = ConnectionLimits::default().idle_timeout.map_or(0.0, secs))]
    pub idle_timeout: f64,
    /// Seconds of silence after which the server pings a connection, to
    /// notice a client that is gone; 0: no pings.
    #[arg(long, value_name = "SECS", default_value_t = ConnectionLimits::default().keepalive_interval.map_or(0.0, secs))]
    pub keepalive_interval: f64,
    /// Seconds a ping may go unanswered before the connection is closed.
    #[arg(long, value_name = "SECS", default_value_t = secs(ConnectionLimits::default().keepalive_timeout))]
    pub keepalive_timeout: f64,
    /// Most concurrent calls and streams on one connection (HTTP/2
    /// SETTINGS_MAX_CONCURRENT_STREAMS).
    #[arg(long, value_name = "N", default_value_t = ConnectionLimits::default().max_concurrent_streams)]
    pub max_concurrent_streams: u32,
}

fn secs(duration: Duration) -> f64 {
    duration.as_secs_f64()
}

impl ConnectionArgs {
    /// The limits these flags describe, for a process that has `fd_room`
    /// file descriptors to spare for connections (`None`: no limit known;
    /// see [`connection_fd_room`]). The connection limit is kept within it,
    /// an explicit `--max-connections` too (with a warning): running out of
    /// descriptors would fail the map reads of the ingest task, not only
    /// accepts.
    pub fn limits(&self, fd_room: Option<usize>) -> anyhow::Result<ConnectionLimits> {
        let default = ConnectionLimits::default();
        let room = fd_room.map(|room| room.max(1));
        let max_connections = match (self.max_connections, room) {
            (Some(0), _) => anyhow::bail!("--max-connections 0: expected at least 1"),
            (Some(max), Some(room)) if max > room => {
                tracing::warn!(
                    requested = max,
                    max_connections = room,
                    "--max-connections lowered to the file descriptors left free by the open-file limit (raise it, e.g. LimitNOFILE=, for more)"
                );
                room
            }
            (Some(max), _) => max,
            (None, Some(room)) => default.max_connections.min(room),
            (None, None) => default.max_connections,
        };
        if self.max_concurrent_streams == 0 {
            anyhow::bail!("--max-concurrent-streams 0: expected at least 1");
        }
        Ok(ConnectionLimits {
            max_connections,
            handshake_timeout: positive("--handshake-timeout", self.handshake_timeout)?,
            idle_timeout: optional("--idle-timeout", self.idle_timeout)?,
            keepalive_interval: optional("--keepalive-interval", self.keepalive_interval)?,
            keepalive_timeout: positive("--keepalive-timeout", self.keepalive_timeout)?,
            max_concurrent_streams: self.max_concurrent_streams,
        })
    }
}

fn positive(flag: &str, secs: f64) -> anyhow::Result<Duration> {
    if secs > 0.0 && secs.is_finite() {
        Ok(Duration::from_secs_f64(secs))
    } else {
        anyhow::bail!("{flag} {secs}: expected seconds > 0")
    }
}

fn optional(flag: &str, secs: f64) -> anyhow::Result<Option<Duration>> {
    if secs == 0.0 {
        return Ok(None);
    }
    if secs > 0.0 && secs.is_finite() {
        Ok(Some(Duration::from_secs_f64(secs)))
    } else {
        anyhow::bail!("{flag} {secs}: expected seconds > 0, or 0 to turn it off")
    }
}

/// File descriptors this process can spare for client connections: its
/// soft open-file limit less those open now and [`FD_HEADROOM`]. `None`
/// when there is no limit.
pub fn connection_fd_room() -> Option<usize> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit through a valid pointer.
    let result = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    if result != 0 || limit.rlim_cur == libc::RLIM_INFINITY {
        return None;
    }
    let open = std::fs::read_dir("/proc/self/fd").map_or(0, |fds| fds.count() as u64);
    let room = limit.rlim_cur.saturating_sub(open + FD_HEADROOM);
    Some(usize::try_from(room).unwrap_or(usize::MAX))
}

/// TLS and token flags of the client subcommands (TLS for a TCP `--endpoint`).
#[derive(Args, Debug, Clone, Default)]
#[command(next_help_heading = "TLS and tokens")]
pub struct ClientTlsArgs {
    /// PEM CA certificates the server's certificate must chain to: speak TLS
    /// to the TCP endpoint (its host name is checked against the
    /// certificate).
    #[arg(long, value_name = "FILE", env = "MAPSYNC_TLS_CA")]
    pub tls_ca: Option<std::path::PathBuf>,
    /// PEM client certificate for mTLS (with --tls-key and --tls-ca).
    #[arg(long, value_name = "FILE", requires_all = ["tls_key", "tls_ca"])]
    pub tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
    /// File holding a bearer token sent with every call (for a server with
    /// a policy file); white space around it is dropped. Overrides
    /// $MAPSYNC_TOKEN.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<std::path::PathBuf>,
}

impl ClientTlsArgs {
    /// The client's TLS options, if `--tls-ca` is given.
    pub fn options(&self) -> anyhow::Result<Option<mapsync_client::TlsOptions>> {
        let Some(ca) = &self.tls_ca else {
            return Ok(None);
        };
        let client = self.tls_cert.as_deref().zip(self.tls_key.as_deref());
        Ok(Some(mapsync_client::TlsOptions::from_files(ca, client)?))
    }

    /// The bearer token: the contents of `--token-file`, else
    /// `$MAPSYNC_TOKEN`, else none.
    pub fn token(&self) -> anyhow::Result<Option<String>> {
        token_from(
            self.token_file.as_deref(),
            std::env::var("MAPSYNC_TOKEN").ok(),
        )
    }
}

/// The token of `file` (read, trimmed, not empty), else of `env` (if not
/// empty).
fn token_from(
    file: Option<&std::path::Path>,
    env: Option<String>,
) -> anyhow::Result<Option<String>> {
    if let Some(file) = file {
        let text = std::fs::read_to_string(file)
            .map_err(|error| anyhow::anyhow!("--token-file {}: {error}", file.display()))?;
        let token = text.trim();
        anyhow::ensure!(
            !token.is_empty(),
            "--token-file {}: the file is empty",
            file.display()
        );
        return Ok(Some(token.to_owned()));
    }
    Ok(env
        .map(|token| token.trim().to_owned())
        .filter(|token| !token.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> ConnectionArgs {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            connections: ConnectionArgs,
        }
        let mut argv = vec!["serve"];
        argv.extend_from_slice(extra);
        Cli::parse_from(argv).connections
    }

    #[test]
    fn defaults_are_the_library_defaults_within_the_fd_limit() {
        let room = connection_fd_room().expect("a test process has an fd limit");
        assert!(room > 0 && room < 1 << 20, "{room}");
        assert_eq!(
            args(&[]).limits(None).expect("valid"),
            ConnectionLimits::default()
        );
        assert_eq!(
            args(&[]).limits(Some(136)).expect("valid").max_connections,
            136
        );
        assert_eq!(
            args(&["--max-connections", "500"])
                .limits(Some(136))
                .expect("valid")
                .max_connections,
            136,
            "an explicit value is kept within the fd limit too"
        );
        assert_eq!(
            args(&["--max-connections", "5"])
                .limits(Some(136))
                .expect("valid")
                .max_connections,
            5
        );
        let off = args(&["--idle-timeout", "0", "--keepalive-interval", "0"])
            .limits(None)
            .expect("valid");
        assert_eq!((off.idle_timeout, off.keepalive_interval), (None, None));
    }

    #[test]
    fn the_token_comes_from_the_file_then_the_environment() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("token");
        std::fs::write(&file, "  s3cret\n").expect("write");
        let env = Some("from-env".to_owned());
        assert_eq!(
            token_from(Some(&file), env.clone()).expect("file"),
            Some("s3cret".into())
        );
        assert_eq!(token_from(None, env).expect("env"), Some("from-env".into()));
        assert_eq!(token_from(None, Some(" ".into())).expect("blank"), None);
        assert_eq!(token_from(None, None).expect("none"), None);
        std::fs::write(&file, "\n").expect("write");
        let error = token_from(Some(&file), None).unwrap_err().to_string();
        assert!(error.ends_with("the file is empty"), "{error}");
        let error = token_from(Some(&dir.path().join("missing")), None)
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("--token-file "), "{error}");
        assert!(!error.contains("s3cret"));
    }

    #[test]
    fn bad_values_are_explained() {
        for (flags, expected) in [
            (&["--max-connections", "0"][..], "--max-connections 0"),
            (&["--handshake-timeout", "0"][..], "--handshake-timeout 0"),
            (&["--idle-timeout=-1"][..], "--idle-timeout -1"),
            (
                &["--max-concurrent-streams", "0"][..],
                "--max-concurrent-streams",
            ),
        ] {
            let error = args(flags).limits(None).unwrap_err();
            assert!(error.to_string().contains(expected), "{error}");
        }
    }
}
