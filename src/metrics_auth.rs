//! Who may scrape `/metrics`: the address rule (loopback, unless the
//! endpoint has basic auth or TLS, or `--insecure-listen`), HTTP basic auth
//! against a file of `user:sha256-hex-of-password` lines (compared in
//! constant time), and TLS (reloaded on SIGHUP with the gRPC certificate).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use mapsync_core::ratelimit::LogLimiter;
use mapsync_grpc::tls::ServerTls;
use subtle::ConstantTimeEq;
use tracing::Instrument;

/// Longest a TLS handshake of a scraper may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Users allowed to scrape, with the sha256 of their passwords.
#[derive(Debug)]
pub struct BasicAuth {
    users: BTreeMap<String, [u8; 32]>,
    refused_log: Mutex<LogLimiter>,
}

impl BasicAuth {
    /// Reads `path`: one `user:sha256hex` per line (blank lines and lines
    /// starting with `#` skipped). A bad line is an error naming it.
    pub fn load(path: &Path) -> anyhow::Result<BasicAuth> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("--metrics-basic-auth-file {}", path.display()))?;
        BasicAuth::parse(&text)
            .with_context(|| format!("--metrics-basic-auth-file {}", path.display()))
    }

    fn parse(text: &str) -> anyhow::Result<BasicAuth> {
        let mut users = BTreeMap::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let hash = line
                .split_once(':')
                .filter(|(user, _)| !user.is_empty())
                .and_then(|(user, hex)| Some((user, decode_sha256(hex.trim())?)));
            let Some((user, hash)) = hash else {
                anyhow::bail!(
                    "line {}: expected USER:SHA256 (64 hex digits: `printf %s PASSWORD | sha256sum`)",
                    index + 1
                );
            };
            users.insert(user.to_owned(), hash);
        }
        anyhow::ensure!(!users.is_empty(), "no USER:SHA256 line in it");
        Ok(BasicAuth {
            users,
            refused_log: Mutex::new(LogLimiter::default()),
        })
    }

    /// Whether an `Authorization` header value names a user with the right
    /// password.
    fn allows(&self, authorization: Option<&str>) -> bool {
        let Some(credentials) = authorization
            .and_then(|value| value.strip_prefix("Basic "))
            .and_then(|b64| {
                base64::engine::general_purpose::STANDARD
                    .decode(b64.trim())
                    .ok()
            })
        else {
            return false;
        };
        let Some((user, password)) = std::str::from_utf8(&credentials)
            .ok()
            .and_then(|text| text.split_once(':'))
        else {
            return false;
        };
        let given = mapsync_grpc::authz::sha256(password.as_bytes());
        // an unknown user costs one comparison too
        let stored = self.users.get(user).copied().unwrap_or([0; 32]);
        let known = self.users.contains_key(user);
        bool::from(stored.ct_eq(&given)) && known
    }
}

fn decode_sha256(hex: &str) -> Option<[u8; 32]> {
    let bytes = hex::decode(hex).ok()?;
    bytes.try_into().ok()
}

/// How the metrics endpoint is guarded.
#[derive(Debug, Default, Clone)]
pub struct MetricsAccess {
    /// Basic auth, if any.
    pub basic: Option<Arc<BasicAuth>>,
    /// TLS, if any.
    pub tls: Option<Arc<ServerTls>>,
}

impl MetricsAccess {
    /// Whether anything guards the endpoint beyond its address.
    pub fn guarded(&self) -> bool {
        self.basic.is_some() || self.tls.is_some()
    }
}

/// Refuses a metrics address that is not loopback when nothing guards it,
/// unless `insecure`.
pub fn check_address(addr: &str, access: &MetricsAccess, insecure: bool) -> anyhow::Result<()> {
    if access.guarded() || insecure {
        return Ok(());
    }
    let loopback = match addr.parse::<std::net::SocketAddr>() {
        Ok(addr) => addr.ip().is_loopback(),
        Err(_) => addr
            .rsplit_once(':')
            .is_some_and(|(host, _)| host == "localhost"),
    };
    anyhow::ensure!(
        loopback,
        "refusing to serve metrics on {addr} unguarded: give --metrics-basic-auth-file or --metrics-tls-cert/--metrics-tls-key, a loopback address, or --insecure-listen"
    );
    Ok(())
}

/// Serves `router` on `listener` with `access` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    access: MetricsAccess,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let router = match access.basic {
        Some(basic) => router.layer(axum::middleware::from_fn_with_state(basic, require_basic)),
        None => router,
    };
    match access.tls {
        None => axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await
            .context("metrics server"),
        Some(tls) => axum::serve(
            TlsListener {
                tcp: listener,
                tls,
                failures: LogLimiter::default(),
            },
            router,
        )
        .with_graceful_shutdown(shutdown)
        .await
        .context("metrics server"),
    }
}

async fn require_basic(
    State(basic): State<Arc<BasicAuth>>,
    request: Request,
    next: Next,
) -> Response {
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    if basic.allows(authorization) {
        return next.run(request).await;
    }
    let suppressed = basic.refused_log.lock().expect("not poisoned").check();
    if let Some(suppressed) = suppressed {
        tracing::warn!(
            suppressed,
            "metrics: refused a scrape without valid basic auth"
        );
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Basic realm=\"mapsync metrics\"")],
        "basic auth required\n",
    )
        .into_response()
}

