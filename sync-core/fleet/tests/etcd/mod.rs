//! A real etcd for tests: Debian's `etcd-server` started on loopback with a
//! temporary data dir and free ports, killed (and its data removed) on drop.
//!
//! [`require_etcd`] is the etcd counterpart of `require_kernel`: outside CI a
//! machine without `etcd` skips the test loudly; with `CI=true` it fails.
// each test crate uses a part of it
#![allow(dead_code)]

pub mod proxy;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mapsync_test_tls::TestCa;

/// Whether `etcd` can run here; panics under `CI=true` when it cannot.
pub fn require_etcd() -> bool {
    if Command::new("etcd").arg("--version").output().is_ok() {
        return true;
    }
    let why = "fleet test cannot run here: needs etcd (apt-get install etcd-server)";
    if std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false") {
        panic!("{why} (CI is set, so this is a failure)");
    }
    eprintln!("\n!!! NOT RUN: {why} !!!\n");
    false
}

/// One etcd member on 127.0.0.1, stopped and restartable on the same ports
/// and data.
#[derive(Debug)]
pub struct Etcd {
    data: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
    extra: Vec<String>,
    tls: Option<TlsCerts>,
    child: Option<Child>,
}

/// Certificates of a TLS etcd (made with rcgen): a CA, etcd's server
/// certificate for 127.0.0.1, and a client certificate etcd requires.
#[derive(Debug)]
pub struct TlsCerts {
    dir: tempfile::TempDir,
}

impl TlsCerts {
    fn make() -> Self {
        let dir = tempfile::tempdir().expect("cert dir");
        let ca = TestCa::new("test etcd CA");
        ca.write_pem(&dir.path().join("ca.pem"));
        for (name, sans) in [
            ("server", &["127.0.0.1", "localhost"][..]),
            ("client", &["mapsync"]),
        ] {
            ca.issue(sans, Some(name)).write(
                &dir.path().join(format!("{name}.pem")),
                &dir.path().join(format!("{name}-key.pem")),
            );
        }
        Self { dir }
    }

    /// A PEM file: `ca.pem`, `server.pem`, `server-key.pem`, `client.pem`,
    /// `client-key.pem`.
    pub fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    /// The client side: the CA and the client identity.
    pub fn client_tls(&self) -> mapsync_fleet::EtcdTls {
        mapsync_fleet::EtcdTls::from_files(
            Some(&self.path("ca.pem")),
            Some((&self.path("client.pem"), &self.path("client-key.pem"))),
        )
        .expect("read the client's PEM files")
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

impl Etcd {
    /// Starts a fresh etcd and waits (up to 30 s) until it answers.
    pub async fn start() -> Etcd {
        Self::start_with(&[]).await
    }

    /// [`Etcd::start`] with extra etcd flags (kept across restarts), e.g.
    /// `--max-txn-ops 20000` for transactions above etcd's default 128 ops.
    pub async fn start_with(extra: &[&str]) -> Etcd {
        let mut etcd = Etcd {
            data: tempfile::tempdir().expect("etcd data dir"),
            client_port: free_port(),
            peer_port: free_port(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            tls: None,
            child: None,
        };
        etcd.resume().await;
        etcd
    }

    /// A fresh etcd serving clients over TLS only, with
    /// `--client-cert-auth` (see [`Etcd::certs`]).
    pub async fn start_tls() -> Etcd {
        let certs = TlsCerts::make();
        let mut etcd = Etcd {
            data: tempfile::tempdir().expect("etcd data dir"),
            client_port: free_port(),
            peer_port: free_port(),
            extra: vec![
                "--cert-file".into(),
                certs.path("server.pem").display().to_string(),
                "--key-file".into(),
                certs.path("server-key.pem").display().to_string(),
                "--trusted-ca-file".into(),
                certs.path("ca.pem").display().to_string(),
                "--client-cert-auth".into(),
            ],
            tls: Some(certs),
            child: None,
        };
        etcd.resume().await;
        etcd
    }

    /// The certificates of a TLS etcd.
    pub fn certs(&self) -> &TlsCerts {
        self.tls.as_ref().expect("a TLS etcd")
    }

    /// `HOST:PORT` of the client endpoint.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// A connected client.
    pub async fn client(&self) -> etcd_client::Client {
        self.connect().await.expect("connect to etcd")
    }

    async fn connect(&self) -> Result<etcd_client::Client, etcd_client::Error> {
        let tls = self.tls.as_ref().map(TlsCerts::client_tls);
        mapsync_fleet::connect(&[self.endpoint()], tls.as_ref()).await
    }

    /// Kills etcd (SIGKILL); its data stays for [`Etcd::resume`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts etcd again on the same ports and data; waits until it answers.
    pub async fn resume(&mut self) {
        assert!(self.child.is_none(), "etcd already running");
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let client = format!("{scheme}://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::File::create(self.data.path().join("etcd.log")).expect("etcd log");
        let child = Command::new("etcd")
            .args(["--name", "test", "--data-dir"])
            .arg(self.data.path().join("data"))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("test={peer}")])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn etcd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = async {
                let mut c = self.connect().await?;
                c.status().await
            };
            match tokio::time::timeout(Duration::from_secs(2), ready).await {
                Ok(Ok(_)) => return,
                _ if Instant::now() > deadline => {
                    let log = std::fs::read_to_string(self.data.path().join("etcd.log"))
                        .unwrap_or_default();
                    panic!("etcd did not become healthy in 30 s; its log:\n{log}");
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}
