//! `mapsync serve`'s security flags: who may connect to the Unix socket,
//! where the server may listen without TLS, and the policy file of who may
//! read and write which map.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use mapsync_grpc::authz::Authorizer;
use mapsync_grpc::server::SocketOptions;
use mapsync_grpc::server::listener::DEFAULT_SOCKET_MODE;
use mapsync_grpc::tls::TlsFiles;
use tracing::Instrument;

/// Who may connect, and over what.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Security")]
pub struct SecurityArgs {
    /// Permission bits of the Unix socket, in octal (connecting needs write
    /// permission): set exactly, whatever the umask.
    #[arg(long, value_name = "OCTAL", default_value = "0660", value_parser = parse_mode)]
    pub socket_mode: u32,
    /// Group of the Unix socket (a name or a gid), and of its directory when
    /// mapsync creates it (mode 0750): its members may connect.
    #[arg(long, value_name = "NAME|GID")]
    pub socket_group: Option<String>,
    /// Serve TCP callers nobody authenticated (no --tls-client-ca, no
    /// --policy), and listen on a TCP address that is not loopback without
    /// TLS: anyone who reaches the port (on loopback: any local user) can
    /// read every mirrored map.
    #[arg(long)]
    pub insecure_listen: bool,
    /// PEM certificate chain of the server: TLS on the TCP listen address
    /// (with --tls-key). Reloaded on SIGHUP.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert. Reloaded on SIGHUP.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates that clients must present a certificate from
    /// (mTLS; the certificate's subject CN is the client's name).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// Policy file (TOML): users (unix uids and gids, client certificate
    /// CNs, sha256 of bearer tokens) and their roles' read and write access
    /// per map name or glob. Without it everyone who can connect reads and
    /// root (and --write-uid / --write-gid) write over the Unix socket.
    /// Reloaded on SIGHUP.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// File of `USER:SHA256` lines (sha256 hex of the password): scrapes of
    /// --metrics-listen need HTTP basic auth as one of these users.
    #[arg(long, value_name = "FILE")]
    pub metrics_basic_auth_file: Option<PathBuf>,
    /// PEM certificate chain of the metrics endpoint: HTTPS on
    /// --metrics-listen (with --metrics-tls-key). Reloaded on SIGHUP.
    #[arg(long, value_name = "FILE", requires = "metrics_tls_key")]
    pub metrics_tls_cert: Option<PathBuf>,
    /// PEM private key of --metrics-tls-cert.
    #[arg(long, value_name = "FILE", requires = "metrics_tls_cert")]
    pub metrics_tls_key: Option<PathBuf>,
}

impl Default for SecurityArgs {
    fn default() -> Self {
        SecurityArgs {
            socket_mode: DEFAULT_SOCKET_MODE,
            socket_group: None,
            insecure_listen: false,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            policy: None,
            metrics_basic_auth_file: None,
            metrics_tls_cert: None,
            metrics_tls_key: None,
        }
    }
}

impl SecurityArgs {
    /// The options of the Unix socket (the group looked up by name if it is
    /// not a number).
    pub fn socket_options(&self) -> anyhow::Result<SocketOptions> {
        let group = match &self.socket_group {
            None => None,
            Some(group) => Some(resolve_group(group)?),
        };
        Ok(SocketOptions {
            mode: self.socket_mode,
            group,
        })
    }

    /// The TLS files given, if any.
    pub fn tls_files(&self) -> Option<TlsFiles> {
        Some(TlsFiles {
            cert: self.tls_cert.clone()?,
            key: self.tls_key.clone()?,
            client_ca: self.tls_client_ca.clone(),
        })
    }

