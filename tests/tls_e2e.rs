//! `serve` with TLS end to end, over a real pinned map: the CLI reads with
//! `--tls-ca` (here through `$MAPSYNC_TLS_CA`), fails without TLS, and after
//! SIGHUP the server presents the new certificate to new connections.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Server, map_arg, mapsync, pin};
use mapsync_test_support::{self as support, PinDir};
use mapsync_test_tls::TestCa;

/// `mapsync list flows` against `endpoint` trusting `ca` (`None`: no TLS):
/// whether it listed the map.
fn lists(endpoint: &str, ca: Option<&Path>) -> bool {
    let mut command = mapsync();
    command
        .args(["list", "flows", "--endpoint", endpoint, "--timeout", "10"])
        .env_remove("MAPSYNC_TLS_CA");
    if let Some(ca) = ca {
        command.arg("--tls-ca").arg(ca);
    }
    command.output().expect("run list").status.success()
}

#[test]
fn the_cli_reads_over_tls_and_sighup_serves_a_new_certificate() {
    if !support::require_kernel() {
        return;
    }
    let pins = PinDir::new("tls-e2e");
    let hash = pin(&pins, "flows");
    support::create_map(&hash, "hash", 4, 8, 64, "flows");
    support::update(&hash, &[1, 0, 0, 0], &[7; 8]).expect("seed");
    let dir = tempfile::tempdir().expect("temp dir");
    let old_ca = TestCa::new("old-ca");
    let old_ca_file = old_ca.write_into(dir.path(), "old-ca.pem");
    let (cert, key) = (dir.path().join("server.pem"), dir.path().join("server.key"));
    old_ca.issue(&["127.0.0.1"], None).write(&cert, &key);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .expect("addr")
        .port();
    let endpoint = format!("127.0.0.1:{port}");
    // the helper's readiness probe runs the CLI: it finds the CA in the env
    // SAFETY: the only test of this binary; set before any thread reads it
    unsafe { std::env::set_var("MAPSYNC_TLS_CA", &old_ca_file) };
    let (cert_arg, key_arg) = (cert.display().to_string(), key.display().to_string());
    let server = Server::start_on(
        &pins,
        &[map_arg("flows", &hash)],
        Some(&endpoint),
        // TLS without client certificates: nobody authenticated, by choice
        &[
            "--tls-cert",
            &cert_arg,
            "--tls-key",
            &key_arg,
            "--insecure-listen",
        ],
        None,
    );
    assert!(lists(&endpoint, Some(&old_ca_file)), "list over TLS");
    assert!(!lists(&endpoint, None), "a plain client read");

    let new_ca = TestCa::new("new-ca");
    let new_ca_file = new_ca.write_into(dir.path(), "new-ca.pem");
    new_ca.issue(&["127.0.0.1"], None).write(&cert, &key);
    server.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !lists(&endpoint, Some(&new_ca_file)) {
        assert!(
            Instant::now() < deadline,
            "the new certificate is not served 10 s after SIGHUP: {:?}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !lists(&endpoint, Some(&old_ca_file)),
        "the old certificate is still served"
    );
    assert!(
        server
            .log()
            .iter()
            .any(|line| line.contains("reloaded the TLS certificate")),
        "{:?}",
        server.log()
    );
}
