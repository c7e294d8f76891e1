//! `serve`'s security checks at startup: TCP is refused unless its callers
//! are authenticated (mTLS or a policy), and a TCP address that is not
//! loopback without TLS (each one line naming `--insecure-listen`), before
//! any map is opened; bad `--socket-mode` / `--socket-group` values are
//! explained.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{mapsync, wait_output};

/// Runs `mapsync serve ARGS` (with a map that does not exist: reaching it
/// would be a different error), which must fail; its stderr, one line
/// (clap's usage errors add a `--help` hint: only their first line counts).
fn serve_fails(args: &[&str]) -> String {
    let child = mapsync()
        .arg("serve")
        .args(args)
        .args(["--map", "/nonexistent/mapsync-test-map"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mapsync");
    let output = wait_output(child, Duration::from_secs(20));
    let mut stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "{args:?} succeeded");
    if stderr.contains("For more information, try '--help'") {
        stderr = stderr.lines().next().unwrap_or_default().to_owned();
    }
    assert_eq!(stderr.lines().count(), 1, "{args:?}: one line: {stderr:?}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    stderr
}

#[test]
fn tcp_without_authenticated_callers_is_refused_even_on_loopback() {
    // no --tls-client-ca and no --policy: any local user could read over TCP
    for listen in ["127.0.0.1:0", "[::1]:0", "0.0.0.0:0"] {
        let stderr = serve_fails(&["--listen", listen]);
        assert!(stderr.contains("nobody authenticates"), "{stderr}");
        assert_eq!(stderr.matches("--insecure-listen").count(), 1, "{stderr}");
    }
    // a policy authenticates callers (tokens): loopback is accepted, and the
    // next error is the (missing) policy file's
    let stderr = serve_fails(&[
        "--listen",
        "127.0.0.1:0",
        "--policy",
        "/nonexistent/policy.toml",
    ]);
    assert!(!stderr.contains("nobody authenticates"), "{stderr}");
    assert!(stderr.contains("policy"), "{stderr}");
}

#[test]
fn a_non_loopback_listen_without_tls_is_refused_naming_the_flag() {
    let stderr = serve_fails(&[
        "--listen",
        "0.0.0.0:0",
        "--policy",
        "/nonexistent/policy.toml",
    ]);
    assert!(stderr.contains("without TLS"), "{stderr}");
    assert_eq!(stderr.matches("--insecure-listen").count(), 1, "{stderr}");
    // with the flag the address is accepted: the next error is the map's
    let stderr = serve_fails(&["--listen", "0.0.0.0:0", "--insecure-listen"]);
    assert!(!stderr.contains("TLS"), "{stderr}");
    assert!(stderr.contains("mapsync-test-map"), "{stderr}");
}

#[test]
fn bad_socket_modes_and_groups_are_explained() {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = format!("unix:{}", dir.path().join("m.sock").display());
    let stderr = serve_fails(&["--listen", &socket, "--socket-mode", "0999"]);
    assert!(stderr.contains("octal"), "{stderr}");
    let stderr = serve_fails(&[
        "--listen",
        &socket,
        "--socket-group",
        "no-such-group-mapsync",
    ]);
    assert!(stderr.contains("no such group"), "{stderr}");
}