    /// Refuses TLS flags on a Unix socket; and, unless `--insecure-listen`,
    /// a TCP `listen` address whose callers nobody authenticates (neither
    /// mTLS nor a policy: the issue's default "TCP without a policy reads only
    /// for authenticated callers") or that is not loopback without TLS.
    pub fn check_listen(&self, listen: &str) -> anyhow::Result<()> {
        if listen.starts_with("unix:") {
            if self.tls_cert.is_some() {
                anyhow::bail!(
                    "--tls-cert applies to a TCP --listen address, not to {listen} (the Unix socket is guarded by its mode and group)"
                );
            }
            return Ok(());
        }
        if self.insecure_listen {
            return Ok(());
        }
        if self.tls_client_ca.is_none() && self.policy.is_none() {
            anyhow::bail!(
                "refusing to serve {listen} to callers nobody authenticates: over TCP anyone who can connect (on loopback, any local user) could read every map (give --tls-client-ca for client certificates, --policy for tokens and roles, or --insecure-listen to serve anyone)"
            );
        }
        if self.tls_cert.is_some() {
            return Ok(());
        }
        if !listen.contains(':') {
            // not HOST:PORT at all: binding it says so
            return Ok(());
        }
        let loopback = match listen.parse::<SocketAddr>() {
            Ok(addr) => addr.ip().is_loopback(),
            Err(_) => listen
                .rsplit_once(':')
                .is_some_and(|(host, _)| host == "localhost"),
        };
        if loopback {
            return Ok(());
        }
        anyhow::bail!(
            "refusing to listen on {listen} without TLS: any host that reaches it could read every map (give --tls-cert and --tls-key, or --insecure-listen to do it anyway)"
        )
    }
}

/// Parses an octal mode of at most 0777.
fn parse_mode(arg: &str) -> Result<u32, String> {
    let mode = u32::from_str_radix(arg.strip_prefix("0o").unwrap_or(arg), 8)
        .map_err(|_| format!("`{arg}` is not an octal mode such as 0660"))?;
    if mode > 0o777 {
        return Err(format!("`{arg}` has bits beyond 0777"));
    }
    Ok(mode)
}

/// The gid of `group`: a number as it is, a name looked up in the group
/// database.
fn resolve_group(group: &str) -> anyhow::Result<u32> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(gid);
    }
    let name = std::ffi::CString::new(group)
        .ok()
        .with_context(|| format!("--socket-group `{group}`: not a group name"))?;
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: all-zero bytes are a valid `struct group` (null pointers)
    let mut entry: libc::group = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; buf outlives `entry`'s use
    let rc = unsafe {
        libc::getgrnam_r(
            name.as_ptr(),
            &mut entry,
            buf.as_mut_ptr(),
            buf.len(),
            &mut found,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::from_raw_os_error(rc))
            .with_context(|| format!("--socket-group `{group}`: cannot read the group database"));
    }
    if found.is_null() {
        anyhow::bail!("--socket-group `{group}`: no such group");
    }
    Ok(entry.gr_gid)
}

/// How `--metrics-listen` is guarded (files read and checked now), after
/// refusing an unguarded address that is not loopback (unless
/// `--insecure-listen`).
pub fn metrics_access(
    args: &SecurityArgs,
    metrics_listen: Option<&str>,
) -> anyhow::Result<crate::metrics_auth::MetricsAccess> {
    use crate::metrics_auth::{BasicAuth, MetricsAccess, check_address};
    let Some(addr) = metrics_listen else {
        anyhow::ensure!(
            args.metrics_basic_auth_file.is_none() && args.metrics_tls_cert.is_none(),
            "--metrics-basic-auth-file and --metrics-tls-cert apply to --metrics-listen, which is not given"
        );
        return Ok(MetricsAccess::default());
    };
    let basic = match &args.metrics_basic_auth_file {
        Some(path) => Some(Arc::new(BasicAuth::load(path)?)),
        None => None,
    };
    let tls = match (&args.metrics_tls_cert, &args.metrics_tls_key) {
        (Some(cert), Some(key)) => {
            let files = TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: None,
            };
            Some(
                mapsync_grpc::tls::ServerTls::load_for(files, vec![b"http/1.1".to_vec()])
                    .context("cannot load the metrics TLS certificate")?,
            )
        }
        _ => None,
    };
    let access = MetricsAccess { basic, tls };
    check_address(addr, &access, args.insecure_listen)?;
    Ok(access)
}

/// The authorizer of `--policy` (the file checked now: a bad one is an
/// error naming its line and field), or the open default without it.
/// `--write-uid` / `--write-gid` do not combine with a policy file.
pub fn authorizer(
    args: &SecurityArgs,
    write_policy: &mapsync_grpc::peer::WritePolicy,
) -> anyhow::Result<Arc<Authorizer>> {
    let Some(path) = &args.policy else {
        return Ok(Authorizer::open());
    };
    if !write_policy.uids.is_empty() || !write_policy.gids.is_empty() {
        anyhow::bail!(
            "--write-uid / --write-gid do not combine with --policy: give those users write access in the policy file"
        );
    }
    Ok(Authorizer::from_file(path)?)
}

