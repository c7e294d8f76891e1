//! `serve --policy` end to end, over real pinned maps and TCP: the CLI sends
//! its token from `$MAPSYNC_TOKEN` (or `--token-file`), reads only what its
//! role allows, and after the policy file is changed and SIGHUP sent, reads
//! more while a `watch` started before goes on.

mod common;

use std::time::{Duration, Instant};

use common::{Server, map_arg, mapsync, pin};
use mapsync_test_support::{self as support, PinDir};

const TOKEN: &str = "e2e-policy-token";

/// The policy: the token's user reads `flows` and, when `more`, `cfg`
/// (`__probe__` too: the test helper's readiness probe asks for it and
/// waits for "unknown map").
fn policy(more: bool) -> String {
    let hash: String = mapsync_grpc::authz::sha256(TOKEN.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let extra = if more { ", \"cfg\"" } else { "" };
    format!(
        "[users.svc]\ntokens_sha256 = [\"{hash}\"]\nroles = [\"reader\"]\n\n\
         [roles.reader]\nread = [\"flows\", \"__probe__\"{extra}]\n"
    )
}

#[test]
fn the_cli_reads_what_the_policy_allows_and_sighup_reloads_it_under_an_open_watch() {
    if !support::require_kernel() {
        return;
    }
    let pins = PinDir::new("policy-e2e");
    let flows = pin(&pins, "flows");
    let cfg = pin(&pins, "cfg");
    support::create_map(&flows, "hash", 4, 8, 64, "flows");
    support::create_map(&cfg, "hash", 4, 8, 64, "cfg");
    support::update(&cfg, &[1, 0, 0, 0], &[1; 8]).expect("seed");
    let dir = tempfile::tempdir().expect("temp dir");
    let policy_file = dir.path().join("policy.toml");
    std::fs::write(&policy_file, policy(false)).expect("write policy");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("write token");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .expect("addr")
        .port();
    let endpoint = format!("127.0.0.1:{port}");
    // the helper's readiness probe and the watch below run the CLI: they
    // find the token in the env
    // SAFETY: the only test of this binary; set before any thread reads it
    unsafe { std::env::set_var("MAPSYNC_TOKEN", TOKEN) };
    let policy_arg = policy_file.display().to_string();
    let server = Server::start_on(
        &pins,
        &[map_arg("flows", &flows), map_arg("cfg", &cfg)],
        Some(&endpoint),
        &["--policy", &policy_arg],
        None,
    );
    let list = |map: &str, token: Option<&str>| {
        let mut command = mapsync();
        command
            .args(["list", map, "--endpoint", &endpoint, "--timeout", "10"])
            .env_remove("MAPSYNC_TOKEN");
        if let Some(token) = token {
            command.env("MAPSYNC_TOKEN", token);
        }
        command.output().expect("run list")
    };
    let stderr =
        |output: &std::process::Output| String::from_utf8_lossy(&output.stderr).into_owned();

    assert!(
        list("flows", Some(TOKEN)).status.success(),
        "flows is readable"
    );
    let denied = list("cfg", Some(TOKEN));
    assert!(!denied.status.success());
    assert!(
        stderr(&denied).contains("svc may not read map `cfg`"),
        "{}",
        stderr(&denied)
    );
    let unknown = list("flows", Some("wrong-token"));
    assert!(
        stderr(&unknown).contains("unknown bearer token"),
        "{}",
        stderr(&unknown)
    );
    let missing = list("flows", None);
    assert!(
        stderr(&missing).contains("no credentials"),
        "{}",
        stderr(&missing)
    );
    let from_file = mapsync()
        .args(["list", "flows", "--endpoint", &endpoint, "--token-file"])
        .arg(&token_file)
        .env_remove("MAPSYNC_TOKEN")
        .output()
        .expect("run list");
    assert!(from_file.status.success(), "{}", stderr(&from_file));

    let (mut watch, lines) = server.spawn_cli(&["watch", "flows", "--json"]);
    std::thread::sleep(Duration::from_millis(500));
    support::update(&flows, &[2, 0, 0, 0], &[2; 8]).expect("put");
    let first = lines.next(Duration::from_secs(10));
    assert!(first.contains("\"02000000\""), "{first}");

    std::fs::write(&policy_file, "[users.svc]\nroles = [\"gone\"]\n").expect("bad policy");
    server.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server
        .log()
        .iter()
        .any(|line| line.contains("kept the current policy"))
    {
        assert!(
            Instant::now() < deadline,
            "no word on the bad policy 10 s after SIGHUP: {:?}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        list("flows", Some(TOKEN)).status.success(),
        "old policy kept"
    );
    std::fs::write(&policy_file, policy(true)).expect("write policy");
    server.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !list("cfg", Some(TOKEN)).status.success() {
        assert!(
            Instant::now() < deadline,
            "cfg is not readable 10 s after SIGHUP: {:?}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    support::update(&flows, &[3, 0, 0, 0], &[3; 8]).expect("put");
    let second = lines.next(Duration::from_secs(10));
    assert!(
        second.contains("\"03000000\""),
        "the open watch goes on: {second}"
    );
    let log = server.log();
    assert!(
        log.iter().any(|line| line.contains("reloaded the policy")),
        "{log:?}"
    );
    let _ = watch.kill();
}