/// TCP with a TLS handshake (bounded by [`HANDSHAKE_TIMEOUT`]) per
/// connection; a failed handshake is logged (rate-limited) and skipped.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    tls: Arc<ServerTls>,
    failures: LogLimiter,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (stream, addr) = axum::serve::Listener::accept(&mut self.tcp).await;
            let handshake = self.tls.acceptor().accept(stream);
            let error = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)
                .instrument(tracing::debug_span!("metrics_tls", %addr))
                .await
            {
                Ok(Ok(tls)) => return (tls, addr),
                Ok(Err(error)) => error.to_string(),
                Err(_) => format!("no handshake within {HANDSHAKE_TIMEOUT:?}"),
            };
            if let Some(suppressed) = self.failures.check() {
                tracing::warn!(%addr, suppressed, "metrics: TLS handshake failed: {error}");
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn sha(text: &str) -> String {
        hex::encode(mapsync_grpc::authz::sha256(text.as_bytes()))
    }

    /// A raw HTTP/1.1 GET of `/metrics` with `authorization`: the status line.
    async fn scrape(addr: std::net::SocketAddr, authorization: Option<&str>) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let header =
            authorization.map_or_else(String::new, |value| format!("Authorization: {value}\r\n"));
        let request =
            format!("GET /metrics HTTP/1.1\r\nHost: x\r\n{header}Connection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("send");
        let mut reply = String::new();
        stream.read_to_string(&mut reply).await.expect("read");
        reply.lines().next().unwrap_or_default().to_owned()
    }

    #[tokio::test]
    async fn basic_auth_lets_known_users_scrape_and_refuses_the_rest() {
        let basic = BasicAuth::parse(&format!(
            "# scrapers\nprom:{}\n\nother:{}\n",
            sha("pw"),
            sha("x")
        ))
        .expect("valid");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let router = Router::new().route("/metrics", get(|| async { "mapsync_up 1\n" }));
        let access = MetricsAccess {
            basic: Some(Arc::new(basic)),
            tls: None,
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, router, access, async {
            let _ = stopped.await;
        }));
        let b64 = |text: &str| base64::engine::general_purpose::STANDARD.encode(text);
        let right = format!("Basic {}", b64("prom:pw"));
        assert_eq!(scrape(addr, Some(&right)).await, "HTTP/1.1 200 OK");
        for wrong in [
            format!("Basic {}", b64("prom:wrong")),
            format!("Basic {}", b64("nobody:pw")),
            format!("Basic {}", b64("other:pw")),
            "Basic !!!".to_owned(),
            "Bearer pw".to_owned(),
        ] {
            assert_eq!(
                scrape(addr, Some(&wrong)).await,
                "HTTP/1.1 401 Unauthorized",
                "{wrong}"
            );
        }
        assert_eq!(scrape(addr, None).await, "HTTP/1.1 401 Unauthorized");
        let _ = stop.send(());
        server.await.expect("task").expect("clean stop");
    }

    #[tokio::test]
    async fn with_tls_scrapes_are_https_only() {
        use tokio_rustls::rustls;
        let key = rcgen::KeyPair::generate().expect("key");
        let params = rcgen::CertificateParams::new(vec!["localhost".into()]).expect("params");
        let cert = params.self_signed(&key).expect("cert");
        let dir = tempfile::tempdir().expect("dir");
        let (cert_path, key_path) = (dir.path().join("m.pem"), dir.path().join("m.key"));
        std::fs::write(&cert_path, cert.pem()).expect("write");
        std::fs::write(&key_path, key.serialize_pem()).expect("write");
        let files = mapsync_grpc::tls::TlsFiles {
            cert: cert_path,
            key: key_path,
            client_ca: None,
        };
        let tls = ServerTls::load_for(files, vec![b"http/1.1".to_vec()]).expect("tls");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let router = Router::new().route("/metrics", get(|| async { "mapsync_up 1\n" }));
        let access = MetricsAccess {
            basic: None,
            tls: Some(tls),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, router, access, async {
            let _ = stopped.await;
        }));
        let plain = tokio::time::timeout(Duration::from_secs(10), scrape(addr, None))
            .await
            .expect("the server closes a plain request");
        assert!(!plain.starts_with("HTTP/1.1 200"), "{plain}");

        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.der().clone()).expect("root");
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        let mut stream = connector.connect(name, tcp).await.expect("handshake");
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("send");
        let mut reply = Vec::new();
        // the server may close without close_notify: keep what was read
        let _ = stream.read_to_end(&mut reply).await;
        let reply = String::from_utf8_lossy(&reply);
        assert!(reply.starts_with("HTTP/1.1 200 OK"), "{reply}");
        assert!(reply.contains("mapsync_up 1"), "{reply}");
        let _ = stop.send(());
        server.await.expect("task").expect("clean stop");
    }

    #[test]
    fn a_bad_auth_file_names_the_line() {
        let error = BasicAuth::parse(&format!("prom:{}\nprom-no-hash\n", sha("pw"))).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("line 2: expected USER:SHA256"),
            "{error}"
        );
        assert!(BasicAuth::parse(":abc").is_err());
        assert!(BasicAuth::parse("# only a comment\n").is_err());
    }

    #[test]
    fn only_loopback_goes_unguarded() {
        let open = MetricsAccess::default();
        assert!(check_address("127.0.0.1:9100", &open, false).is_ok());
        assert!(check_address("localhost:9100", &open, false).is_ok());
        let error = check_address("0.0.0.0:9100", &open, false).unwrap_err();
        assert!(
            error.to_string().contains("--metrics-basic-auth-file"),
            "{error}"
        );
        assert!(check_address("0.0.0.0:9100", &open, true).is_ok());
        let guarded = MetricsAccess {
            basic: Some(Arc::new(
                BasicAuth::parse(&format!("a:{}", sha("b"))).expect("valid"),
            )),
            tls: None,
        };
        assert!(check_address("0.0.0.0:9100", &guarded, false).is_ok());
    }
}