/// On every SIGHUP until the process ends, reloads each of `tls` (the gRPC
/// and metrics certificates) and the policy file of `authz` (if it has
/// one); a reload that fails keeps what is served and says why in one line.
pub fn reload_on_sighup(
    tls: Vec<Arc<mapsync_grpc::tls::ServerTls>>,
    authz: Arc<Authorizer>,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    if tls.is_empty() && !authz.has_policy() {
        return Ok(());
    }
    let mut hangups = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    let chain = |error: &dyn std::error::Error| {
        let mut text = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            text = format!("{text}: {cause}");
            source = cause.source();
        }
        text
    };
    tokio::spawn(
        async move {
            while hangups.recv().await.is_some() {
                for tls in &tls {
                    match tls.reload() {
                        Ok(()) => tracing::info!("SIGHUP: reloaded the TLS certificate"),
                        Err(error) => tracing::warn!(
                            error = %chain(&error),
                            "SIGHUP: kept the current TLS certificate"
                        ),
                    }
                }
                if authz.has_policy() {
                    match authz.reload() {
                        Ok(()) => tracing::info!("SIGHUP: reloaded the policy"),
                        Err(error) => tracing::warn!(
                            error = %chain(&error),
                            "SIGHUP: kept the current policy"
                        ),
                    }
                }
            }
        }
        .instrument(tracing::info_span!("sighup_reload")),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_are_octal_up_to_0777() {
        assert_eq!(parse_mode("0660"), Ok(0o660));
        assert_eq!(parse_mode("600"), Ok(0o600));
        assert_eq!(parse_mode("0o666"), Ok(0o666));
        assert!(parse_mode("0689").unwrap_err().contains("octal"));
        assert!(parse_mode("01777").unwrap_err().contains("0777"));
    }

    #[test]
    fn groups_are_gids_or_names() {
        assert_eq!(resolve_group("1234").expect("gid"), 1234);
        assert_eq!(resolve_group("root").expect("root exists"), 0);
        let error = resolve_group("no-such-group-mapsync").unwrap_err();
        assert_eq!(
            error.to_string(),
            "--socket-group `no-such-group-mapsync`: no such group"
        );
    }

    #[test]
    fn tcp_needs_authenticated_callers_and_tls_off_loopback() {
        // no mTLS, no policy: TCP is refused even on loopback
        let open = SecurityArgs::default();
        assert!(open.check_listen("unix:/x").is_ok());
        for refused in ["127.0.0.1:1", "[::1]:1", "localhost:80", "0.0.0.0:50051"] {
            let error = open.check_listen(refused).unwrap_err().to_string();
            assert!(error.contains("nobody authenticates"), "{refused}: {error}");
            assert!(error.contains("--insecure-listen"), "{error}");
        }
        // a policy authenticates (tokens): loopback is fine, the rest needs TLS
        let policy = SecurityArgs {
            policy: Some("p.toml".into()),
            ..SecurityArgs::default()
        };
        for ok in ["127.0.0.1:1", "[::1]:1", "localhost:80"] {
            assert!(policy.check_listen(ok).is_ok(), "{ok}");
        }
        let error = policy.check_listen("0.0.0.0:50051").unwrap_err();
        assert!(error.to_string().contains("without TLS"), "{error}");
        assert!(policy.check_listen("10.1.2.3:1").is_err());
        assert!(
            policy.check_listen("myhost:1").is_err(),
            "a name may be anything"
        );
        assert!(
            policy.check_listen("nonsense").is_ok(),
            "left to the bind's own error"
        );
        // mTLS: anywhere
        let mtls = SecurityArgs {
            tls_cert: Some("c.pem".into()),
            tls_key: Some("k.pem".into()),
            tls_client_ca: Some("ca.pem".into()),
            ..SecurityArgs::default()
        };
        assert!(mtls.check_listen("0.0.0.0:50051").is_ok());
        // TLS without client certificates or policy: still nobody authenticated
        let tls = SecurityArgs {
            tls_client_ca: None,
            ..mtls.clone()
        };
        assert!(tls.check_listen("0.0.0.0:50051").is_err());
        let error = mtls.check_listen("unix:/x").unwrap_err();
        assert!(error.to_string().contains("TCP"), "{error}");
        // --insecure-listen: anything
        let insecure = SecurityArgs {
            insecure_listen: true,
            ..SecurityArgs::default()
        };
        assert!(insecure.check_listen("0.0.0.0:50051").is_ok());
        assert!(insecure.check_listen("127.0.0.1:1").is_ok());
    }
}
